#!/usr/bin/env bash
# Re-creates vendor/candle-core from the crates.io release of candle-core plus backprop.patch, or checks
# that the committed folder is exactly that (nothing else was changed by hand).
#
#   scripts/vendor-candle-core.sh --check [CRATE]   # rebuild in a temp folder, diff against vendor/candle-core
#   scripts/vendor-candle-core.sh --write [CRATE]   # replace vendor/candle-core
#
# CRATE is candle-core-0.11.1.crate; without it the script downloads it from static.crates.io. Either
# way its sha256 must be the one below. The vendored folder = the release without its benches,
# examples and tests (and their [[bench]] / [[example]] / [[test]] targets in Cargo.toml), with
# backprop.patch applied to src/backprop.rs, plus PATCHES.md and backprop.patch themselves.
set -euo pipefail

VERSION=0.11.1
SHA256=d11c8be87cfbaef9ebb62fb3f850d1fc8e00cc1d11d393fdbe55a4d5c2cdb325
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENDOR=$ROOT/vendor/candle-core

for tool in curl tar awk patch diff sha256sum; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 3; }
done

mode=${1:-}
crate=${2:-}
case "$mode" in --check | --write) ;; *) echo "usage: $0 --check|--write [candle-core-$VERSION.crate]" >&2; exit 2 ;; esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$crate" ]; then
    crate=$tmp/candle-core-$VERSION.crate
    curl -fsSL --retry 2 -o "$crate" "https://static.crates.io/crates/candle-core/candle-core-$VERSION.crate"
fi
echo "$SHA256  $crate" | sha256sum -c --quiet - || { echo "$crate: sha256 is not candle-core $VERSION's" >&2; exit 1; }

tar xzf "$crate" -C "$tmp"
src=$tmp/candle-core-$VERSION
rm -rf "$src/benches" "$src/examples" "$src/tests" "$src/Cargo.lock" "$src/Cargo.toml.orig" "$src/.cargo_vcs_info.json"
# Drop the targets whose files went: each [[bench]] / [[example]] / [[test]] block and its blank line.
awk '/^\[\[(bench|example|test)\]\]$/ { skip = 1; next } skip && /^$/ { skip = 0; next } !skip' \
    "$src/Cargo.toml" > "$src/Cargo.toml.new"
mv "$src/Cargo.toml.new" "$src/Cargo.toml"
patch --quiet -p1 -d "$src" < "$VENDOR/backprop.patch"
cp "$VENDOR/PATCHES.md" "$VENDOR/backprop.patch" "$src/"

if [ "$mode" = --check ]; then
    if diff -r "$src" "$VENDOR"; then
        echo "vendor/candle-core = candle-core $VERSION + backprop.patch"
    else
        echo "vendor/candle-core differs from candle-core $VERSION + backprop.patch (above)" >&2
        exit 1
    fi
else
    rm -rf "$VENDOR"
    cp -r "$src" "$VENDOR"
    echo "wrote $VENDOR"
fi
