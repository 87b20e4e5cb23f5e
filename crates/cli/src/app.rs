//! main_impl: parse, run a command, map to an exit code. (being written)

use std::ffi::OsString;

pub fn main_impl(args: Vec<OsString>) -> i32 {
    let _ = args;
    0
}
