//! Error enums of the core crate, one per failure area.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TimingError {
    #[error("cannot read timing source {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timing source {path} is not a JUnit XML, a pytest-split .test_durations or a shardex timings file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("timing source {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot write timings file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Error)]
pub enum JunitReadError {
    #[error("invalid JUnit XML at {element}: {reason}")]
    Invalid { element: String, reason: String },
    #[error("the root element is <{root}>, not <testsuites> or <testsuite>")]
    NotJunit { root: String },
}
