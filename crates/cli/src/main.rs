fn main() {
    std::process::exit(shardex_cli::main_impl(std::env::args_os().collect()));
}
