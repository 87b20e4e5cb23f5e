//! Scheduling: timing-weighted plans and the work-stealing queue, as pure state machines.

mod deque;
pub mod plan;
pub mod split;
pub mod steal;
mod units;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod strategies;

pub use split::{split_atoms_for_nodes, split_for_nodes, NodeShare, SplitAtom};
pub use steal::{Dispatch, DistMode, SchedTest, Scheduler};
