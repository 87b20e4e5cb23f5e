//! The agent's own resource use (not its children's): CPU time and peak RSS, for the
//! overhead figures in the benchmark (`SHARDEX_STATS=1`).

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};

#[derive(Clone, Copy, Debug, Default)]
pub struct SelfUsage {
    pub user: Duration,
    pub system: Duration,
    /// Peak resident set size, bytes.
    pub max_rss: u64,
}

pub fn self_usage() -> SelfUsage {
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return SelfUsage::default();
    };
    let to_duration = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec().max(0) as u64)
            + Duration::from_micros(tv.tv_usec().max(0) as u64)
    };
    SelfUsage {
        user: to_duration(usage.user_time()),
        system: to_duration(usage.system_time()),
        // Linux reports kilobytes.
        max_rss: usage.max_rss().max(0) as u64 * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_some_memory() {
        assert!(self_usage().max_rss > 1024 * 1024);
    }
}
