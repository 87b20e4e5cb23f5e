//! `shardex serve`: a per-project daemon that keeps a warm base Python process (the project's
//! imports and Django set up, pytest configured and collected once) and forks each run's
//! zygote from it; `shardex run` finds it through `.shardex/daemon.sock`.

pub mod base;
pub mod client;
pub mod fresh;
pub mod place;
pub mod server;
pub mod wire;
