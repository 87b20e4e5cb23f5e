//! The `shardex` binary under a name cargo gives this crate's tests (CARGO_BIN_EXE_shardex-dup).
fn main() {
    std::process::exit(shardex_cli::main_impl(std::env::args_os().collect()));
}
