#!/usr/bin/env python3
"""PyTorch 2.15 whole-model speed, fp32 and int8 (engines x86 and fbgemm), as JSON records
beside rquant's (compare with tools/bench/compare.py).

Needs torch==2.15.*, torchvision==0.29.* (--no-deps), numpy, safetensors: the venv of
tools/vision/README.md. Models:
  mnist_cnn      the demo's CNN (tools/mnist/torch_reference.py), its pretrained weights
                 (data/mnist/mnist_cnn.safetensors), static int8 exactly as the demo: fused
                 conv+relu / linear+relu, x86 qconfig, calibrated on the 1000 committed training
                 images in batches of 100; timed on the committed test images, batch 1 and 100
  resnet18, mobilenet_v2 (default) or every zoo model (--models all): torchvision's
                 quantizable definitions with the seeded weights of tools/vision/seeded.py,
                 fuse_model, x86 qconfig, calibrated as tools/vision/torch_expected.py does;
                 224x224 (inception_v3 299), batch 1 and 8
fp32 is the plain eval() model (no fusion: what a PyTorch user runs). int8 is converted and
run once under engine "x86" (PyTorch's default, oneDNN convs on a VNNI CPU) and once under
"fbgemm". Each configuration: the three variants (or, per layer, the two engines) are timed
round-robin in --rounds rounds (3 warm-up runs, then --budget/rounds seconds and at least
--min-runs/rounds runs each per round), so a change in the shared machine's load hits all of
them alike; the record is the median over all runs of the wall time of one batch through
model(x) (float in, float out: quantize and dequantize included), under torch.inference_mode().

Records, exactly: {"op": "model", "shape": {"model": NAME, "batch": B}, "variant": "fp32"|"int8",
"engine": "torch-fp32"|"torch-x86"|"torch-fbgemm", "isa": CPU_CAPABILITY, "threads": N,
"median_s": seconds per batch}. --per-layer adds, for ResNet-18 and MobileNetV2 at batch 8,
one record per quantized conv layer timed standalone on its captured input:
{"op": "conv_layer", "shape": {"model", "batch", "layer", "C_in", "C_out", "k", "stride",
"groups", "H", "W"}, "variant": "int8", "engine", "isa", "threads", "median_s", "macs", "gops"}.
The CPU, the load average before and after each thread count and the command go to OUT.meta.json.

    python tools/bench/torch_models.py OUT.json [--threads 1,2] [--models default|all|a,b]
                                                [--batches 1,8] [--budget 2] [--rounds 3] [--per-layer]
                                                [--wait-quiet 0.1]
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "vision"))
sys.path.insert(0, os.path.join(ROOT, "tools", "mnist"))
import seeded  # noqa: E402

torch, torchvision = seeded.check_torch()
from torch.ao import quantization as tq  # noqa: E402

warnings.filterwarnings("ignore")

ENGINES = ("x86", "fbgemm")
DEFAULT_MODELS = ("mnist_cnn", "resnet18", "mobilenet_v2")
PER_LAYER_MODELS = ("resnet18", "mobilenet_v2")


def interleaved_medians(fns, budget, min_runs, rounds):
    """Median time of each fn in `fns` ({name: (setup, fn)}), measured in `rounds` round-robin rounds
    of budget/rounds seconds per fn, so that a change in the machine's load hits every variant alike."""
    samples = {k: [] for k in fns}
    per = max(1, -(-min_runs // rounds))
    with torch.inference_mode():
        for r in range(rounds):
            for k, (setup, fn) in fns.items():
                setup()
                for _ in range(3 if r == 0 else 1):
                    fn()
                ts, end = samples[k], time.perf_counter() + budget / rounds
                n0 = len(ts)
                while time.perf_counter() < end or len(ts) - n0 < per:
                    t = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in samples.items()}


def busy_fraction(seconds=2.0):
    """Fraction of all CPUs' time spent busy over `seconds` (from /proc/stat); this process sleeps
    meanwhile, so it is the load of everything else. None where /proc/stat is missing."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return None
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


class Quiet:
    """Before each configuration, wait until the rest of the machine leaves this run's `threads`
    CPUs free: its busy fraction (over 2 s) below (ncpu - threads) / ncpu + `margin`; at most
    `max_wait` seconds; keeps counts for the meta file."""

    def __init__(self, margin, max_wait, threads):
        ncpu = os.cpu_count() or 1
        self.limit = (max(0, ncpu - threads) / ncpu + margin) if margin else 0.0
        self.max_wait = max_wait
        self.checks = self.waited = self.gave_up = 0
        self.busy = []

    def __call__(self):
        if not self.limit:
            return
        t0 = time.time()
        while True:
            b = busy_fraction()
            if b is None or b < self.limit:
                break
            if time.time() - t0 > self.max_wait:
                self.gave_up += 1
                break
        self.checks += 1
        self.waited += time.time() - t0
        if b is not None:
            self.busy.append(b)

    def summary(self):
        return {"quiet_limit": self.limit, "checks": self.checks, "waited_s": round(self.waited),
                "gave_up": self.gave_up,
                "busy_at_start_median": round(float(np.median(self.busy)), 3) if self.busy else None,
                "busy_at_start_max": round(float(max(self.busy)), 3) if self.busy else None}


def onednn_int8_conv_impl():
    """oneDNN's implementation name for a quantized 3x3 conv under engine x86 (ONEDNN verbose output,
    read back from fd 1), e.g. 'brg_conv_fwd:avx10_1_512_amx': says whether PyTorch's x86 engine uses AMX."""
    import tempfile
    torch.backends.quantized.engine = "x86"
    conv = torch.ao.nn.quantized.Conv2d(64, 64, 3, padding=1)
    w = torch.quantize_per_channel(torch.randn(64, 64, 3, 3) * 0.05, torch.full((64,), 0.01, dtype=torch.double),
                                   torch.zeros(64, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(w, None)
    xq = torch.quantize_per_tensor(torch.rand(1, 64, 14, 14), 1 / 255, 0, torch.quint8)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as f:
        os.dup2(f.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                conv(xq)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        lines = [ln for ln in f.read().splitlines() if ",exec," in ln and "convolution" in ln]
    return lines[-1].split(",")[6] if lines else "not oneDNN"


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return None


# ------------------------------------------------------------------ models
def mnist_models():
    """fp32 model, prepared+calibrated model, and the test images (float, normalised)."""
    import torch_reference as tr
    d = os.path.join(ROOT, "data", "mnist")
    w = os.path.join(d, "mnist_cnn.safetensors")
    calib, _ = tr.load(d, "train")
    test, _ = tr.load(d, "t10k")
    fp32 = tr.fp32_model(w)
    m = tr.fp32_model(w)
    tq.fuse_modules(m, [["conv_layers.0", "conv_layers.1"], ["conv_layers.3", "conv_layers.4"],
                        ["conv_layers.6", "conv_layers.7"], ["fc_layers.0", "fc_layers.1"]], inplace=True)
    m.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        for i in range(0, 1000, 100):
            m(calib[i:i + 100])
    return fp32, m, lambda b: test[:b].contiguous()


def zoo_models(name):
    from torch_expected import calibrated
    size = seeded.MODELS[name][2]
    prepared = calibrated(name, size, None, 0)[0]
    fp32 = seeded.build_fp32(name)
    seeded.load_seeded(fp32, 0, seeded.MODELS[name][3])
    fp32.eval()
    return fp32, prepared, lambda b: torch.from_numpy(seeded.seeded_input(7, b, size))


def convert(prepared, engine):
    import copy
    torch.backends.quantized.engine = engine
    return tq.convert(copy.deepcopy(prepared), inplace=False)


def conv_layers(q, x):
    """(path, module, captured quantized input) of every quantized conv of q, in execution order."""
    got, hs = [], []
    for path, mod in q.named_modules():
        if isinstance(mod, torch.ao.nn.quantized.Conv2d):  # ConvReLU2d is a subclass
            hs.append(mod.register_forward_pre_hook(lambda m, i, path=path: got.append((path, m, i[0]))))
    with torch.inference_mode():
        q(x)
    for h in hs:
        h.remove()
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="default", help="default (mnist_cnn,resnet18,mobilenet_v2), all, or a,b,c")
    ap.add_argument("--batches", default=None, help="override the batch sizes (mnist: 1,100; zoo: 1,8)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per variant and configuration")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the variants of one configuration")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="MARGIN",
                    help="before each configuration (and each layer), wait until the rest of the machine leaves "
                         "the run's N threads' CPUs free: busy fraction (over 2 s) < (ncpu - N)/ncpu + MARGIN")
    ap.add_argument("--max-wait", type=float, default=120.0, help="seconds each --wait-quiet check waits at most "
                    "(then it measures anyway and counts a give-up in the meta file)")
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--per-layer", action="store_true", help="also time each int8 conv of resnet18 and "
                    "mobilenet_v2 standalone at batch 8")
    ap.add_argument("--layer-budget", type=float, default=0.5, help="seconds per engine and conv layer")
    a = ap.parse_args()

    if a.models == "default":
        names = list(DEFAULT_MODELS)
    elif a.models == "all":
        names = ["mnist_cnn"] + list(seeded.MODELS)
    else:
        names = a.models.split(",")
    for n in names:
        if n != "mnist_cnn" and n not in seeded.MODELS:
            sys.exit(f"unknown model {n}")
    threads = [int(t) for t in a.threads.split(",")]
    isa = torch.backends.cpu.get_cpu_capability()
    from torch_expected import cpu_string
    meta = {"cpu": cpu_string(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cpu_capability": isa, "onednn_int8_conv": onednn_int8_conv_impl(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("ONEDNN", "DNNL", "FBGEMM", "ATEN", "OMP",
                                                                          "MKL", "MALLOC"))},
            "command": " ".join(sys.argv), "budget_s": a.budget, "runs": []}
    print(f"oneDNN int8 conv under engine x86: {meta['onednn_int8_conv']}", file=sys.stderr)

    torch.set_num_threads(1)
    built = {}
    for n in names:  # build and calibrate once, at 1 thread (deterministic qparams)
        fp32, prepared, inputs = mnist_models() if n == "mnist_cnn" else zoo_models(n)
        built[n] = (fp32, {e: convert(prepared, e) for e in ENGINES}, inputs)
        print(f"built {n}", file=sys.stderr, flush=True)

    rows = []

    def rec(r):
        rows.append(r)
        s = r["shape"]
        b = s["batch"]
        extra = f" {s['layer']:28s}" if "layer" in s else ""
        print(f'{r["op"]:10s} {s["model"]:20s} b={b:<3d}{extra} {r["engine"]:12s} thr={r["threads"]} '
              f'{r["median_s"] * 1e3:9.3f} ms/batch {r["median_s"] * 1e3 / b:8.3f} ms/img', flush=True)

    for nt in threads:
        quiet = Quiet(a.wait_quiet, a.max_wait, nt)
        torch.set_num_threads(nt)
        run = {"threads": nt, "loadavg_before": loadavg()}
        t0 = time.time()
        for n in names:
            fp32, qs, inputs = built[n]
            batches = [int(b) for b in a.batches.split(",")] if a.batches else ([1, 100] if n == "mnist_cnn" else [1, 8])
            for b in batches:
                x = inputs(b)
                quiet()
                fns = {"torch-fp32": (lambda: None, lambda: fp32(x))}
                for e in ENGINES:
                    fns[f"torch-{e}"] = (lambda e=e: setattr(torch.backends.quantized, "engine", e),
                                         lambda q=qs[e]: q(x))
                med = interleaved_medians(fns, a.budget, a.min_runs, a.rounds)
                for eng, t in med.items():
                    rec({"op": "model", "shape": {"model": n, "batch": b},
                         "variant": "fp32" if eng == "torch-fp32" else "int8", "engine": eng, "isa": isa,
                         "threads": nt, "median_s": t})
        if a.per_layer:
            for n in PER_LAYER_MODELS:
                if n not in built:
                    fp32, prepared, inputs = zoo_models(n)
                    built[n] = (fp32, {e: convert(prepared, e) for e in ENGINES}, inputs)
                _, qs, inputs = built[n]
                b = 8
                x = inputs(b)
                layers = {}
                for e in ENGINES:
                    torch.backends.quantized.engine = e
                    layers[e] = conv_layers(qs[e], x)
                for i, (path, mod0, xq0) in enumerate(layers[ENGINES[0]]):
                    kh, kw = mod0.kernel_size
                    _, cin, h, w = xq0.shape
                    with torch.inference_mode():
                        y = mod0(xq0)
                    macs = b * mod0.out_channels * y.shape[2] * y.shape[3] * (cin // mod0.groups) * kh * kw
                    fns = {}
                    for e in ENGINES:
                        p2, mod, xq = layers[e][i]
                        assert p2 == path and tuple(xq.shape) == tuple(xq0.shape)
                        fns[e] = (lambda e=e: setattr(torch.backends.quantized, "engine", e),
                                  lambda mod=mod, xq=xq: mod(xq))
                    quiet()
                    med = interleaved_medians(fns, a.layer_budget, a.min_runs, a.rounds)
                    for e, t in med.items():
                        rec({"op": "conv_layer",
                             "shape": {"model": n, "batch": b, "layer": path, "C_in": cin, "C_out": mod0.out_channels,
                                       "k": kh, "stride": mod0.stride[0], "groups": mod0.groups, "H": h, "W": w},
                             "variant": "int8", "engine": f"torch-{e}", "isa": isa, "threads": nt,
                             "median_s": t, "macs": macs, "gops": 2.0 * macs / t / 1e9})
        run["loadavg_after"] = loadavg()
        run["quiet"] = quiet.summary()
        run["wall_s"] = round(time.time() - t0, 1)
        meta["runs"].append(run)
        print(f"threads={nt}: loadavg before {run['loadavg_before']} after {run['loadavg_after']}", flush=True)

    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    base, _ = os.path.splitext(a.out)
    with open(base + ".meta.json", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")

    # summary: ms per image
    print(f"\n{meta['cpu']}, torch {torch.__version__}, ISA {isa}")
    print("| model | batch | threads | fp32 | int8 x86 | int8 fbgemm | (ms per image) |")
    print("|---|---|---|---|---|---|---|")
    by = {}
    for r in rows:
        if r["op"] == "model":
            by.setdefault((r["shape"]["model"], r["shape"]["batch"], r["threads"]), {})[r["engine"]] = r["median_s"]
    for (n, b, nt), v in by.items():
        f = lambda e: f"{v[e] * 1e3 / b:.3f}" if e in v else "-"
        print(f"| {n} | {b} | {nt} | {f('torch-fp32')} | {f('torch-x86')} | {f('torch-fbgemm')} | |")


if __name__ == "__main__":
    main()
