//! shardex-cli: argument parsing, settings, terminal output and exit codes.

pub mod app;
pub mod args;
pub mod commands;
pub mod compat;
pub mod daemon_use;
pub mod errors;
pub mod exit_code;
pub mod node_report;
pub mod options;
pub mod reporter;
pub mod settings;
pub mod timeline;

pub use app::main_impl;
