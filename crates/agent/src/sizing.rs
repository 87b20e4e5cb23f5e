//! Default worker count: the CPUs this process may run on (affinity mask) and the cgroup
//! CPU quota (a container's `--cpus`), not just the machine's core count.
//!
//! The file parsing is kept in pure functions; only `auto_workers`/`logical_workers` touch
//! the system.

use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Which cgroup this process is in, per hierarchy.
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";
/// cgroup v1 mount points of the `cpu` controller, in the order tried.
const V1_CPU_MOUNTS: [&str; 2] = ["cpu", "cpu,cpuacct"];

/// Workers for `-n auto`: the CPUs in the affinity mask, capped by the cgroup quota (rounded
/// up: a 1.5-CPU quota gives 2 workers), at least 1.
pub fn auto_workers() -> usize {
    let quota = std::fs::read_to_string(PROC_SELF_CGROUP)
        .ok()
        .and_then(|membership| cgroup_quota(Path::new(CGROUP_ROOT), &membership));
    combine(affinity_cpus(), quota)
}

/// Workers for `-n logical`: the logical CPUs in the affinity mask, at least 1.
pub fn logical_workers() -> usize {
    affinity_cpus().max(1)
}

/// CPUs in this process's affinity mask (`taskset`, `docker --cpuset-cpus`).
fn affinity_cpus() -> usize {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .count()
            .max(1),
        Err(err) => {
            tracing::debug!(%err, "sched_getaffinity failed; using available_parallelism");
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The worker count from the affinity count and an optional quota in CPUs.
pub fn combine(affinity: usize, quota_cpus: Option<f64>) -> usize {
    let affinity = affinity.max(1);
    match quota_cpus {
        Some(quota) => affinity.min(quota_to_workers(quota)),
        None => affinity,
    }
}

/// A quota in CPUs to whole workers: rounded up, at least 1.
pub fn quota_to_workers(quota_cpus: f64) -> usize {
    if !quota_cpus.is_finite() || quota_cpus <= 1.0 {
        return 1;
    }
    // `as` saturates; quotas are small numbers.
    quota_cpus.ceil() as usize
}

/// cgroup v2 `cpu.max`: `"max 100000"` is no limit, `"150000 100000"` is 1.5 CPUs.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: f64 = fields.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" {
        return None;
    }
    ratio(quota.parse().ok()?, period)
}

/// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`: a quota of `-1` is no limit.
pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    ratio(quota, period)
}

fn ratio(quota: f64, period: f64) -> Option<f64> {
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// This process's cgroups, from `/proc/self/cgroup`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMembership {
    /// The unified (v2) hierarchy's path: the `0::/path` line.
    pub v2: Option<String>,
    /// The v1 path of the hierarchy that has the `cpu` controller.
    pub v1_cpu: Option<String>,
}

/// Parses `/proc/self/cgroup` (`hierarchy-id:controllers:path` lines).
pub fn parse_proc_self_cgroup(text: &str) -> CgroupMembership {
    let mut membership = CgroupMembership::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            membership.v2 = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "cpu") {
            membership.v1_cpu = Some(path.to_owned());
        }
    }
    membership
}

/// The tightest CPU quota on this process's cgroup or its ancestors, in CPUs; `root` is
/// where the hierarchies are mounted (`/sys/fs/cgroup`, a temp folder in tests).
pub fn cgroup_quota(root: &Path, proc_self_cgroup: &str) -> Option<f64> {
    let membership = parse_proc_self_cgroup(proc_self_cgroup);
    let mut quotas = Vec::new();
    if let Some(path) = &membership.v2 {
        quotas.extend(
            walk_up(root, path)
                .filter_map(|dir| std::fs::read_to_string(dir.join("cpu.max")).ok())
                .filter_map(|text| parse_cpu_max(&text)),
        );
    }
    if let Some(path) = &membership.v1_cpu {
        let mount = V1_CPU_MOUNTS
            .iter()
            .map(|name| root.join(name))
            .find(|dir| dir.is_dir());
        if let Some(mount) = mount {
            quotas.extend(walk_up(&mount, path).filter_map(|dir| {
                let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
                let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
                parse_cfs(&quota, &period)
            }));
        }
    }
    quotas.into_iter().reduce(f64::min)
}

/// `mount/a/b/c`, `mount/a/b`, `mount/a`, `mount`. Inside a container the path named in
/// `/proc/self/cgroup` is often not visible and the container's own cgroup is the mount's
/// root, which the walk reaches last.
fn walk_up(mount: &Path, cgroup_path: &str) -> impl Iterator<Item = PathBuf> {
    let parts: Vec<&str> = cgroup_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    let dirs: Vec<PathBuf> = (0..=parts.len())
        .rev()
        .map(|n| {
            parts[..n]
                .iter()
                .fold(mount.to_owned(), |dir, p| dir.join(p))
        })
        .collect();
    dirs.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max() {
        let cases = [
            ("max 100000\n", None),
            ("max\n", None),
            ("150000 100000\n", Some(1.5)),
            ("200000 100000", Some(2.0)),
            ("50000 100000", Some(0.5)),
            ("100000", Some(1.0)),
            ("garbage 100000", None),
            ("100000 0", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_cpu_max(text), expected, "{text:?}");
        }
    }

    #[test]
    fn cfs() {
        let cases = [
            ("-1\n", "100000\n", None),
            ("150000\n", "100000\n", Some(1.5)),
            ("400000", "100000", Some(4.0)),
            ("x", "100000", None),
            ("100000", "0", None),
        ];
        for (quota, period, expected) in cases {
            assert_eq!(parse_cfs(quota, period), expected, "{quota:?}/{period:?}");
        }
    }

    #[test]
    fn workers_from_quota_and_affinity() {
        let cases = [
            (8, None, 8),
            (8, Some(1.5), 2),
            (8, Some(0.25), 1),
            (8, Some(2.0), 2),
            (8, Some(2.01), 3),
            (2, Some(16.0), 2),
            (0, None, 1),
            (4, Some(f64::NAN), 1),
        ];
        for (affinity, quota, expected) in cases {
            assert_eq!(combine(affinity, quota), expected, "{affinity} {quota:?}");
        }
    }

    #[test]
    fn proc_self_cgroup() {
        let v2 = parse_proc_self_cgroup("0::/user.slice/session-1.scope\n");
        assert_eq!(v2.v2.as_deref(), Some("/user.slice/session-1.scope"));
        assert_eq!(v2.v1_cpu, None);

        let v1 = parse_proc_self_cgroup(
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
        );
        assert_eq!(v1.v1_cpu.as_deref(), Some("/docker/abc"));
        assert_eq!(v1.v2, None);

        // cpuset is not cpu.
        let cpuset = parse_proc_self_cgroup("3:cpuset:/x\n");
        assert_eq!(cpuset, CgroupMembership::default());
    }

    #[test]
    fn quota_is_the_tightest_along_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        std::fs::write(root.join("cpu.max"), "max 100000\n").expect("write");
        std::fs::write(root.join("a/cpu.max"), "150000 100000\n").expect("write");
        std::fs::write(leaf.join("cpu.max"), "300000 100000\n").expect("write");
        assert_eq!(cgroup_quota(root, "0::/a/b\n"), Some(1.5));
        // Path not visible (container): the mount root counts.
        assert_eq!(cgroup_quota(root, "0::/elsewhere\n"), None);
        std::fs::write(root.join("cpu.max"), "250000 100000\n").expect("write");
        assert_eq!(cgroup_quota(root, "0::/elsewhere\n"), Some(2.5));

        let v1 = root.join("cpu,cpuacct");
        std::fs::create_dir_all(&v1).expect("mkdir");
        std::fs::write(v1.join("cpu.cfs_quota_us"), "50000\n").expect("write");
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000\n").expect("write");
        assert_eq!(cgroup_quota(root, "4:cpu,cpuacct:/docker/abc\n"), Some(0.5));
    }

    #[test]
    fn the_real_system_gives_at_least_one() {
        assert!(auto_workers() >= 1);
        assert!(logical_workers() >= auto_workers());
    }
}
