//! Watch mode's choices (`shardex run --watch`): which tests the next run selects, given the
//! files that changed, what earlier runs collected and which tests failed, and the static
//! import scan that finds the test files a changed module affects.
//!
//! Paths are relative to pytest's rootdir with `/` separators, as in node ids. Reading files
//! is left to the caller (a closure): everything here is pure.
//!
//! The scan is conservative: an import it cannot resolve to a project file is ignored, and a
//! run with nothing selected is the whole selection again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::{RunSummary, TestId};

/// Files whose change can change any test's collection or meaning (pytest's ini files and
/// `.env`): the next run is whole.
pub fn is_config_file(name: &str) -> bool {
    crate::PYTEST_INI_FILES.contains(&name) || name == ".env"
}

/// What the user selected on the command line, relative to the rootdir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeEntry {
    /// A folder or file (`""` is the rootdir itself): everything under it.
    Path(String),
    /// A node id (`tests/a.py::test_x`, `tests/a.py::TestC`): only what it names.
    Node(String),
}

/// What each part of a plan holds, for the line shardex prints before the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanCounts {
    pub changed_files: usize,
    pub failed: usize,
    pub dependent_files: usize,
    /// `--watch-all`: the other tests (node ids) and files given whole.
    pub rest: usize,
}

/// The next run's selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The user's own selection, unchanged.
    Whole,
    /// pytest positional arguments, relative to the rootdir, in the order they should run:
    /// files given whole and node ids of other files (never overlapping: pytest would merge
    /// overlapping arguments into collection order).
    Select {
        args: Vec<String>,
        /// The files selected whole (their collection replaces what was known of them).
        whole_files: Vec<String>,
        counts: PlanCounts,
    },
}

/// What is known between runs: the collection (in collection order), the tests whose last
/// result was a failure, the files whose collection failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    pub known: Vec<TestId>,
    pub failing: BTreeSet<TestId>,
    pub broken_files: BTreeSet<String>,
}

/// The inputs of [`plan`].
pub struct PlanInput<'a> {
    /// Changed files that exist (created or modified).
    pub changed: &'a BTreeSet<String>,
    /// Changed files that are gone.
    pub removed: &'a BTreeSet<String>,
    pub state: &'a WatchState,
    /// Test files that import a changed or removed module (see [`dependent_test_files`]).
    pub dependents: &'a BTreeSet<String>,
    pub scope: &'a [ScopeEntry],
    /// `--watch-all`: the rest of the selection after the affected tests.
    pub all: bool,
}

impl WatchState {
    /// The files of the known tests, in collection order.
    pub fn test_files(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.known
            .iter()
            .map(|id| id.file().to_owned())
            .filter(|f| seen.insert(f.clone()))
            .collect()
    }

    /// Takes in a finished run that ran `plan`.
    pub fn absorb(&mut self, summary: &RunSummary, plan: &Plan) {
        let mut ran: Vec<TestId> = Vec::new();
        let mut seen = HashSet::new();
        for id in summary
            .results
            .iter()
            .map(|r| &r.id)
            .chain(&summary.not_run)
        {
            if seen.insert(id.clone()) {
                ran.push(id.clone());
            }
        }
        let broken: BTreeSet<String> = summary
            .collect_problems
            .iter()
            .filter(|p| p.outcome != "skipped")
            .map(|p| TestId::new(p.nodeid.clone()).file().to_owned())
            .collect();
        match plan {
            Plan::Whole => {
                if summary.interrupted.is_none() {
                    self.known = ran;
                    self.broken_files = broken;
                } else {
                    merge_unknown(&mut self.known, &ran);
                    self.broken_files.extend(broken);
                }
            }
            Plan::Select { whole_files, .. } => {
                for file in whole_files {
                    let fresh: Vec<TestId> =
                        ran.iter().filter(|id| id.file() == file).cloned().collect();
                    replace_file(&mut self.known, file, fresh);
                    if !broken.contains(file) {
                        self.broken_files.remove(file);
                    }
                }
                merge_unknown(&mut self.known, &ran);
                self.broken_files.extend(broken);
            }
        }
        for result in summary.results.iter().filter(|r| r.is_final()) {
            if result.outcome.is_failure() {
                self.failing.insert(result.id.clone());
            } else {
                self.failing.remove(&result.id);
            }
        }
        let known: HashSet<&TestId> = self.known.iter().collect();
        self.failing.retain(|id| known.contains(id));
    }
}

/// Appends the tests of `ran` that `known` does not have yet.
fn merge_unknown(known: &mut Vec<TestId>, ran: &[TestId]) {
    let have: HashSet<TestId> = known.iter().cloned().collect();
    known.extend(ran.iter().filter(|id| !have.contains(*id)).cloned());
}

/// `file`'s tests in `known` become `fresh`, at the place the old ones had (else at the end).
fn replace_file(known: &mut Vec<TestId>, file: &str, fresh: Vec<TestId>) {
    let at = known.iter().position(|id| id.file() == file);
    known.retain(|id| id.file() != file);
    let at = at.map_or(known.len(), |i| i.min(known.len()));
    known.splice(at..at, fresh);
}

/// Whether `file` is selected whole by the user's selection.
fn whole_in_scope(file: &str, scope: &[ScopeEntry]) -> bool {
    scope.iter().any(|entry| match entry {
        ScopeEntry::Path(p) => p.is_empty() || file == p || is_under(file, p),
        ScopeEntry::Node(_) => false,
    })
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// pytest's default `python_files` (`test_*.py`, `*_test.py`): a new file that looks like one.
fn looks_like_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Collects the plan's arguments, never the same file or test twice.
struct Builder<'a> {
    state: &'a WatchState,
    scope: &'a [ScopeEntry],
    args: Vec<String>,
    whole: Vec<String>,
    files_taken: BTreeSet<String>,
    ids_taken: BTreeSet<&'a TestId>,
}

impl<'a> Builder<'a> {
    /// Adds `file`: whole when the user's selection has it whole and none of its tests is
    /// taken yet (pytest would merge the two into collection order), else its known tests.
    /// Returns whether anything was added.
    fn file(&mut self, file: &str) -> bool {
        if self.files_taken.contains(file) {
            return false;
        }
        let partly_taken = self.ids_taken.iter().any(|id| id.file() == file);
        if whole_in_scope(file, self.scope) && !partly_taken {
            self.files_taken.insert(file.to_owned());
            self.whole.push(file.to_owned());
            self.args.push(file.to_owned());
            return true;
        }
        let ids: Vec<&'a TestId> = self
            .state
            .known
            .iter()
            .filter(|id| id.file() == file)
            .collect();
        let mut added = false;
        for id in ids {
            added |= self.test(id);
        }
        added
    }

    fn test(&mut self, id: &'a TestId) -> bool {
        if self.files_taken.contains(id.file()) || !self.ids_taken.insert(id) {
            return false;
        }
        self.args.push(id.as_str().to_owned());
        true
    }
}

/// The next run's selection (see the module docs and `Plan`).
pub fn plan(input: &PlanInput) -> Plan {
    let config_changed = input
        .changed
        .iter()
        .chain(input.removed)
        .any(|p| is_config_file(file_name(p)));
    if config_changed {
        return Plan::Whole;
    }
    let state = input.state;
    let order = state.test_files();
    let known_files: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let is_test_file = |p: &str| {
        known_files.contains(p)
            || state.broken_files.contains(p)
            || (looks_like_test_file(p) && whole_in_scope(p, input.scope))
    };
    // Changed test files in collection order, then new ones by name.
    let mut changed_tests: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|f| input.changed.contains(*f))
        .collect();
    changed_tests.extend(
        input
            .changed
            .iter()
            .map(String::as_str)
            .filter(|p| !known_files.contains(p) && is_test_file(p)),
    );
    let mut b = Builder {
        state,
        scope: input.scope,
        args: Vec::new(),
        whole: Vec::new(),
        files_taken: BTreeSet::new(),
        ids_taken: BTreeSet::new(),
    };
    let mut counts = PlanCounts::default();
    for file in changed_tests {
        counts.changed_files += usize::from(b.file(file));
    }
    for id in state.known.iter().filter(|id| state.failing.contains(*id)) {
        counts.failed += usize::from(b.test(id));
    }
    for file in &state.broken_files {
        if !input.removed.contains(file) {
            counts.failed += usize::from(b.file(file));
        }
    }
    let dependents = order
        .iter()
        .filter(|f| input.dependents.contains(*f) && !input.removed.contains(*f));
    for file in dependents {
        counts.dependent_files += usize::from(b.file(file));
    }
    if b.args.is_empty() {
        return Plan::Whole;
    }
    if input.all {
        for file in &order {
            counts.rest += usize::from(b.file(file));
        }
    }
    Plan::Select {
        args: b.args,
        whole_files: b.whole,
        counts,
    }
}

// ----------------------------------------------------------------------------- import scan

/// One import statement's target, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Import {
    /// `import a.b.c` (one per dotted name of the statement; `as` dropped).
    Module(String),
    /// `from ..a.b import x, y`: `level` leading dots, `module` may be empty.
    From {
        level: usize,
        module: String,
        names: Vec<String>,
    },
}

/// Longest parenthesised `from … import (…)` joined over lines: a stray `(` in a docstring
/// must not swallow the file.
const MAX_JOINED_LINES: usize = 64;

/// The `import` statements of a Python source, found line by line (indented ones too: an
/// import inside a function or `try` is still a dependency). Strings are not tracked: a
/// docstring line that reads like an import adds a dependency, which only runs more tests.
pub fn parse_imports(source: &str) -> Vec<Import> {
    let lines: Vec<&str> = source.lines().collect();
    let mut imports = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut logical = strip_comment(lines[i]).trim().to_owned();
        i += 1;
        let starts = logical.starts_with("import ") || logical.starts_with("from ");
        if !starts {
            continue;
        }
        let mut joined = 0;
        while joined < MAX_JOINED_LINES && i < lines.len() {
            let open = logical.matches('(').count() > logical.matches(')').count();
            let backslash = logical.ends_with('\\');
            if !open && !backslash {
                break;
            }
            logical = logical.trim_end_matches('\\').to_owned();
            logical.push(' ');
            logical.push_str(strip_comment(lines[i]).trim());
            i += 1;
            joined += 1;
        }
        for statement in logical.split(';') {
            imports.extend(parse_statement(statement.trim()));
        }
    }
    imports
}

fn strip_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or(line)
}

fn is_dotted_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// The name before ` as …`.
fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

fn parse_statement(statement: &str) -> Vec<Import> {
    if let Some(rest) = statement.strip_prefix("import ") {
        return rest
            .split(',')
            .map(first_word)
            .filter(|name| is_dotted_name(name))
            .map(|name| Import::Module(name.to_owned()))
            .collect();
    }
    let Some(rest) = statement.strip_prefix("from ") else {
        return Vec::new();
    };
    let Some((module, names)) = rest.split_once(" import ") else {
        return Vec::new();
    };
    let module = module.trim();
    let level = module.chars().take_while(|c| *c == '.').count();
    let module = &module[level..];
    let relative_only = module.is_empty() && level > 0;
    if !relative_only && !is_dotted_name(module) {
        return Vec::new();
    }
    let names = names
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(first_word)
        .filter(|n| is_dotted_name(n) && !n.contains('.'))
        .map(str::to_owned)
        .collect();
    vec![Import::From {
        level,
        module: module.to_owned(),
        names,
    }]
}

fn join(dir: &str, rest: &str) -> String {
    if dir.is_empty() {
        rest.to_owned()
    } else {
        format!("{dir}/{rest}")
    }
}

/// Whether some file lies under folder `dir` (a namespace package when it has no
/// `__init__.py`).
fn has_files_under(files: &BTreeSet<String>, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|f| f.starts_with(&prefix))
}

fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The project files that importing dotted `module` from directory `base` runs: each
/// package's `__init__.py` on the way and the module itself. Empty when the module is not
/// a project file (the standard library, an installed package).
fn module_files(base: &str, module: &str, files: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut dir = base.to_owned();
    let parts: Vec<&str> = module.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let package = join(&dir, part);
        let init = format!("{package}/__init__.py");
        let module_file = format!("{package}.py");
        if files.contains(&init) {
            found.push(init);
        } else if last && files.contains(&module_file) {
            found.push(module_file);
            return found;
        } else if !has_files_under(files, &package) {
            // Neither a package, a module nor a namespace folder here.
            return Vec::new();
        }
        dir = package;
    }
    found
}

/// The project files one import of `importer` runs, looked up in each of `roots` (folders
/// relative to the rootdir, as on `sys.path`) or, for a relative import, next to `importer`.
pub fn resolve_import(
    import: &Import,
    importer: &str,
    roots: &[String],
    files: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    match import {
        Import::Module(module) => {
            for root in roots {
                found.extend(module_files(root, module, files));
            }
        }
        Import::From {
            level,
            module,
            names,
        } => {
            let bases: Vec<String> = if *level == 0 {
                roots.to_vec()
            } else {
                let mut dir = parent_dir(importer);
                for _ in 1..*level {
                    if dir.is_empty() {
                        return found; // beyond the rootdir: not a project file
                    }
                    dir = parent_dir(dir);
                }
                vec![dir.to_owned()]
            };
            for base in bases {
                let (package_files, package_dir) = if module.is_empty() {
                    (Vec::new(), base.clone())
                } else {
                    let files_of = module_files(&base, module, files);
                    if files_of.is_empty() {
                        continue;
                    }
                    (files_of, join(&base, &module.replace('.', "/")))
                };
                found.extend(package_files);
                // `from pkg import sub` may import the submodule `pkg/sub.py`.
                for name in names {
                    found.extend(module_files(&package_dir, name, files));
                }
            }
        }
    }
    found
}

/// pytest's `prepend` import mode puts a test file's first folder upward that is not a
/// package on `sys.path` (its "basedir").
pub fn basedir(test_file: &str, files: &BTreeSet<String>) -> String {
    let mut dir = parent_dir(test_file);
    while !dir.is_empty() && files.contains(&join(dir, "__init__.py")) {
        dir = parent_dir(dir);
    }
    dir.to_owned()
}

/// The `sys.path`-like roots imports are resolved against: the rootdir, `src/` when the
/// project has one, and each test file's basedir.
pub fn import_roots(test_files: &[String], files: &BTreeSet<String>) -> Vec<String> {
    let mut roots = vec![String::new()];
    if has_files_under(files, "src") {
        roots.push("src".to_owned());
    }
    for file in test_files {
        let dir = basedir(file, files);
        if !roots.contains(&dir) {
            roots.push(dir);
        }
    }
    roots
}

/// The project files each scanned file imports directly.
#[derive(Debug, Default)]
pub struct ImportGraph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl ImportGraph {
    /// Scans `starts` and, transitively, every project file they import. `read` gives a
    /// file's source (None: unreadable, scanned as empty).
    pub fn scan(
        starts: impl IntoIterator<Item = String>,
        roots: &[String],
        files: &BTreeSet<String>,
        read: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Self {
        let mut graph = Self::default();
        let mut todo: Vec<String> = starts.into_iter().collect();
        while let Some(file) = todo.pop() {
            if graph.edges.contains_key(&file) {
                continue;
            }
            let source = read(&file).unwrap_or_default();
            let mut deps = BTreeSet::new();
            for import in parse_imports(&source) {
                deps.extend(resolve_import(&import, &file, roots, files));
            }
            deps.remove(&file);
            todo.extend(
                deps.iter()
                    .filter(|d| !graph.edges.contains_key(*d))
                    .cloned(),
            );
            graph.edges.insert(file, deps);
        }
        graph
    }

    /// Every scanned file that imports one of `targets`, directly or not (`targets`
    /// included).
    pub fn importers_of(&self, targets: &BTreeSet<String>) -> BTreeSet<String> {
        let mut reverse: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (file, deps) in &self.edges {
            for dep in deps {
                reverse.entry(dep.as_str()).or_default().push(file.as_str());
            }
        }
        let mut seen = targets.clone();
        let mut todo: Vec<&str> = targets.iter().map(String::as_str).collect();
        while let Some(next) = todo.pop() {
            for importer in reverse.get(next).into_iter().flatten() {
                if seen.insert((*importer).to_owned()) {
                    todo.push(importer);
                }
            }
        }
        seen
    }
}

/// What pytest imports before a test file's own code: the `conftest.py` of each folder from
/// the rootdir down and the `__init__.py` of each package the file is in.
fn implicit_imports(test_file: &str, files: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut dir = parent_dir(test_file);
    loop {
        for name in ["conftest.py", "__init__.py"] {
            let path = join(dir, name);
            if files.contains(&path) {
                found.push(path);
            }
        }
        if dir.is_empty() {
            return found;
        }
        dir = parent_dir(dir);
    }
}

/// The test files whose imports (their own, their conftests' and packages', transitively
/// through project files) reach one of `changed`. `files` are the project's Python files
/// (removed ones included, so that their importers are found).
pub fn dependent_test_files(
    test_files: &[String],
    changed: &BTreeSet<String>,
    files: &BTreeSet<String>,
    read: &mut dyn FnMut(&str) -> Option<String>,
) -> BTreeSet<String> {
    if changed.is_empty() {
        return BTreeSet::new();
    }
    let roots = import_roots(test_files, files);
    let starts = test_files
        .iter()
        .flat_map(|t| std::iter::once(t.clone()).chain(implicit_imports(t, files)));
    let graph = ImportGraph::scan(starts, &roots, files, read);
    let affected = graph.importers_of(changed);
    test_files
        .iter()
        .filter(|t| {
            affected.contains(*t)
                || implicit_imports(t, files)
                    .iter()
                    .any(|f| affected.contains(f))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
