//! `--timeline PATH`: a picture of the run, written when it ends. One lane per worker, a bar
//! per attempt coloured by outcome; retries, crashes, timeouts, the `-x` stop and idle gaps
//! marked; the title carries the wall time, makespan / lower bound and the slowest tests.
//! `.html` (inline data drawn by inline JS: small for large runs) or `.svg` (static).

mod chart;
mod format;
mod html;
mod job;
mod record;
mod svg;

#[cfg(test)]
mod tests;

pub use format::TimelineFormat;
pub use job::{write_job, NodeTimeline};
pub use record::Recorder;
