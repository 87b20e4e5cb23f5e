//! Longest-processing-time-first partition of weighted units into bins.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Assigns each unit (by index) to a bin, longest first onto the least-loaded bin.
/// Ties keep input order (equal weights go by index, equal loads to the lower bin), so every
/// caller given the same input computes the same plan. Each bin lists its units in the
/// order they were assigned: longest first. `O(n log n + n log bins)`.
///
/// Weights that are NaN or negative count as 0.
pub fn lpt_partition(weights: &[f64], bins: usize) -> Vec<Vec<usize>> {
    let bins = bins.max(1);
    let weight = |i: usize| {
        let w = weights[i];
        if w > 0.0 {
            w
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weight(b).total_cmp(&weight(a)).then(a.cmp(&b)));
    let mut heap: BinaryHeap<Reverse<Load>> =
        (0..bins).map(|bin| Reverse(Load(0.0, bin))).collect();
    let mut out = vec![Vec::new(); bins];
    for unit in order {
        let Reverse(Load(load, bin)) = heap.pop().expect("at least one bin");
        out[bin].push(unit);
        heap.push(Reverse(Load(load + weight(unit), bin)));
    }
    out
}

/// A bin's load, ordered by load then bin index.
#[derive(PartialEq)]
struct Load(f64, usize);

impl Eq for Load {}

impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpt_table() {
        type Case = (&'static [f64], usize, Vec<Vec<usize>>);
        let cases: [Case; 8] = [
            (&[], 3, vec![vec![], vec![], vec![]]),
            (&[1.0, 2.0, 3.0], 0, vec![vec![2, 1, 0]]),
            (&[1.0, 2.0, 3.0], 1, vec![vec![2, 1, 0]]),
            // 7|5, then 4 -> 5 (9), 3 -> 7 (10), 2 -> 9 (11).
            (
                &[7.0, 5.0, 4.0, 3.0, 2.0],
                2,
                vec![vec![0, 3], vec![1, 2, 4]],
            ),
            // Equal weights: round robin by index.
            (&[1.0; 5], 2, vec![vec![0, 2, 4], vec![1, 3]]),
            // Ties in weight keep input order; ties in load go to the lower bin.
            (&[2.0, 3.0, 2.0, 3.0], 2, vec![vec![1, 0], vec![3, 2]]),
            // More bins than units: the rest stay empty.
            (&[1.0, 4.0], 3, vec![vec![1], vec![0], vec![]]),
            // NaN and negative weights count as 0 and go last.
            (&[f64::NAN, 1.0, -3.0], 2, vec![vec![1], vec![0, 2]]),
        ];
        for (weights, bins, want) in cases {
            assert_eq!(lpt_partition(weights, bins), want, "{weights:?} on {bins}");
        }
    }

    #[test]
    fn lpt_every_unit_once_and_within_bound() {
        // LPT's guarantee: makespan <= 4/3 OPT, and OPT >= max(sum / bins, max).
        let weights: Vec<f64> = (0..200).map(|i| f64::from((i * 37) % 101) + 0.5).collect();
        for bins in 1..9 {
            let plan = lpt_partition(&weights, bins);
            let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..weights.len()).collect::<Vec<_>>());
            let sum: f64 = weights.iter().sum();
            let longest = weights.iter().copied().fold(0.0, f64::max);
            let lb = (sum / bins as f64).max(longest);
            let makespan = plan
                .iter()
                .map(|bin| bin.iter().map(|&i| weights[i]).sum::<f64>())
                .fold(0.0, f64::max);
            assert!(makespan <= lb * 4.0 / 3.0, "{bins}: {makespan} vs {lb}");
        }
    }
}
