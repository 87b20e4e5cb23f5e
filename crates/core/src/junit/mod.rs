//! JUnit xunit1, as pytest's `-o junit_family=xunit1` writes it.

pub mod flaky;
pub mod read;
pub mod write;

pub use write::{JunitReport, SuiteInfo};

/// pytest's `mangle_test_address`: nodeid -> dotted classname parts + name.
///
/// `sub/test_m.py::TestC::test_x[a::b]` -> `["sub.test_m", "TestC", "test_x[a::b]"]`.
pub fn mangle_test_address(nodeid: &str) -> Vec<String> {
    let (path, params) = match nodeid.find('[') {
        Some(pos) => nodeid.split_at(pos),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    let first = names[0].replace('/', ".");
    names[0] = first
        .strip_suffix(".py")
        .map(str::to_owned)
        .unwrap_or(first);
    if let Some(last) = names.last_mut() {
        last.push_str(params);
    }
    names
}

/// `(classname, name)` for a nodeid, as pytest's junitxml sets them.
pub fn classname_and_name(nodeid: &str, prefix: Option<&str>) -> (String, String) {
    let mut names = mangle_test_address(nodeid);
    let name = names.pop().unwrap_or_default();
    if let Some(prefix) = prefix {
        names.insert(0, prefix.to_owned());
    }
    (names.join("."), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangles_like_pytest() {
        let cases = [
            ("test_mod.py::test_pass", "test_mod", "test_pass"),
            (
                "sub/pkg/test_deep.py::test_deep",
                "sub.pkg.test_deep",
                "test_deep",
            ),
            (
                "test_mod.py::TestCls::test_method",
                "test_mod.TestCls",
                "test_method",
            ),
            (
                "test_mod.py::TestCls::TestNested::test_inner",
                "test_mod.TestCls.TestNested",
                "test_inner",
            ),
            (
                "test_mod.py::test_param[x::y]",
                "test_mod",
                "test_param[x::y]",
            ),
            (
                "test_mod.py::TestCls::test_mp[1]",
                "test_mod.TestCls",
                "test_mp[1]",
            ),
            ("test_mod.py::test_p[a/b.py]", "test_mod", "test_p[a/b.py]"),
        ];
        for (nodeid, classname, name) in cases {
            assert_eq!(
                classname_and_name(nodeid, None),
                (classname.to_owned(), name.to_owned()),
                "{nodeid}"
            );
        }
    }
}
