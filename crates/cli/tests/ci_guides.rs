//! The CI guides in docs/ci/: every `shardex …` command in their code blocks (and in inline
//! code) must parse as the binary parses it on that CI, with the CI's variables set, with and
//! without a shared queue: `shardex run` through `compat::split_args` and `Settings::resolve`
//! (plus a list of the pytest options the guides may pass through, so a misspelt shardex
//! option that would silently go to pytest fails too), `shardex report` through its clap
//! definition and the checks `report::run` makes before connecting, anything else through
//! the clap definition. The report's build id must be the one the runs use, or the summary
//! would wait for a queue nobody fills.

use std::collections::BTreeMap;
use std::path::Path;

use shardex_cli::compat::split_args;
use shardex_cli::settings::{check_queue_url, detect_ci_build, parse_secs, RedisUrl, Settings};

type Env = BTreeMap<String, String>;

/// A guide, the variables its CI sets in a parallel job, and what it must show.
struct Guide {
    file: &'static str,
    ci_env: &'static [(&'static str, &'static str)],
    /// The CI's `${{ … }}` expressions the guide uses (GitHub Actions), with sample values.
    expressions: &'static [(&'static str, &'static str)],
    must_mention: &'static [&'static str],
}

const QUEUE_URL: &str = "rediss://ci-user:secret@redis.example.com:6380";

const GUIDES: [Guide; 3] = [
    Guide {
        file: "circleci.md",
        ci_env: &[
            ("CIRCLECI", "true"),
            ("CIRCLE_NODE_INDEX", "1"),
            ("CIRCLE_NODE_TOTAL", "4"),
            (
                "CIRCLE_WORKFLOW_JOB_ID",
                "5a1c0e7f-2b4d-4c1e-9f3a-0d6b8e2c7a91",
            ),
            ("CIRCLE_PROJECT_USERNAME", "acme"),
            ("CIRCLE_PROJECT_REPONAME", "shop"),
        ],
        expressions: &[],
        must_mention: &[
            "parallelism: 4",
            "store_test_results",
            "restore_cache",
            "save_cache",
            "- .shardex",
            "context: shardex-redis",
            "shardex report",
        ],
    },
    Guide {
        file: "github-actions.md",
        // The workflow's `env:` (SHARDEX_BUILD_ID) with the expressions' sample values.
        ci_env: &[
            ("GITHUB_ACTIONS", "true"),
            ("SHARDEX_BUILD_ID", "9876543-1"),
        ],
        expressions: &[
            ("strategy.job-index", "1"),
            ("strategy.job-total", "4"),
            ("matrix.node", "1"),
            ("github.run_id", "9876543"),
            ("github.run_attempt", "1"),
            ("secrets.SHARDEX_QUEUE", QUEUE_URL),
        ],
        must_mention: &[
            "matrix:",
            "actions/cache/restore",
            "actions/cache/save",
            "path: .shardex",
            "SHARDEX_BUILD_ID: ${{ github.run_id }}-${{ github.run_attempt }}",
            "shardex report",
        ],
    },
    Guide {
        file: "gitlab.md",
        ci_env: &[
            ("GITLAB_CI", "true"),
            ("CI_NODE_INDEX", "2"),
            ("CI_NODE_TOTAL", "4"),
            ("CI_PIPELINE_ID", "4242"),
            ("CI_JOB_NAME", "test 2/4"),
            ("CI_PROJECT_PATH", "acme/shop"),
        ],
        expressions: &[],
        must_mention: &[
            "parallel: 4",
            "junit: test-results/junit.xml",
            "cache:",
            "- .shardex/",
            "shardex report",
        ],
    },
];

/// pytest's own options the guides may pass through `shardex run` (anything else that looks
/// like an option is taken for a typo of one of shardex's).
const PYTEST_OPTIONS: &[&str] = &[
    "-q",
    "-v",
    "-r",
    "-k",
    "-m",
    "-p",
    "-o",
    "--tb",
    "--durations",
    "--strict-markers",
    "--reuse-db",
];

fn docs_dir() -> &'static Path {
    // crates/cli -> the repository root.
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ci"))
}

/// The `shardex …` commands of a markdown text: in fenced code blocks (YAML `run:`,
/// `command:`, list items, `run: >-` folded and `run: |` literal blocks), and inline code
/// spans that start with `shardex `.
fn commands(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_block = false;
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            found.extend(inline_commands(line));
            continue;
        }
        let value = yaml_value(line);
        if value == ">-" || value == ">" || value == "|" {
            // A block scalar: the lines indented deeper than its key.
            let indent = indent_of(line);
            let mut body = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent_of(lines[i]) > indent) {
                body.push(lines[i].trim());
                i += 1;
            }
            if value.starts_with('>') {
                found.extend(shell_commands(&body.join(" ")));
            } else {
                found.extend(body.iter().flat_map(|l| shell_commands(l)));
            }
        } else {
            found.extend(shell_commands(value));
        }
    }
    found
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// A YAML line's value: without its indentation, list dash and `run:`/`command:`/`script:`.
fn yaml_value(line: &str) -> &str {
    let mut value = line.trim();
    loop {
        let before = value;
        for prefix in ["- ", "run:", "command:", "script:"] {
            value = value.strip_prefix(prefix).unwrap_or(value).trim_start();
        }
        if value == before {
            return value;
        }
    }
}

/// `line` when it is a shardex command (the first word is `shardex`).
fn shell_commands(line: &str) -> Option<String> {
    let line = line.trim();
    (line == "shardex" || line.starts_with("shardex ")).then(|| line.to_owned())
}

fn inline_commands(line: &str) -> Vec<String> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(shell_commands)
        .collect()
}

/// Splits a command as a POSIX shell would (quotes, `$VAR`/`${VAR}` from `env`), with the
/// CI's `${{ … }}` expressions replaced first; stops at a pipe, `;`, `&` or a redirection.
fn shell_words(
    command: &str,
    env: &Env,
    expressions: &[(&str, &str)],
) -> Result<Vec<String>, String> {
    let command = expand_expressions(command, expressions)?;
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') | (Some('"'), '"') | (Some('\''), '\'') => {
                quote = if quote.is_some() { None } else { Some(c) };
                word.get_or_insert_with(String::new);
            }
            (None | Some('"'), '$') => {
                let braced = chars.next_if_eq(&'{').is_some();
                let mut name = String::new();
                while let Some(n) = chars.next_if(|n| n.is_ascii_alphanumeric() || *n == '_') {
                    name.push(n);
                }
                if braced && chars.next() != Some('}') {
                    return Err(format!("unclosed ${{ in {command}"));
                }
                let value = env.get(&name).ok_or_else(|| {
                    format!("${name} is not a variable of this CI (in {command})")
                })?;
                word.get_or_insert_with(String::new).push_str(value);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '|' | ';' | '&' | '>' | '<') => break,
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("unclosed quote in {command}"));
    }
    words.extend(word);
    Ok(words)
}

fn expand_expressions(command: &str, expressions: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = command;
    while let Some(start) = rest.find("${{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| format!("unclosed ${{{{ in {command}"))?;
        let name = rest[start + 3..start + end].trim();
        let value = expressions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown expression ${{{{ {name} }}}} in {command}"))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a command told us: the shared queue's build id, when it uses one.
#[derive(Debug, PartialEq)]
enum Checked {
    Run { build: Option<String> },
    Report { build: String },
    Other,
}

/// Parses one command's words (after `shardex`) as the binary would under `env`.
fn check(words: &[String], env: &Env) -> Result<Checked, String> {
    let lookup = |name: &str| env.get(name).cloned();
    match words.first().map(String::as_str) {
        Some("run") => {
            let (flags, pytest_args) = split_args(&words[1..]).map_err(|e| e.to_string())?;
            if flags.help {
                return Err("--help runs nothing".into());
            }
            if let Some(unknown) = pytest_args.iter().find(|a| !known_to_pytest(a)) {
                return Err(format!(
                    "{unknown} is neither shardex's nor a listed pytest option"
                ));
            }
            let settings =
                Settings::resolve(flags, pytest_args, &lookup, None).map_err(|e| e.to_string())?;
            Ok(Checked::Run {
                build: settings.shared_queue.map(|q| q.build),
            })
        }
        Some("report") => check_report(words, &lookup),
        _ => {
            let argv = std::iter::once("shardex").chain(words.iter().map(String::as_str));
            shardex_cli::args::cli()
                .try_get_matches_from(argv)
                .map_err(|e| e.render().to_string())?;
            Ok(Checked::Other)
        }
    }
}

/// A positional argument, or a pytest option of the list (`-ra` is `-r a`, `--tb=short`).
fn known_to_pytest(arg: &str) -> bool {
    if !arg.starts_with('-') || arg == "-" {
        return true;
    }
    let name = arg.split_once('=').map_or(arg, |(name, _)| name);
    let short = if name.starts_with("--") {
        name
    } else {
        &name[..name.len().min(2)]
    };
    PYTEST_OPTIONS.contains(&short)
}

/// `shardex report`: clap's parse (without reading this process's environment), then what
/// `report::run` checks before it connects: the URL, the build id, `--wait`.
fn check_report(words: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Checked, String> {
    let command = shardex_cli::commands::report::command()
        .no_binary_name(true)
        .mut_arg("queue", |a| a.env(None::<&str>).required(false))
        .mut_arg("build-id", |a| a.env(None::<&str>));
    let matches = command
        .try_get_matches_from(&words[1..])
        .map_err(|e| e.render().to_string())?;
    let given = |id: &str| matches.get_one::<String>(id).cloned();
    let raw_url = given("queue")
        .or_else(|| env("SHARDEX_QUEUE"))
        .ok_or("shardex report without --queue or SHARDEX_QUEUE")?;
    let url = RedisUrl::parse(&raw_url)?;
    check_queue_url("--queue", &url).map_err(|e| e.to_string())?;
    let build = given("build-id")
        .or_else(|| env("SHARDEX_BUILD_ID"))
        .or_else(|| detect_ci_build(env).map(|(b, _)| b))
        .ok_or("shardex report without a build id")?;
    if let Some(wait) = given("wait") {
        parse_secs(&wait, 86_400.0).map_err(|e| format!("--wait {wait}: {e}"))?;
    }
    Ok(Checked::Report { build })
}

/// Checks every command of one guide's text; returns how many there were.
fn check_guide(guide: &Guide, text: &str) -> Result<usize, String> {
    let ci_env: Env = guide
        .ci_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut with_queue = ci_env.clone();
    with_queue.insert("SHARDEX_QUEUE".into(), QUEUE_URL.into());
    let found = commands(text);
    let (mut run_builds, mut report_builds) = (Vec::new(), Vec::new());
    for command in &found {
        let fail = |why: String| format!("{}: `{command}`: {why}", guide.file);
        let words = shell_words(command, &with_queue, guide.expressions).map_err(fail)?;
        let words = &words[1..];
        match check(words, &with_queue).map_err(fail)? {
            Checked::Run { build } => {
                run_builds.push(
                    build.ok_or_else(|| fail("no shared queue with SHARDEX_QUEUE set".into()))?,
                );
                // The same line on a job without the queue.
                let words = shell_words(command, &ci_env, guide.expressions).map_err(fail)?;
                check(&words[1..], &ci_env).map_err(fail)?;
            }
            Checked::Report { build } => report_builds.push((command, build)),
            Checked::Other => {}
        }
    }
    for (command, build) in report_builds {
        if let Some(run) = run_builds.iter().find(|b| **b != build) {
            return Err(format!(
                "{}: `{command}` reads build {build}, the runs use {run}",
                guide.file
            ));
        }
    }
    Ok(found.len())
}

#[test]
fn every_guide_command_parses() {
    for guide in &GUIDES {
        let path = docs_dir().join(guide.file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let count = check_guide(guide, &text).unwrap_or_else(|e| panic!("{e}"));
        // Three configs, each with at least one run line, and the report.
        assert!(
            count >= 4,
            "{}: only {count} shardex commands found",
            guide.file
        );
        for needle in guide.must_mention {
            assert!(
                text.contains(needle),
                "{} does not mention {needle}",
                guide.file
            );
        }
    }
}

#[cfg(test)]
mod checker {
    use super::*;

    fn gitlab() -> &'static Guide {
        &GUIDES[2]
    }

    fn doc(body: &str) -> String {
        format!("# t\n\n```yaml\n{body}\n```\n")
    }

    #[test]
    fn finds_commands_in_yaml_shapes() {
        let text = doc(
            "- run: shardex run a\n      - run:\n          command: shardex run b -x\n        run: >-\n          shardex run c\n          --reruns 2\n        next: 1\n    script:\n      - pip install shardex\n      - shardex report --wait 5",
        ) + "Prose with `shardex run d` and `pip install shardex`.\n";
        assert_eq!(
            commands(&text),
            [
                "shardex run a",
                "shardex run b -x",
                "shardex run c --reruns 2",
                "shardex report --wait 5",
                "shardex run d",
            ]
        );
    }

    /// Each of these lines is wrong in a way the binary (or pytest, for a misspelt option
    /// passed on to it) would reject: the check must reject it too.
    #[test]
    fn rejects_what_would_not_parse() {
        for bad in [
            "shardex run tests -n two",
            "shardex run tests --rerun 3",
            "shardex run tests --reruns",
            "shardex run tests --maxfail=-1",
            "shardex run tests --junit-xml",
            "shardex report --wait soon",
            "shardex report --build-id \"$CI_PIPELINE_ID/tests\"",
            "shardex report --queue http://redis:6379",
            "shardex frobnicate",
            "shardex run -k \"unclosed",
            "shardex run --node-index $CI_NODE_NUMBER",
        ] {
            let text = doc(&format!("script:\n  - shardex run tests\n  - {bad}"));
            assert!(check_guide(gitlab(), &text).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn accepts_the_forms_the_guides_use() {
        let text = doc(
            "script:\n  - shardex run tests -n auto -ra --tb=short --junitxml=r/j.xml --reruns 2\n  - shardex report --build-id \"$CI_PIPELINE_ID/test\" --wait 120\n  - shardex completions bash",
        );
        assert_eq!(check_guide(gitlab(), &text), Ok(3));
    }

    #[test]
    fn github_expressions_are_known_or_refused() {
        let env = Env::new();
        let guide = &GUIDES[1];
        let words = shell_words(
            "shardex run --node-index ${{ strategy.job-index }} --node-total ${{ strategy.job-total }}",
            &env,
            guide.expressions,
        );
        assert_eq!(
            words.unwrap(),
            ["shardex", "run", "--node-index", "1", "--node-total", "4"]
        );
        assert!(shell_words(
            "shardex run -n ${{ matrix.workers }}",
            &env,
            guide.expressions
        )
        .is_err());
    }
}
