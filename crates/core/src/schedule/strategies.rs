//! Test strategies shared by the scheduling modules' property tests: suites with files,
//! classes, groups and estimates from zero to long, and every distribution mode.

use proptest::prelude::*;

use super::steal::{DistMode, SchedTest};
use crate::test_id::TestId;

/// Up to 120 tests over 8 files, some in classes, some in `xdist_group`s, with estimates
/// of zero, short, medium and long.
pub(crate) fn any_suite() -> impl Strategy<Value = Vec<SchedTest>> {
    let test = (
        0..8usize,
        prop::option::weighted(0.3, 0..3usize),
        prop_oneof![Just(0.0), 0.0001..0.05f64, 0.05..2.0f64, 2.0..30.0f64],
        prop::option::weighted(0.2, 0..3usize),
    );
    prop::collection::vec(test, 0..120).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (file, class, estimate, group))| SchedTest {
                id: TestId::new(match class {
                    Some(c) => format!("f{file}.py::C{c}::t{i}"),
                    None => format!("f{file}.py::t{i}"),
                }),
                estimate,
                group: group.map(|g| format!("g{g}")),
            })
            .collect()
    })
}

pub(crate) fn any_mode() -> impl Strategy<Value = DistMode> {
    prop_oneof![
        Just(DistMode::Load),
        Just(DistMode::LoadScope),
        Just(DistMode::LoadFile),
        Just(DistMode::LoadGroup)
    ]
}
