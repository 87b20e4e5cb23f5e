//! Longest-processing-time-first partition of weighted units into bins.

/// Assigns each unit (by index) to a bin, longest first onto the least-loaded bin.
/// Ties keep input order, so every caller given the same input computes the same plan.
pub fn lpt_partition(weights: &[f64], bins: usize) -> Vec<Vec<usize>> {
    let bins = bins.max(1);
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut loads = vec![0.0_f64; bins];
    let mut out = vec![Vec::new(); bins];
    for unit in order {
        let (bin, _) = loads
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))
            .expect("at least one bin");
        loads[bin] += weights[unit];
        out[bin].push(unit);
    }
    out
}
