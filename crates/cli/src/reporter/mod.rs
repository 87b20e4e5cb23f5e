//! The terminal reporter: pytest's (and pytest-xdist's) terminal output for a shardex run.

mod closing;
mod options;
mod stats;
mod summary;
mod terminal;
mod text;
mod writer;

#[cfg(test)]
mod tests;

pub use options::ReporterOptions;
pub use terminal::Reporter;
