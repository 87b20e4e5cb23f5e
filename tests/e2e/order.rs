//! Order as pytest's where it costs no balance.
use crate::shardex_bin;
use shardex_e2e::{copy_fixture, pytest_cmd, serial, shardex_cmd};

/// A later file's test mutates module state that earlier files read (a hidden order
/// dependency): each worker runs its tests in collection order and never goes back to a
/// file or behind a test it ran, as under xdist's load, so the suite passes with the timing
/// store cold and warm.
#[test]
fn hidden_order_dependencies_pass_cold_and_warm() {
    let _guard = serial();
    let suite = copy_fixture("order_dependent");
    // pytest-randomly (in the dev requirements) shuffles the collection on purpose, which
    // breaks this suite under plain pytest too: the order under test is pytest's own.
    let args = ["-n", "2", "-p", "no:randomly"];
    let pytest = pytest_cmd(&suite.dir, &args, None).run();
    pytest.assert_code(0);
    for round in ["cold", "warm", "warm again"] {
        let out = shardex_cmd(shardex_bin(), &suite.dir, &args, None).run();
        assert_eq!(out.code(), Some(0), "{round}: {}", out.describe());
        assert_eq!(
            out.summary().get("passed"),
            Some(&46),
            "{round}: {}",
            out.describe()
        );
    }
}
