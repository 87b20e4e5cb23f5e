//! End-to-end tests: the real `shardex` binary (built as `shardex-dup`) on the suites in `fixtures/`,
//! compared with plain pytest. Run them with `scripts/test.sh` (it provides .venv and PostgreSQL).

mod cli;
mod daemon;
mod dbclone;
mod django;
mod faults;
mod hangs;
mod hermetic;
mod history;
mod nodes;
mod options;
mod order;
mod parity;
mod plugins;
mod pytest7;
mod queue;
mod retry;
mod robust;
mod session_once;
mod stop;
mod timeline;
mod watch;

use std::path::Path;

/// The binary under test.
pub fn shardex_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shardex-dup"))
}
