#!/usr/bin/env bash
# CI regression run: the whole pipeline on configs/ci.toml (a few hundred 20 Newsgroups documents,
# MiniLM-L3, 5 clients, 2 + 2 rounds), then its final metrics against the committed baseline
# tests/baselines/ci.json with per-metric tolerances. Exits 1 when a metric drifted, printing the diff.
# Usage: scripts/ci_regression.sh [ARTIFACTS_DIR]   (default artifacts/ci; cached stages are reused)
# To accept an intended change: target/debug/pipeline compare ARTIFACTS_DIR tests/baselines/ci.json --bless
set -euo pipefail
cd "$(dirname "$0")/.."
artifacts=${1:-artifacts/ci}
cargo build --quiet --bin pipeline
start=$(date +%s)
target/debug/pipeline --config configs/ci.toml --artifacts "$artifacts" all
echo "ci pipeline: $(( $(date +%s) - start )) s (budget 300 s)"
target/debug/pipeline compare "$artifacts" tests/baselines/ci.json
