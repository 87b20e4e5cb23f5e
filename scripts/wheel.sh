#!/usr/bin/env bash
# Builds the `shardex` wheel (maturin, pyproject.toml: the binary alone, `bindings = "bin"`)
# into target/wheels/ and prints its path.
#   bash scripts/wheel.sh [MATURIN BUILD ARGS...]           default: --release
#   bash scripts/wheel.sh --smoke [MATURIN BUILD ARGS...]   then install it as a user would and
#       run a fixture suite with it (what scripts/test.sh does): a fresh venv holding only
#       pytest (pinned as in requirements-dev.txt) and the wheel, no Rust toolchain on PATH, no
#       repository path on the command line (the suite and the wheel are copied to a temp
#       folder); its `shardex run -n 2` must report what that venv's plain `pytest` reports.
# SHARDEX_WHEEL=PATH: check that wheel instead of building one (with --smoke).
# maturin comes from .venv (requirements-dev.txt, installed by scripts/setup.sh). The build
# is --locked, and --offline when every crate is already in ~/.cargo: no network needed then.
# maturin runs cargo with the usual profiles, so an earlier `cargo build --release` (or, with
# `--profile dev`, a debug build) is reused and only the binary is relinked.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/target/wheels"
log() { printf 'wheel.sh: %s\n' "$*" >&2; }

smoke=0
if [[ "${1:-}" == --smoke ]]; then smoke=1; shift; fi
(($#)) || set -- --release

build() {
    local maturin="$REPO/.venv/bin/maturin"
    [[ -x "$maturin" ]] || { log "no $maturin: run scripts/setup.sh"; exit 1; }
    local cargo_flags=(--locked)
    if (cd "$REPO" && cargo fetch --locked --offline >/dev/null 2>&1); then
        cargo_flags+=(--offline)
    fi
    rm -f "$OUT"/shardex-*.whl
    (cd "$REPO" && "$maturin" build --quiet --out "$OUT" "${cargo_flags[@]}" "$@") >&2
    local wheels=("$OUT"/shardex-*.whl)
    [[ ${#wheels[@]} -eq 1 && -f "${wheels[0]}" ]] || { log "expected one wheel in $OUT"; exit 1; }
    echo "${wheels[0]}"
}

# pytest and its dependencies, at requirements-dev.txt's pins.
pytest_pins() {
    grep -iE '^(pytest|iniconfig|packaging|pluggy|pygments)==' "$REPO/requirements-dev.txt"
}

# PATH's system part without any folder holding cargo or rustc.
rustless_path() {
    local dir kept=()
    for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
        [[ -d "$dir" && ! -e "$dir/cargo" && ! -e "$dir/rustc" ]] && kept+=("$dir")
    done
    (IFS=:; echo "${kept[*]}")
}

# The user's side, run in the temp folder with a cleared environment: activate the venv,
# check the toolchain is out of reach and `shardex` is the wheel's, run the suite both ways.
USER_SIDE='
set -euo pipefail
source venv/bin/activate
if command -v cargo || command -v rustc; then echo "a Rust toolchain is on PATH" >&2; exit 1; fi
[[ "$(command -v shardex)" == "$PWD/venv/bin/shardex" ]] || { echo "shardex is $(command -v shardex)" >&2; exit 1; }
shardex --version
cd suite
set +e
python -m pytest -p no:cacheprovider --junitxml=../pytest.xml >../pytest.out 2>&1; echo "pytest exit $?"
shardex run -n 2 -p no:cacheprovider --junitxml=../shardex.xml >../shardex.out 2>&1; echo "shardex exit $?"
'

# The counts of pytest's closing line ("= 3 failed, 40 passed in 0.51s =" -> "3 failed, 40 passed"),
# warnings left out: plain pytest counts those raised while collecting, `pytest -n` (whose
# workers collect) does not, and shardex reports as `pytest -n` does.
closing_counts() {
    grep -E '^=+ .* in [0-9.]+s' "$1" | tail -1 \
        | sed -E 's/^=+ //; s/ in [0-9.]+s.*$//; s/, [0-9]+ warnings?//; s/^[0-9]+ warnings?, //'
}

junit_tests() {
    grep -oE '<testsuite [^>]*tests="[0-9]+"' "$1" | grep -oE 'tests="[0-9]+"'
}

smoke_test() {
    local wheel="$1" tmp py
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    cp "$wheel" "$tmp/"
    cp -r "$REPO/fixtures/basic" "$tmp/suite"
    py="$(readlink -f "$REPO/.venv/bin/python")"   # the interpreter itself, not a venv of it
    "$py" -m venv "$tmp/venv"
    # shellcheck disable=SC2046
    (cd "$tmp" && venv/bin/python -m pip install --quiet --disable-pip-version-check \
        $(pytest_pins) "./$(basename "$wheel")")
    local have want
    have="$("$tmp/venv/bin/python" -m pip list --format=freeze --disable-pip-version-check \
        | cut -d= -f1 | tr 'A-Z_' 'a-z-' | grep -vxE 'pip|setuptools' | sort | tr '\n' ' ')"
    want="iniconfig packaging pluggy pygments pytest shardex "
    [[ "$have" == "$want" ]] || { log "the venv holds: $have (expected $want)"; return 1; }
    mkdir "$tmp/home"
    local report
    report="$(cd "$tmp" && env -i HOME="$tmp/home" PATH="$(rustless_path)" LANG=C.UTF-8 \
        bash --noprofile --norc -c "$USER_SIDE")" || { log "user side failed: $report"; return 1; }
    printf '%s\n' "$report" >&2
    local version
    version="$(sed -nE 's/^version = "(.*)"/\1/p' "$REPO/Cargo.toml" | head -1)"
    grep -qx "shardex $version" <<<"$report" || { log "not shardex $version"; return 1; }
    local expected_exit got_exit
    expected_exit="$(sed -n 's/^pytest exit //p' <<<"$report")"
    got_exit="$(sed -n 's/^shardex exit //p' <<<"$report")"
    local expected got
    expected="$(closing_counts "$tmp/pytest.out")"
    got="$(closing_counts "$tmp/shardex.out")"
    if [[ -z "$expected" || "$expected" != "$got" || "$expected_exit" != "$got_exit" \
        || "$(junit_tests "$tmp/pytest.xml")" != "$(junit_tests "$tmp/shardex.xml")" ]]; then
        log "pytest: exit $expected_exit, '$expected', $(junit_tests "$tmp/pytest.xml")"
        log "shardex: exit $got_exit, '$got', $(junit_tests "$tmp/shardex.xml")"
        tail -30 "$tmp/shardex.out" >&2
        return 1
    fi
    log "ok: shardex $version from the wheel ran the suite as pytest did: exit $got_exit, $got"
}

if [[ -n "${SHARDEX_WHEEL:-}" ]]; then
    wheel="$(readlink -f "$SHARDEX_WHEEL")"
else
    wheel="$(build "$@")"
fi
log "$([[ -n "${SHARDEX_WHEEL:-}" ]] && echo checking || echo built) $wheel ($(du -k "$wheel" | cut -f1) KiB)"
if ((smoke)); then
    smoke_test "$wheel"
fi
echo "$wheel"
