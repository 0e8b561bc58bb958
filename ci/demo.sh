#!/usr/bin/env bash
# ci/demo.sh - the README's main command on a fresh clone: `rquant demo` must
# print the table for every engine and write its JSON records; the static and
# QAT int8 models must agree with fp32 on >= 99.5% of the committed subset.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
cargo run --release -q -p rquant-cli -- demo --json "$out/demo.json" | tee "$out/demo.txt"
grep -q "^static_per_channel" "$out/demo.txt"
grep -q "identical outputs" "$out/demo.txt"
python3 - "$out/demo.json" <<'PY'
import json, sys
recs = json.load(open(sys.argv[1]))
variants = {r["variant"] for r in recs}
assert variants == {"fp32", "dynamic", "static_per_tensor", "static_per_channel", "qat"}, variants
for r in recs:
    assert set(r) >= {"variant", "engine", "accuracy", "agreement_with_fp32", "latency_ms", "size_bytes"}, r
    if r["variant"] != "fp32":
        assert r["agreement_with_fp32"] >= 0.995, r
print(f"demo: {len(recs)} records ok")
PY
