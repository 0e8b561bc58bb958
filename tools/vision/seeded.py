#!/usr/bin/env python3
"""Seeded fp32 weights and inputs for torchvision's quantizable models.

The formula (tools/vision/README.md, "The seeded-weights formula", is the spec;
this file is its reference implementation). Every value depends only on the
tensor's state_dict key, its element count, its shape class and the seed, so the
Rust side reproduces the same bytes without torch:

    fnv1a64(b)     = FNV-1a 64 over the UTF-8 bytes of the key
    splitmix64(z)  = the SplitMix64 finaliser (z += golden gamma first)
    h_i   = splitmix64(fnv1a64(name) ^ (seed * 0x9E3779B97F4A7C15 mod 2^64) ^ i)
    u_i   = f32(h_i >> 40) * 2^-24                      (exact, in [0, 1))
    v_i   = f32( f32(w32 * u_i) + lo32 )                (two float32 roundings)
    lo32  = f32(lo), w32 = f32(hi - lo), lo and hi in f64

Usage (needs numpy + safetensors; --model also needs torch 2.15 + torchvision 0.29):
    python tools/vision/seeded.py --model resnet18 --seed 0 --out resnet18.safetensors
    python tools/vision/seeded.py --check FILE [--seed 0] [--model resnet18]
    python tools/vision/seeded.py --selftest
--check needs no torch: it re-derives every tensor from the file's own keys and
shapes and compares bytes; with --model it also checks the key set and shapes
against torchvision's state_dict.
"""
import argparse
import ctypes
import math
import sys

import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1

# Model name -> (torchvision.models.quantization builder, extra kwargs, default input size, conv gain).
# The conv gain g widens every conv weight's range to +-sqrt(3 g / fan_in). g = 1 is the plain
# formula; the non-residual models need more or the input's signal dies out through their depth
# (README, "Why the conv gain").
MODELS = {
    "resnet18": ("resnet18", {}, 224, 1.0),
    "resnet50": ("resnet50", {}, 224, 1.0),
    "resnext101_32x8d": ("resnext101_32x8d", {}, 224, 1.0),
    "resnext101_64x4d": ("resnext101_64x4d", {}, 224, 1.0),
    "mobilenet_v2": ("mobilenet_v2", {}, 224, 1.5),
    "mobilenet_v3_large": ("mobilenet_v3_large", {}, 224, 1.75),
    "shufflenet_v2_x0_5": ("shufflenet_v2_x0_5", {}, 224, 1.5),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", {}, 224, 1.5),
    "shufflenet_v2_x1_5": ("shufflenet_v2_x1_5", {}, 224, 1.5),
    "shufflenet_v2_x2_0": ("shufflenet_v2_x2_0", {}, 224, 1.5),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": False}, 224, 2.0),
    "inception_v3": ("inception_v3", {"aux_logits": False, "init_weights": False}, 299, 2.0),
}

INPUT_NAME = "input"
INPUT_RANGE = (-2.0, 2.0)


def fnv1a64(data) -> int:
    """FNV-1a 64 of a bytes-like object. Large buffers go through a 6-line C loop
    compiled once with the system C compiler (ctypes); without one, pure Python (~5 MB/s)."""
    data = memoryview(data).cast("B")
    if len(data) > 4096:
        fast = _fnv_c()
        if fast is not None:
            arr = ctypes.c_ubyte * len(data)
            buf = arr.from_buffer_copy(data) if data.readonly else arr.from_buffer(data)
            return fast(buf, len(data))
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


_FNV_C_SRC = r"""
#include <stdint.h>
#include <stddef.h>
uint64_t fnv1a64(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}
"""
_fnv_c_fn = []


def _fnv_c():
    if _fnv_c_fn:
        return _fnv_c_fn[0]
    fn = None
    try:
        import hashlib, os, subprocess, tempfile
        tag = hashlib.sha256(_FNV_C_SRC.encode()).hexdigest()[:16]
        lib = os.path.join(tempfile.gettempdir(), f"rquant_fnv1a64_{tag}_{os.getuid()}.so")
        if not os.path.exists(lib):
            with tempfile.TemporaryDirectory() as d:
                src = os.path.join(d, "fnv.c")
                open(src, "w").write(_FNV_C_SRC)
                subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", lib + ".tmp", src], check=True,
                               capture_output=True)
                os.replace(lib + ".tmp", lib)
        f = ctypes.CDLL(lib).fnv1a64
        f.restype, f.argtypes = ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_size_t]
        probe = bytes(range(256)) * 20
        h = FNV_OFFSET
        for b in probe:
            h = ((h ^ b) * FNV_PRIME) & MASK
        if f((ctypes.c_ubyte * len(probe)).from_buffer_copy(probe), len(probe)) == h:
            fn = f
    except (OSError, subprocess.CalledProcessError, FileNotFoundError):
        fn = None
    _fnv_c_fn.append(fn)
    return fn


def splitmix64_scalar(z: int) -> int:
    z = (z + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser over uint64 (numpy arrays wrap mod 2^64)."""
    z = z.astype(np.uint64, copy=True)
    z += np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(name: str, n: int, seed: int, lo: float, hi: float) -> np.ndarray:
    """n float32 values of tensor `name` (row-major flat index i = 0..n-1)."""
    key = fnv1a64(name.encode("utf-8")) ^ ((seed * GOLDEN) & MASK)
    with np.errstate(over="ignore"):
        h = splitmix64(np.arange(n, dtype=np.uint64) ^ np.uint64(key))
    u = (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)  # both steps exact
    lo32 = np.float32(lo)                 # f64 -> f32, round to nearest even
    w32 = np.float32(hi - lo)             # f64 subtraction, then one rounding to f32
    return (w32 * u + lo32).astype(np.float32)  # float32 multiply, then float32 add: two roundings


def param_range(key, shapes, conv_gain=1.0):
    """(lo, hi) in f64 for state_dict entry `key`, from its suffix and shapes only.

    Returns None for num_batches_tracked (int64 zero). Raises on anything else."""
    prefix, _, suffix = key.rpartition(".")
    shape = shapes[key]
    if suffix == "weight" and len(shape) == 4:
        fan_in = math.prod(shape[1:])     # conv: in_channels/groups * kh * kw
        a = math.sqrt((3.0 * conv_gain) / fan_in)
        return -a, a
    if suffix == "weight" and len(shape) == 2:
        a = math.sqrt(3.0 / shape[1])     # linear: in_features
        return -a, a
    if suffix == "weight" and len(shape) == 1:
        return 0.5, 1.5                   # BatchNorm gamma
    if suffix == "bias" and len(shape) == 1:
        w = shapes.get(prefix + ".weight")
        if w is not None and len(w) in (2, 4):
            b = 1.0 / math.sqrt(math.prod(w[1:]))
            return -b, b
        if w is not None and len(w) == 1:
            return -0.2, 0.2              # BatchNorm beta
    if suffix == "running_mean":
        return -0.1, 0.1
    if suffix == "running_var":
        return 0.5, 2.0
    if suffix == "num_batches_tracked" and len(shape) == 0:
        return None
    raise ValueError(f"{key}: shape {list(shape)} has no seeded-weights rule")


def seeded_tensors(shapes, seed, conv_gain=1.0):
    """{key: np.ndarray} for an ordered {key: shape} mapping."""
    out = {}
    for key, shape in shapes.items():
        r = param_range(key, shapes, conv_gain)
        if r is None:
            out[key] = np.zeros(shape, dtype=np.int64)
        else:
            out[key] = uniform(key, math.prod(shape), seed, *r).reshape(shape)
    return out


def state_dict_digest(arrays):
    """Order-independent digest of a state dict: the sum mod 2^64, over its tensors, of
    fnv1a64(UTF-8 key, one 0x00 byte, the tensor's little-endian bytes in row-major order)."""
    total = 0
    for k, v in arrays.items():
        total = (total + fnv1a64(k.encode("utf-8") + b"\0" + np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<"))
                                 .tobytes())) & MASK
    return f"{total:#018x}"


def seeded_input(seed, batch, size, channels=3):
    """The seeded input batch: name "input", shape [B,3,H,W], range [-2, 2)."""
    h, w = (size, size) if isinstance(size, int) else size
    n = batch * channels * h * w
    return uniform(INPUT_NAME, n, seed, *INPUT_RANGE).reshape(batch, channels, h, w)


# ---------------------------------------------------------------- torch side
def check_torch():
    import torch
    import torchvision
    if not torch.__version__.startswith("2.15"):
        sys.exit(f"needs torch 2.15.x, found {torch.__version__}")
    if not torchvision.__version__.startswith("0.29"):
        sys.exit(f"needs torchvision 0.29.x, found {torchvision.__version__}")
    return torch, torchvision


def build_fp32(model):
    """torchvision.models.quantization.<builder>(weights=None, quantize=False) in eval mode."""
    torch, _ = check_torch()
    import torchvision.models.quantization as tvq
    if model not in MODELS:
        sys.exit(f"unknown model {model}; one of {', '.join(MODELS)}")
    builder, kw, _, _ = MODELS[model]
    torch.manual_seed(0)  # the builders' own random init is overwritten, but keep it fixed
    m = getattr(tvq, builder)(weights=None, quantize=False, **kw)
    return m.eval()


def model_shapes(m):
    """Ordered {key: shape} of a model's state_dict, checking the rule's classes against module types."""
    import torch
    import torch.nn as nn
    sd = m.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    mods = dict(m.named_modules())
    for k in sd:
        prefix, _, suffix = k.rpartition(".")
        mod = mods[prefix]
        ok = {
            nn.Conv2d: ("weight", "bias"), nn.Linear: ("weight", "bias"),
            nn.BatchNorm2d: ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
        }
        if type(mod) not in ok or suffix not in ok[type(mod)]:
            raise ValueError(f"{k}: {type(mod).__name__}.{suffix} has no rule")
        if type(mod) is nn.Conv2d and suffix == "weight":
            assert math.prod(shapes[k][1:]) == mod.in_channels // mod.groups * math.prod(mod.kernel_size)
        if suffix == "num_batches_tracked":
            assert sd[k].dtype == torch.int64
        elif sd[k].dtype != torch.float32:
            raise ValueError(f"{k}: dtype {sd[k].dtype}")
    return shapes


def load_seeded(m, seed, conv_gain):
    """Load the seeded weights into model m (strict), return the numpy state dict."""
    import torch
    arrays = seeded_tensors(model_shapes(m), seed, conv_gain)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, strict=True)
    return arrays


def write_safetensors(arrays, path, metadata=None):
    from safetensors.numpy import save_file
    save_file({k: np.array(v, order="C", copy=True) for k, v in arrays.items()}, path, metadata=metadata)


def check_file(path, seed, model=None, conv_gain=None):
    """Compare a safetensors file bit for bit with the formula. Returns the number of mismatching tensors."""
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        keys = list(f.keys())
        arrays = {k: f.get_tensor(k) for k in keys}
    shapes = {k: tuple(a.shape) for k, a in arrays.items()}
    bad = 0
    if conv_gain is None:
        conv_gain = MODELS[model][3] if model else 1.0
    if model is not None:
        want = model_shapes(build_fp32(model))
        missing, extra = set(want) - set(shapes), set(shapes) - set(want)
        for k in sorted(missing):
            print(f"missing: {k}"); bad += 1
        for k in sorted(extra):
            print(f"unexpected: {k}"); bad += 1
        for k in sorted(set(want) & set(shapes)):
            if want[k] != shapes[k]:
                print(f"{k}: shape {list(shapes[k])}, torchvision has {list(want[k])}"); bad += 1
    try:
        ref = seeded_tensors(shapes, seed, conv_gain)
    except ValueError as e:
        print(e)
        return bad + 1
    for k in keys:
        a, r = arrays[k], ref[k]
        if a.dtype != r.dtype:
            print(f"{k}: dtype {a.dtype}, formula gives {r.dtype}"); bad += 1
            continue
        if a.tobytes() != r.tobytes():
            diff = np.flatnonzero(a.reshape(-1).view(np.uint8 if a.dtype.itemsize == 1 else f"u{a.dtype.itemsize}")
                                  != r.reshape(-1).view(f"u{r.dtype.itemsize}"))
            i = int(diff[0])
            print(f"{k}: {diff.size} of {a.size} elements differ; first at {i}: "
                  f"file {a.reshape(-1)[i]!r} formula {r.reshape(-1)[i]!r}")
            bad += 1
    print(f"{path}: state_dict_digest {state_dict_digest(arrays)}")
    print(f"{path}: {len(keys)} tensors, seed {seed}, conv gain {conv_gain}: {'OK, bit-identical' if bad == 0 else f'{bad} problems'}")
    return bad


def selftest():
    """Scalar re-implementation (Python ints and struct-rounded floats) against the vector path."""
    import random
    import struct

    def f32(x):
        return struct.unpack("<f", struct.pack("<f", x))[0]

    def scalar(name, i, seed, lo, hi):
        h = splitmix64_scalar(fnv1a64(name.encode()) ^ ((seed * GOLDEN) & MASK) ^ i)
        u = float(h >> 40) * 2.0 ** -24
        return f32(f32(f32(hi - lo) * u) + f32(lo))

    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8
    assert splitmix64_scalar(0) == 0xE220A8397B1DCDAF   # first output of SplitMix64 seeded with 0
    rng = random.Random(7)
    for name, seed, lo, hi in (("conv1.weight", 0, -math.sqrt(3 / 27), math.sqrt(3 / 27)),
                               ("bn1.bias", 5, -0.2, 0.2), ("input", 12345678901, -2.0, 2.0),
                               ("layer4.1.bn2.running_var", 2**63 + 3, 0.5, 2.0)):
        v = uniform(name, 5000, seed, lo, hi)
        for i in list(range(20)) + [rng.randrange(5000) for _ in range(200)]:
            s = scalar(name, i, seed, lo, hi)
            assert struct.pack("<f", s) == v[i].tobytes(), (name, i, s, v[i])
        assert v.min() >= np.float32(lo) and v.max() <= np.float32(hi)
    print("selftest OK")
    for name, seed in (("conv1.weight", 0), ("input", 1)):
        print(f"  {name!r} seed {seed}: fnv1a64 = {fnv1a64(name.encode()):#018x}, first 4 of U[-1,1): "
              + ", ".join(f"{x!r} ({x.view(np.uint32):#010x})" for x in uniform(name, 4, seed, -1.0, 1.0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the seeded state_dict of --model as safetensors")
    ap.add_argument("--check", metavar="FILE", help="compare FILE with the formula bit for bit")
    ap.add_argument("--conv-gain", type=float, default=None,
                    help="conv gain g for --check without --model (default 1); --model implies its own")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--shapes", metavar="MODEL", choices=list(MODELS),
                    help="print MODEL's state_dict keys and shapes, one 'key dim dim ...' line each "
                         "(input of seeded_check.rs)")
    a = ap.parse_args()
    if not 0 <= a.seed < 2**64:
        sys.exit("--seed must be in [0, 2^64)")
    if a.selftest:
        selftest()
    if a.out:
        if not a.model:
            sys.exit("--out needs --model")
        m = build_fp32(a.model)
        gain = MODELS[a.model][3]
        arrays = load_seeded(m, a.seed, gain)
        write_safetensors(arrays, a.out, {"model": a.model, "seed": str(a.seed), "conv_gain": repr(gain),
                                          "formula": "rquant tools/vision/README.md seeded weights v1"})
        print(f"{a.out}: {a.model}, seed {a.seed}, conv gain {gain}, {len(arrays)} tensors, "
              f"{sum(v.size for v in arrays.values())} values, state_dict_digest {state_dict_digest(arrays)}")
    if a.shapes:
        for k, shape in model_shapes(build_fp32(a.shapes)).items():
            print(k, *shape)
    if a.check:
        sys.exit(1 if check_file(a.check, a.seed, a.model, a.conv_gain) else 0)
    if not (a.selftest or a.out or a.check or a.shapes):
        ap.print_help()


if __name__ == "__main__":
    main()
