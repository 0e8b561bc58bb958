#!/usr/bin/env bash
# ci/miri.sh - Miri (undefined-behaviour checker) on the core and reference
# crates' tests and on the x86 packing and kernels (small cases, every path
# Miri can emulate): `cargo xtask miri`. Installs the nightly toolchain with
# Miri when it is missing. If the toolchain cannot be installed (no network
# to static.rust-lang.org), it says so loudly and skips instead of failing:
# Miri is a check of the code, not of the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'ci/miri.sh: %s\n' "$*"; }
START=$(date +%s)

if ! cargo +nightly miri --version >/dev/null 2>&1; then
  log "installing the nightly toolchain with miri and rust-src"
  if ! timeout 900 rustup toolchain install nightly --profile minimal --component miri,rust-src; then
    log "SKIPPED: cannot install nightly + miri here"
    exit 0
  fi
fi
cargo +nightly miri setup >/dev/null 2>&1 || true
cargo xtask miri
log "done in $(( $(date +%s) - START )) s"
