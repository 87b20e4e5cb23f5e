//! `shardex completions bash|zsh|fish`: the binary prints each shell's script, and bash, given
//! the script, completes `shardex run --rer` to the rerun options.

use std::process::Command;

fn completions(shell: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardex"))
        .args(["completions", shell])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run shardex");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_shell_gets_a_script_with_run_options() {
    // fish names a long option `-l NAME`, the others `--NAME`.
    for (shell, marker, reruns) in [
        ("bash", "complete -F _shardex", "--reruns"),
        ("zsh", "#compdef shardex", "'--reruns=["),
        ("fish", "complete -c shardex", "run\" -l reruns "),
    ] {
        let (code, script, stderr) = completions(shell);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.contains(marker), "{shell} script lacks {marker}");
        assert!(script.contains(reruns), "{shell} script lacks {reruns}");
        assert!(
            script.contains("completions"),
            "{shell} script lacks its subcommands"
        );
    }
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let (code, stdout, stderr) = completions("tcsh");
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("tcsh"), "{stderr}");
}

/// bash itself, given the script: what it offers after `shardex run --rer`.
#[test]
fn bash_completes_run_options() {
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("no bash: skipped");
        return;
    }
    let (_, script, _) = completions("bash");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shardex.bash");
    std::fs::write(&path, script).expect("write");
    let probe = r#"
source "$1"
COMP_WORDS=(shardex run --rer)
COMP_CWORD=2
COMP_LINE="shardex run --rer"
COMP_POINT=${#COMP_LINE}
_shardex shardex --rer run
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", probe, "probe"])
        .arg(&path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run bash");
    let offered = String::from_utf8_lossy(&out.stdout);
    let mut offered: Vec<&str> = offered.lines().collect();
    offered.sort_unstable();
    assert_eq!(
        offered,
        ["--rerun-except", "--reruns", "--reruns-delay"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
