#!/usr/bin/env bash
# Packaging checks, run once by .ci/run (or by hand from anywhere in the
# repository):
#   1. the dependency tree keeps deny.toml's policy (bans, licenses, sources);
#   2. the crate packages and would publish, shipping no file over 1 MiB;
#   3. the public API keeps semver against the last release, the commit in
#      .ci/semver-baseline, for the version now in Cargo.toml.
# cargo-deny and cargo-semver-checks are installed with `cargo install
# --locked` at the pinned versions below when missing (several minutes the
# first time on a fresh machine; the installed binaries are the cache).
# Advisories (`cargo deny check advisories`) need RustSec's database from the
# network: see docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

DENY_VERSION=0.20.2
SEMVER_CHECKS_VERSION=0.51.0
MAX_FILE_BYTES=$((1024 * 1024))

# ensure_tool SUBCOMMAND CRATE VERSION: `cargo SUBCOMMAND` at VERSION, or
# install it.
ensure_tool() {
    local sub=$1 crate=$2 version=$3
    if cargo "$sub" --version 2>/dev/null | grep -qx "$crate $version"; then
        return
    fi
    echo "== cargo install --locked $crate@$version"
    cargo install --locked --quiet "$crate" --version "$version"
}
ensure_tool deny cargo-deny "$DENY_VERSION"
ensure_tool semver-checks cargo-semver-checks "$SEMVER_CHECKS_VERSION"

echo "== cargo deny check bans licenses sources"
cargo deny --locked --workspace check bans licenses sources

echo "== cargo package"
cargo package -p tokenvault --locked --allow-dirty
version=$(cargo pkgid -p tokenvault | sed 's/.*[#@]//')
crate="target/package/tokenvault-$version.crate"
too_big=$(tar -tvzf "$crate" | awk -v max="$MAX_FILE_BYTES" '$3 > max { print $6 " (" $3 " bytes)" }')
if [ -n "$too_big" ]; then
    echo "files over $MAX_FILE_BYTES bytes in $crate:" >&2
    echo "$too_big" >&2
    exit 1
fi
echo "$crate: $(tar -tzf "$crate" | wc -l) files, $(wc -c < "$crate") bytes"

echo "== cargo publish --dry-run"
cargo publish -p tokenvault --locked --allow-dirty --dry-run

baseline=$(tr -d '[:space:]' < .ci/semver-baseline)
echo "== cargo semver-checks: $version against $baseline"
cargo semver-checks -p tokenvault --baseline-rev "$baseline"
