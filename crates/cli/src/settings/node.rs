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
