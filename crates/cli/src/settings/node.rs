//! Which share of a split run this machine takes: the CI's parallelism variables, read as
//! defaults for `--node-index`/`--node-total`.

use crate::errors::UsageError;
use crate::options::MAX_NODES;
use crate::settings::values::parse_count;

/// A CI system's parallel-job variables.
struct CiVars {
    name: &'static str,
    index: &'static str,
    total: &'static str,
    /// The index of the first job (GitLab counts from 1).
    first: u32,
}

/// In the order they are looked at: the first one that sets a variable wins.
const CIS: [CiVars; 4] = [
    CiVars {
        name: "CircleCI",
        index: "CIRCLE_NODE_INDEX",
        total: "CIRCLE_NODE_TOTAL",
        first: 0,
    },
    CiVars {
        name: "GitLab",
        index: "CI_NODE_INDEX",
        total: "CI_NODE_TOTAL",
        first: 1,
    },
    CiVars {
        name: "Buildkite",
        index: "BUILDKITE_PARALLEL_JOB",
        total: "BUILDKITE_PARALLEL_JOB_COUNT",
        first: 0,
    },
    CiVars {
        name: "Bazel",
        index: "TEST_SHARD_INDEX",
        total: "TEST_TOTAL_SHARDS",
        first: 0,
    },
];

/// This machine's share as a CI's variables give it: `(index from 0, total, CI name)`.
/// `None` when no CI's variable is set (an empty variable is unset).
pub fn detect_ci_node(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(u32, u32, &'static str)>, UsageError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    for ci in &CIS {
        let (index, total) = (get(ci.index), get(ci.total));
        if index.is_none() && total.is_none() {
            continue;
        }
        let total = match total {
            Some(raw) => parse_count(raw.trim(), 1, MAX_NODES)
                .map_err(|e| UsageError::invalid_value(ci.total, &raw, &e))?,
            None => 1,
        };
        let last = total - 1 + ci.first;
        let index = match index {
            Some(raw) => {
                parse_count(raw.trim(), ci.first, last).map_err(|_| {
                    UsageError::invalid_value(
                        ci.index,
                        &raw,
                        &format!(
                            "expected a job index from {} to {last} with {} = {total}",
                            ci.first, ci.total
                        ),
                    )
                })? - ci.first
            }
            None => 0,
        };
        return Ok(Some((index, total, ci.name)));
    }
    Ok(None)
}

/// The id a CI gives one job, the same on each of its parallel nodes and new on a rerun,
/// with the CI's name. CircleCI: the job's UUID. GitLab: the pipeline and the job's name
/// without its `N/M` suffix (parallel jobs have one id each). Buildkite: the build and the
/// step, and the retry count when the job was retried (a retried job gets a fresh queue
/// rather than finding every test done).
pub fn detect_ci_build(env: &dyn Fn(&str) -> Option<String>) -> Option<(String, &'static str)> {
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(job) = get("CIRCLE_WORKFLOW_JOB_ID") {
        return Some((job, "CircleCI"));
    }
    if let Some(pipeline) = get("CI_PIPELINE_ID") {
        let name = get("CI_JOB_NAME").unwrap_or_default();
        return Some((
            format!("{pipeline}/{}", without_parallel_suffix(&name)),
            "GitLab",
        ));
    }
    if let Some(build) = get("BUILDKITE_BUILD_ID") {
        let step = get("BUILDKITE_STEP_ID").unwrap_or_default();
        let retry = get("BUILDKITE_RETRY_COUNT").filter(|r| r != "0");
        let id = match retry {
            Some(retry) => format!("{build}/{step}/retry-{retry}"),
            None => format!("{build}/{step}"),
        };
        return Some((id, "Buildkite"));
    }
    None
}

/// The repository's name as the CI gives it, for the timings kept on the shared queue.
pub fn detect_ci_project(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if let Some(repo) = get("CIRCLE_PROJECT_REPONAME") {
        return Some(match get("CIRCLE_PROJECT_USERNAME") {
            Some(user) => format!("{user}/{repo}"),
            None => repo,
        });
    }
    get("CI_PROJECT_PATH").or_else(|| {
        let pipeline = get("BUILDKITE_PIPELINE_SLUG")?;
        Some(match get("BUILDKITE_ORGANIZATION_SLUG") {
            Some(org) => format!("{org}/{pipeline}"),
            None => pipeline,
        })
    })
}

/// GitLab names the parallel jobs of `test` `test 1/4` … `test 4/4`.
fn without_parallel_suffix(name: &str) -> &str {
    match name.rsplit_once(' ') {
        Some((base, last))
            if last
                .split_once('/')
                .is_some_and(|(a, b)| is_number(a) && is_number(b)) =>
        {
            base
        }
        _ => name,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(pairs: &[(&str, &str)]) -> Result<Option<(u32, u32, &'static str)>, String> {
        let env = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        detect_ci_node(&env).map_err(|e| e.to_string())
    }

    #[test]
    fn each_ci() {
        type Share = Option<(u32, u32, &'static str)>;
        let cases: &[(&[(&str, &str)], Share)] = &[
            (&[], None),
            (
                &[("CIRCLE_NODE_INDEX", ""), ("CIRCLE_NODE_TOTAL", " ")],
                None,
            ),
            (
                &[("CIRCLE_NODE_INDEX", "2"), ("CIRCLE_NODE_TOTAL", "3")],
                Some((2, 3, "CircleCI")),
            ),
            // GitLab counts from 1; without `parallel:` only CI_NODE_TOTAL=1 is set.
            (
                &[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "4")],
                Some((0, 4, "GitLab")),
            ),
            (
                &[("CI_NODE_INDEX", "4"), ("CI_NODE_TOTAL", "4")],
                Some((3, 4, "GitLab")),
            ),
            (&[("CI_NODE_TOTAL", "1")], Some((0, 1, "GitLab"))),
            (
                &[
                    ("BUILDKITE_PARALLEL_JOB", "0"),
                    ("BUILDKITE_PARALLEL_JOB_COUNT", "2"),
                ],
                Some((0, 2, "Buildkite")),
            ),
            (
                &[("TEST_SHARD_INDEX", "5"), ("TEST_TOTAL_SHARDS", "8")],
                Some((5, 8, "Bazel")),
            ),
            // CircleCI comes first when two CIs' variables are set.
            (
                &[
                    ("TEST_SHARD_INDEX", "5"),
                    ("TEST_TOTAL_SHARDS", "8"),
                    ("CIRCLE_NODE_INDEX", "1"),
                    ("CIRCLE_NODE_TOTAL", "2"),
                ],
                Some((1, 2, "CircleCI")),
            ),
        ];
        for (env, expected) in cases {
            assert_eq!(detect(env), Ok(*expected), "{env:?}");
        }
    }

    #[test]
    fn build_ids() {
        let build = |pairs: &[(&str, &str)]| {
            let env = |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            detect_ci_build(&env)
        };
        assert_eq!(build(&[]), None);
        assert_eq!(
            build(&[
                ("CIRCLE_WORKFLOW_JOB_ID", "7c2e"),
                ("CIRCLE_NODE_INDEX", "1")
            ]),
            Some(("7c2e".into(), "CircleCI"))
        );
        // Every parallel job of `test` shares one queue; another job gets its own.
        assert_eq!(
            build(&[("CI_PIPELINE_ID", "88"), ("CI_JOB_NAME", "test 3/4")]),
            Some(("88/test".into(), "GitLab"))
        );
        assert_eq!(
            build(&[("CI_PIPELINE_ID", "88"), ("CI_JOB_NAME", "lint 2024/v1x")]),
            Some(("88/lint 2024/v1x".into(), "GitLab"))
        );
        assert_eq!(
            build(&[("BUILDKITE_BUILD_ID", "b1"), ("BUILDKITE_STEP_ID", "s2")]),
            Some(("b1/s2".into(), "Buildkite"))
        );
        assert_eq!(
            build(&[
                ("BUILDKITE_BUILD_ID", "b1"),
                ("BUILDKITE_STEP_ID", "s2"),
                ("BUILDKITE_RETRY_COUNT", "1")
            ]),
            Some(("b1/s2/retry-1".into(), "Buildkite"))
        );
    }

    #[test]
    fn bad_values() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("CIRCLE_NODE_INDEX", "x")],
                "CIRCLE_NODE_INDEX: invalid value 'x' (expected a job index from 0 to 0 with CIRCLE_NODE_TOTAL = 1)",
            ),
            (
                &[("CIRCLE_NODE_INDEX", "3"), ("CIRCLE_NODE_TOTAL", "3")],
                "CIRCLE_NODE_INDEX: invalid value '3' (expected a job index from 0 to 2 with CIRCLE_NODE_TOTAL = 3)",
            ),
            (
                &[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "2")],
                "CI_NODE_INDEX: invalid value '0' (expected a job index from 1 to 2 with CI_NODE_TOTAL = 2)",
            ),
            (
                &[("TEST_TOTAL_SHARDS", "0")],
                "TEST_TOTAL_SHARDS: invalid value '0' (expected a whole number from 1 to 10000)",
            ),
            (
                &[("BUILDKITE_PARALLEL_JOB_COUNT", "-2")],
                "BUILDKITE_PARALLEL_JOB_COUNT: invalid value '-2' (expected a whole number from 1 to 10000)",
            ),
        ];
        for (env, expected) in cases {
            assert_eq!(detect(env).unwrap_err(), *expected, "{env:?}");
        }
    }
}
