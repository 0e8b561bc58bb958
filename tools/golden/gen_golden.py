#!/usr/bin/env python3
"""Generate rquant's golden conformance cases (tests/golden/) from torch 2.15.0.

Usage:  python tools/golden/gen_golden.py [--out tests/golden]

The format is /work/shared/CONFORMANCE.md (one .safetensors file per case).
See tools/golden/README.md. Deterministic: fixed seeds, the output directory is
wiped and rewritten, so regenerating gives byte-identical files.
"""
import os
import sys

# Pin the kernels PyTorch picks to the ones of an AVX2-only CPU (the reference
# machine: x86 engine, fbgemm, AVX2, no AVX-512/VNNI).  Both variables must be
# set before torch is loaded, so re-exec ourselves when they are missing.
_ENV = {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
if any(os.environ.get(k) != v for k, v in _ENV.items()):
    env = dict(os.environ)
    env.update(_ENV)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse
import shutil
import subprocess
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ops_basic  # noqa: E402
import ops_gemm  # noqa: E402
import ops_elementwise  # noqa: E402
import ops_act  # noqa: E402
import ops_shape  # noqa: E402
import ops_norm  # noqa: E402
import ops_conv  # noqa: E402
import ops_extra  # noqa: E402


def check_ops_against_runner(root):
    """Refuse to write cases for ops the conformance runner does not know."""
    cmd = ["cargo", "xtask", "conformance", "--list-ops"]
    try:
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit("gen_golden: cannot run %s in %s: %s" % (" ".join(cmd), root, e))
    errors, missing = common.check_ops(common.parse_list_ops(out))
    if errors:
        sys.exit("gen_golden: " + "; ".join(errors) + " (add it to xtask/src/conformance/ops.rs first)")
    if missing:
        print("note: the runner implements ops this generator writes no case for: " + ", ".join(missing))


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "golden")))
    args = ap.parse_args()
    check_ops_against_runner(os.path.normpath(os.path.join(here, "..", "..")))
    assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
    assert torch.backends.cpu.get_cpu_capability() == "AVX2", torch.backends.cpu.get_cpu_capability()
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    common.TORCH_SRC = ("torch %s engine=x86 (fbgemm, AVX2 kernels: FBGEMM_ENABLE_INSTRUCTIONS=AVX2, "
                        "ATEN_CPU_CAPABILITY=avx2)" % torch.__version__.split("+")[0])
    common.OUT_ROOT = args.out
    os.makedirs(args.out, exist_ok=True)
    for d in sorted(os.listdir(args.out)):
        p = os.path.join(args.out, d)
        if os.path.isdir(p):
            shutil.rmtree(p)
    ops_basic.generate()
    ops_gemm.generate()
    ops_elementwise.generate()
    ops_act.generate()
    ops_shape.generate()
    ops_norm.generate()
    ops_conv.generate()
    ops_extra.generate()
    total = 0
    for op in sorted(common.COUNTS):
        print("%-28s %4d" % (op, common.COUNTS[op]))
        total += common.COUNTS[op]
    print("%-28s %4d" % ("total", total))


if __name__ == "__main__":
    main()
