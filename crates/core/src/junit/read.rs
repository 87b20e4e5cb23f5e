//! Reads JUnit XML for timings: (nodeid, seconds) per testcase.
//! (Filled in by the timings work; see `timing.rs`.)
