#!/usr/bin/env python3
"""How far PyTorch's int8 Linear is off when fbgemm is forced onto its AVX2 or
AVX-512 (no VNNI) kernels, whose `vpmaddubsw` saturates int16 on full-range
activations: the same static Linear (full-range quint8 activations, per-channel
symmetric qint8 weights, fbgemm engine) runs in a child process per ISA and its
int8 outputs are compared with the run on the CPU's own path, which must have
VNNI (`vpdpbusd` accumulates in int32: exact).

Usage: python torch_saturation.py [--weights gaussian|uniform] [--m 64 --k 768 --n 768]"""
import argparse, os, subprocess, sys, tempfile
import numpy as np

ISA_ENV = {
    "avx2": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512", "ATEN_CPU_CAPABILITY": "avx512"},
}

def child(a, out):
    import warnings; warnings.simplefilter("ignore")
    import torch
    torch.backends.quantized.engine = "fbgemm"
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(0, 4, (a.m, a.k)).astype(np.float32))
    xq = torch.quantize_per_tensor(x, 4 / 255, 0, torch.quint8)
    if a.weights == "uniform":
        w = torch.from_numpy(rng.uniform(-1, 1, (a.n, a.k)).astype(np.float32))
        sc = torch.full((a.n,), 1 / 127, dtype=torch.double)
    else:
        w = torch.from_numpy((rng.standard_normal((a.n, a.k)) * 0.05).astype(np.float32))
        sc = (w.abs().amax(1) / 127.5).double()
    wq = torch.quantize_per_channel(w, sc, torch.zeros(a.n, dtype=torch.long), 0, torch.qint8)
    y = torch.ops.quantized.linear(xq, torch.ops.quantized.linear_prepack(wq, None), 0.05, 128)
    np.save(out, y.int_repr().numpy().astype(np.int32))
    print(torch.backends.cpu.get_cpu_capability())

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="gaussian", choices=["gaussian", "uniform"])
    ap.add_argument("--m", type=int, default=64); ap.add_argument("--k", type=int, default=768)
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a, a.child)
    with open("/proc/cpuinfo") as f:
        if "avx512_vnni" not in f.read():
            sys.exit("needs a CPU with AVX-512 VNNI for the exact baseline")
    d = tempfile.mkdtemp()
    base = [sys.executable, __file__, "--weights", a.weights, "--m", str(a.m), "--k", str(a.k), "--n", str(a.n)]
    def run(isa):
        out = os.path.join(d, f"{isa}.npy")
        env = {**os.environ, **ISA_ENV.get(isa, {})}
        cap = subprocess.run(base + ["--child", out], env=env, capture_output=True, text=True, check=True).stdout.strip()
        return np.load(out), cap
    exact, cap = run("native")
    print(f"{a.m}x{a.k}->{a.n}, {a.weights} weights, full-range activations; baseline: ATen {cap} (VNNI)")
    for isa in ISA_ENV:
        y, cap = run(isa)
        diff = np.abs(y - exact)
        print(f"forced {isa} (ATen {cap}): {100 * (diff > 0).mean():.1f}% of outputs off, by up to {diff.max()} steps")

if __name__ == "__main__":
    main()
