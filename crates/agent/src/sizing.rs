//! Default worker count: CPU affinity and the cgroup CPU quota, not just the core count.
//! (PLACEHOLDER: being written.)

/// Workers for `-n auto`.
pub fn auto_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Workers for `-n logical`.
pub fn logical_workers() -> usize {
    auto_workers()
}
