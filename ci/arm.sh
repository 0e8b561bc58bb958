#!/usr/bin/env bash
# ci/arm.sh - test the ARM engine (crates/arm) on an x86_64 Debian machine:
# cross-compile for aarch64-unknown-linux-gnu and run under qemu-user with
#   QEMU_CPU=cortex-a72  (baseline NEON)       -> path "neon"
#   QEMU_CPU=cortex-a76  (NEON + dotprod)      -> path "dotprod"
#   QEMU_CPU=max         (NEON+dotprod+i8mm)   -> path "i8mm"
# Each run sets RQUANT_EXPECT_ISA, so the isa_path test fails unless that path
# was resolved and its microkernel really executed. Then RQUANT_ISA forces each
# lower path under `max`, the conformance runner (xtask) runs tests/golden
# on every ARM path under each CPU model, and a subset of the vision-model
# tests (crates/models/tests/vision.rs, 64² inputs) converts torchvision
# models on every ARM path under `max` (scalar, neon, dotprod, i8mm; and the
# reference engine) and compares their int8 logits and quantized weights
# with PyTorch's committed outputs, bit for bit.
#
# Installs what it needs (idempotent; apt needs root or sudo): gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user, and the rustup target. On an ARM machine
# (aarch64 host) it runs the tests natively instead.
#
# Knobs: ARM_SKIP_CONFORMANCE=1 skips the xtask conformance runs;
#        ARM_SKIP_VISION=1 skips the vision-model tests; ARM_VISION_TESTS
#        overrides their list (test names of crates/models/tests/vision.rs);
#        QEMU_FROM_BACKPORTS=1 installs qemu-user 10 from bookworm-backports (~2x faster);
#        ARM_CPUS="cortex-a72:neon max:i8mm" overrides the CPU:path list.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'ci/arm.sh: %s\n' "$*"; }
die() { printf 'ci/arm.sh: ERROR: %s\n' "$*" >&2; exit 1; }
START=$(date +%s)
export CARGO_TERM_COLOR=never
TARGET=aarch64-unknown-linux-gnu
# The vision subset: k×k and strided convs with fused residual adds
# (ResNet-18), NHWC depthwise + 1×1 convs (MobileNetV2), 1×1 / 3×3 branches,
# pools and cat (GoogLeNet); ~50 s together under qemu 7.2 at QEMU_CPU=max.
VISION_TESTS=${ARM_VISION_TESTS:-"resnet18_64_bit_exact_on_every_path mobilenet_v2_64_bit_exact_on_every_path googlenet_64_bit_exact_on_every_path"}

if [ "$(uname -m)" = "aarch64" ]; then
  log "aarch64 host: native run"
  # (set RQUANT_EXPECT_ISA=neon|dotprod|i8mm to assert the path this machine must take)
  cargo test -p rquant-arm --release
  [ "${ARM_SKIP_CONFORMANCE:-0}" = "1" ] || cargo run -q -p xtask -- conformance --cases tests/golden | tail -n 3
  [ "${ARM_SKIP_VISION:-0}" = "1" ] || cargo test -p rquant-models --release --test vision -- --exact $VISION_TESTS
  exit 0
fi

# ---- 1. install the cross toolchain and qemu (idempotent) ----
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_install() {
  [ "$APT_UPDATED" = 1 ] || { $SUDO apt-get update -q >/dev/null || die "apt-get update failed"; APT_UPDATED=1; }
  $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}
pkg_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

NEED=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do pkg_ok "$p" || NEED+=("$p"); done
if [ "${#NEED[@]}" -gt 0 ]; then log "apt-get install ${NEED[*]}"; apt_install "${NEED[@]}"; fi
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  if [ "${QEMU_FROM_BACKPORTS:-0}" = "1" ]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      [ -n "$URI" ] || die "cannot find the Debian mirror to derive bookworm-backports from"
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$URI" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
      APT_UPDATED=0
    fi
    log "apt-get install -t bookworm-backports qemu-user"
    apt_install -t bookworm-backports qemu-user
  else
    log "apt-get install qemu-user"
    apt_install qemu-user
  fi
fi
command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 missing after install"
command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc missing after install"
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || die "aarch64 glibc loader missing"
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  log "rustup target add $TARGET"
  rustup target add "$TARGET" >/dev/null 2>&1 || die "rustup target add $TARGET failed"
fi
log "toolchain ready: $(qemu-aarch64 --version | head -1)"

# ---- 2. cross-build once, run under each CPU model ----
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

log "native (x86) run: scalar path + every packed layout on its scalar twin"
cargo test -q -p rquant-arm || die "native tests failed"

log "clippy -D warnings for $TARGET"
rustup component add clippy >/dev/null 2>&1 || true
cargo clippy -q -p rquant-arm --all-targets --target "$TARGET" -- -D warnings \
  || die "clippy warnings on $TARGET"

log "cross-building the tests for $TARGET"
cargo test -q -p rquant-arm --target "$TARGET" --no-run >/dev/null 2>&1 \
  || { cargo test -p rquant-arm --target "$TARGET" --no-run; die "cross build failed"; }

CPUS=${ARM_CPUS:-"cortex-a72:neon cortex-a76:dotprod max:i8mm"}
for cp in $CPUS; do
  cpu=${cp%%:*}; isa=${cp##*:}
  log "QEMU_CPU=$cpu: cargo test -p rquant-arm (expect path $isa)"
  QEMU_CPU=$cpu RQUANT_EXPECT_ISA=$isa cargo test -q -p rquant-arm --target "$TARGET" \
    || die "tests failed under QEMU_CPU=$cpu"
done

log "QEMU_CPU=max with RQUANT_ISA forcing each lower path"
for isa in dotprod neon scalar; do
  QEMU_CPU=max RQUANT_ISA=$isa RQUANT_EXPECT_ISA=$isa \
    cargo test -q -p rquant-arm --target "$TARGET" --test isa_path >/dev/null 2>&1 \
    || die "RQUANT_ISA=$isa under QEMU_CPU=max did not resolve/run $isa"
done

# ---- 3. conformance (golden cases) on every ARM path under each CPU model ----
if [ "${ARM_SKIP_CONFORMANCE:-0}" != "1" ] && [ -d tests/golden ]; then
  log "cross-building xtask"
  cargo build -q -p xtask --target "$TARGET" 2>&1 | tail -n 20
  for cp in $CPUS; do
    cpu=${cp%%:*}
    log "QEMU_CPU=$cpu: xtask conformance --cases tests/golden"
    QEMU_CPU=$cpu cargo run -q -p xtask --target "$TARGET" -- conformance --cases tests/golden \
      > "${TMPDIR:-/tmp}/arm-conformance-$cpu.txt" 2>&1 \
      || { tail -n 40 "${TMPDIR:-/tmp}/arm-conformance-$cpu.txt"; die "conformance failed under QEMU_CPU=$cpu"; }
    tail -n 1 "${TMPDIR:-/tmp}/arm-conformance-$cpu.txt"
  done
fi

# ---- 4. vision models (64²) on every ARM path against PyTorch's bits ----
if [ "${ARM_SKIP_VISION:-0}" != "1" ]; then
  log "cross-building the vision tests (rquant-models) for $TARGET"
  cargo test -q -p rquant-models --target "$TARGET" --test vision --no-run >/dev/null 2>&1 \
    || { cargo test -p rquant-models --target "$TARGET" --test vision --no-run; die "vision cross build failed"; }
  want=$(wc -w <<<"$VISION_TESTS")
  log "QEMU_CPU=max: $want vision tests on every ARM path + reference: $VISION_TESTS"
  vlog="${TMPDIR:-/tmp}/arm-vision.txt"
  QEMU_CPU=max cargo test -q -p rquant-models --target "$TARGET" --test vision -- --exact $VISION_TESTS \
    > "$vlog" 2>&1 || { tail -n 40 "$vlog"; die "vision tests failed under QEMU_CPU=max"; }
  # A misspelt name would filter every test out and still pass: count them.
  ran=$({ grep -Eo '^test result: ok\. [0-9]+ passed' "$vlog" || true; } | awk '{s+=$4} END {print s+0}')
  [ "$ran" = "$want" ] || { cat "$vlog"; die "expected $want vision tests to pass, $ran did"; }
  grep -E '^test result' "$vlog"
fi

log "all ARM runs passed in $(( $(date +%s) - START )) s (emulated: qemu-user, no ARM hardware)"
