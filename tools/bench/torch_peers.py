#!/usr/bin/env python3
"""PyTorch 2.15 (x86 engine) and ONNX Runtime on the shapes of `cargo xtask bench`,
as JSON records in the same format: {"op", "shape", "engine", "isa", "threads",
"median_s", "gops"}. Compare with tools/bench/compare.py.

Usage: MALLOC_MMAP_MAX_=0 python torch_peers.py OUT.json [--threads 1,2] [--budget 0.6]
          [--isa avx2|avx512] [--weights gaussian|uniform|minilm:DIR] [--ops linear,conv,quantize]
          [--cpu-time]
(MALLOC_MMAP_MAX_=0 lets torch reuse its freed outputs: without it each 64 MiB
dequantize output is a fresh mmap and the timing measures page faults.)

--isa forces PyTorch onto one instruction set, for a side-by-side run with
`RQUANT_ISA=<isa> cargo xtask bench`: `avx2` sets FBGEMM_ENABLE_INSTRUCTIONS=AVX2
and ATEN_CPU_CAPABILITY=avx2, `avx512` sets AVX512 (AVX-512BW, no VNNI) and
avx512 (the script re-executes itself with them: they are read when torch
loads). Then every int8 op runs under the `fbgemm` engine (under `x86` the
convs run oneDNN's AVX-512 VNNI code whatever the variables say), ORT is
skipped (it cannot be forced), the dynamic Linear keeps the full 8-bit range
(reduce_range=False, as rquant's bench) and the records carry the ISA.

--weights picks the Linear weights as `cargo xtask bench --weights` does:
gaussian (N(0, 0.05²), per-channel symmetric, the default), uniform ([-1, 1)
at scale 1/127, the old worst case) or minilm:DIR (DIR/model.safetensors: the
first Linear matrix of each distinct shape, at 1, 8 and 128 rows).
fbgemm's time does not depend on the weight values; rquant's two-pass AVX2
and AVX-512 kernels do (their remainder).

--cpu-time (with --threads 1) times with the thread's CPU clock, so that
preemption on a loaded machine does not count (torch.set_num_threads(1) runs
the int8 ops on the calling thread)."""
import argparse, json, os, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")

# Forced instruction sets: fbgemm's and ATen's variables, read at load time.
ISA_ENV = {
    "avx2": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512", "ATEN_CPU_CAPABILITY": "avx512"},
}
if "--isa" in sys.argv[:-1]:
    _env = ISA_ENV.get(sys.argv[sys.argv.index("--isa") + 1])
    if _env and any(os.environ.get(k) != v for k, v in _env.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **_env})
import torch
import torch.nn.functional as F

LINEAR = [(1, 768, 768), (8, 768, 768), (128, 768, 768), (128, 768, 3072),
          (128, 3072, 768), (512, 1024, 1024), (1, 4096, 4096)]
CONV = [(64, 64, 56, 3, 1), (128, 128, 28, 3, 1), (256, 256, 14, 3, 1),
        (256, 1024, 14, 1, 1), (144, 144, 56, 3, 144)]
QLEN = 16 << 20

CLOCK = time.perf_counter

def median_time(fn, budget):
    for _ in range(3):
        fn()
    ts, end = [], time.perf_counter() + budget
    while time.perf_counter() < end or len(ts) < 7:
        t = CLOCK(); fn(); ts.append(CLOCK() - t)
    return float(np.median(ts))

def rec(op, shape, engine, threads, t, ops, isa=""):
    return {"op": op, "shape": shape, "engine": engine, "isa": isa, "threads": threads,
            "median_s": t, "gops": ops / t / 1e9}

MINILM_ROWS = (1, 8, 128)

def natural_key(name):
    return [(0, int(p)) if p.isdigit() else (1, p) for p in name.split(".")]

def minilm_matrices(d):
    """The first Linear weight of each distinct shape in DIR/model.safetensors
    (2-D `*.weight` outside the embeddings, in layer order), as rquant's bench."""
    from safetensors.numpy import load_file
    t = load_file(os.path.join(d, "model.safetensors"))
    seen, out = set(), []
    for n in sorted(t, key=natural_key):
        w = t[n]
        if n.endswith(".weight") and "embeddings" not in n and w.ndim == 2 and w.shape not in seen:
            seen.add(w.shape)
            out.append((n[: -len(".weight")], torch.from_numpy(w.astype(np.float32))))
    return out

def linear_jobs(weights, rng):
    """(M, name, float [N, K] weight) per Linear to bench."""
    if weights.startswith("minilm:"):
        return [(M, n, w) for n, w in minilm_matrices(weights[len("minilm:"):]) for M in MINILM_ROWS]
    jobs = []
    for (M, K, N) in LINEAR:
        if weights == "uniform":
            w = torch.from_numpy(rng.uniform(-1, 1, (N, K)).astype(np.float32))
        else:
            w = torch.from_numpy(rng.standard_normal((N, K), dtype=np.float32) * 0.05)
        jobs.append((M, weights, w))
    return jobs

def per_channel(w, weights):
    """qint8 per output channel: symmetric max|w| / 127.5 (PyTorch's per-channel
    observer), or the fixed 1/127 of the uniform weights."""
    O = w.shape[0]
    if weights == "uniform":
        sc = torch.full((O,), 1 / 127, dtype=torch.double)
    else:
        sc = (w.reshape(O, -1).abs().amax(dim=1) / 127.5).double()
    return torch.quantize_per_channel(w, sc, torch.zeros(O, dtype=torch.long), 0, torch.qint8), sc

def ort_linear(M, K, N, wq, wsc, b, xs, xz, x, threads, budget):
    import onnxruntime as ort
    from onnx import helper, TensorProto, numpy_helper
    def session(g):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xu8 = np.clip(np.round(x.numpy() / xs) + xz, 0, 255).astype(np.uint8)
    wt8 = np.ascontiguousarray(wq.int_repr().numpy().T)
    g1 = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B", "az"], ["Y"])], "mmi",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])],
        [numpy_helper.from_array(wt8, "B"), numpy_helper.from_array(np.array(xz, np.uint8), "az")])
    s1 = session(g1)
    st = median_time(lambda: s1.run(None, {"A": xu8}), budget)
    g2 = helper.make_graph([helper.make_node("DynamicQuantizeMatMul", ["A", "B", "bs", "bz", "bias"], ["Y"], domain="com.microsoft")], "dq",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])],
        [numpy_helper.from_array(wt8, "B"), numpy_helper.from_array(wsc.numpy().astype(np.float32), "bs"),
         numpy_helper.from_array(np.zeros(N, np.int8), "bz"), numpy_helper.from_array(b.numpy(), "bias")])
    s2 = session(g2)
    dy = median_time(lambda: s2.run(None, {"A": x.numpy()}), budget)
    return st, dy

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default=None)
    ap.add_argument("--weights", default="gaussian")
    ap.add_argument("--ops", default="linear,conv,quantize")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the thread's CPU clock (1 thread only), as `cargo xtask bench --cpu-time`")
    a = ap.parse_args()
    if a.cpu_time:
        if a.threads != "1":
            ap.error("--cpu-time needs --threads 1")
        global CLOCK
        CLOCK = time.thread_time
    ops_wanted = set(a.ops.split(","))
    isa = a.isa or ""
    if a.isa:
        # fbgemm under both engines for Linear; for conv only `fbgemm` honours the ISA.
        torch.backends.quantized.engine = "fbgemm"
        print(f"forced: {ISA_ENV[a.isa]}, ATen capability {torch.backends.cpu.get_cpu_capability()}, engine fbgemm")
    else:
        torch.backends.quantized.engine = "x86"
    use_ort = not (a.no_ort or a.isa)
    reduce_range = not a.isa  # PyTorch's default for dynamic; full range when forced
    fp32 = a.weights == "gaussian" and not a.isa
    rng = np.random.default_rng(0)
    rows = []
    for nt in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(nt)
        for (M, name, w) in (linear_jobs(a.weights, rng) if "linear" in ops_wanted else []):
            N, K = w.shape
            x = torch.from_numpy(rng.standard_normal((M, K), dtype=np.float32))
            b = torch.from_numpy(rng.standard_normal(N, dtype=np.float32))
            xs = float((x.max() - x.min()) / 255); xz = int(round(-float(x.min()) / xs))
            xq = torch.quantize_per_tensor(x, xs, xz, torch.quint8)
            wq, wsc = per_channel(w, a.weights)
            packed = torch.ops.quantized.linear_prepack(wq, b)
            shape = {"M": M, "K": K, "N": N}; ops = 2.0 * M * K * N
            rows.append(rec("linear_static", shape, "torch", nt,
                            median_time(lambda: torch.ops.quantized.linear(xq, packed, 0.05, 64), a.budget), ops, isa))
            rows.append(rec("linear_dynamic", shape, "torch", nt,
                            median_time(lambda: torch.ops.quantized.linear_dynamic(x, packed, reduce_range),
                                        a.budget), ops, isa))
            if fp32:
                rows.append(rec("fp32_linear", shape, "torch", nt,
                                median_time(lambda: F.linear(x, w, b), a.budget), ops))
            if use_ort:
                st, dy = ort_linear(M, K, N, wq, wsc, b, xs, xz, x, nt, a.budget)
                rows.append(rec("linear_static", shape, "ort", nt, st, ops))
                rows.append(rec("linear_dynamic", shape, "ort", nt, dy, ops))
        for (C, O, HW, k, g) in (CONV if "conv" in ops_wanted else []):
            x = torch.rand(1, C, HW, HW)
            xq = torch.quantize_per_tensor(x, 1 / 255, 0, torch.quint8)
            if a.weights == "uniform":
                w = torch.rand(O, C // g, k, k) * 2 - 1
            else:
                w = torch.randn(O, C // g, k, k) * 0.05
            wq, _ = per_channel(w, "uniform" if a.weights == "uniform" else "gaussian")
            conv = torch.ao.nn.quantized.Conv2d(C, O, k, padding=k // 2, groups=g)
            conv.set_weight_bias(wq, torch.zeros(O))
            conv.scale, conv.zero_point = 0.05, 64
            shape = {"C": C, "O": O, "H": HW, "W": HW, "k": k, "groups": g}
            ops = 2.0 * O * HW * HW * (C // g) * k * k
            rows.append(rec("conv2d", shape, "torch", nt, median_time(lambda: conv(xq), a.budget), ops, isa))
        if "quantize" in ops_wanted:
            x = torch.rand(QLEN) * 2 - 1
            q = torch.quantize_per_tensor(x, 2 / 255, 128, torch.quint8)
            rows.append(rec("quantize", {"len": QLEN}, "torch", nt,
                            median_time(lambda: torch.quantize_per_tensor(x, 2 / 255, 128, torch.quint8), a.budget), QLEN))
            rows.append(rec("dequantize", {"len": QLEN}, "torch", nt,
                            median_time(lambda: q.dequantize(), a.budget), QLEN))
    json.dump(rows, open(a.out, "w"), indent=1)
    for r in rows:
        print(f'{r["op"]:15s} {r["engine"]:6s} {r["threads"]} {json.dumps(r["shape"]):45s} {r["gops"]:8.2f}')

if __name__ == "__main__":
    main()
