#!/usr/bin/env python3
"""PyTorch 2.15 expected outputs for torchvision's quantizable models (run once; CI never needs torch).

Needs torch==2.15.*, torchvision==0.29.* (quantizable model definitions), numpy, safetensors
(set-up: tools/vision/README.md). For each model:

  torchvision.models.quantization.<builder>(weights=None, quantize=False[, aux_logits=False,
  init_weights=False]) -> seeded fp32 weights (tools/vision/seeded.py) or --weights FILE -> eval()
  -> fuse_model(is_qat=False) -> qconfig = get_default_qconfig("x86") -> prepare
  -> calibrate on 4 seeded batches of 2 -> convert under engine "fbgemm"
  -> run under engine "fbgemm" on 2 seeded images

and writes crates/models/tests/data/vision/<model>.json (default input size) and
<model>_<size>.json (reduced size: 64, inception_v3 75), each holding the activation qparams of
every quantized module, the modules in execution order with their output qparams, hashes of every
quantized weight, the int8 logits and a few fp32 logits. Everything runs on 1 thread; the
converted model is also run twice more and at 2 threads and must give identical int8 logits.
The same calibrated model is also converted and run under engine "x86" (oneDNN convs on a VNNI
CPU) and the differences are written to tools/vision/x86_vs_fbgemm.json.

    python tools/vision/torch_expected.py                       # every model, both sizes
    python tools/vision/torch_expected.py --models resnet18,googlenet --sizes 224
    python tools/vision/torch_expected.py --models resnet18 --weights my.safetensors --out-dir /tmp/x
"""
import argparse
import copy
import hashlib
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeded  # noqa: E402

torch, torchvision = seeded.check_torch()
import torch.ao.nn.quantized as nnq  # noqa: E402
from torch.ao import quantization as tq  # noqa: E402

warnings.filterwarnings("ignore")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "crates", "models", "tests", "data", "vision")
NOTE = os.path.join(ROOT, "tools", "vision", "x86_vs_fbgemm.json")
EVAL_SEED, EVAL_BATCH = 1, 2
CALIB_SEEDS, CALIB_BATCH = (100, 101, 102, 103), 2
REDUCED = {"inception_v3": 75}  # smallest size Inception-v3 accepts; every other model: 64
QF_OPS = ("add", "add_relu", "cat", "mul", "add_scalar", "mul_scalar", "matmul")


def cpu_info():
    info = {"model_name": "?", "flags": []}
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name":
                info["model_name"] = v
            elif k in ("cpu family", "model", "stepping"):
                info[k.replace(" ", "_")] = int(v)
            elif k == "flags":
                fl = v.split()
                info["flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                                             "amx_int8") if f in fl]
                break
    except OSError:
        pass
    return info


def cpu_string(ci=None):
    ci = ci or cpu_info()
    return f"{ci['model_name']} (family {ci.get('cpu_family')} model {ci.get('model')}, {' '.join(ci['flags'])})"


def h64(x):
    """FNV-1a 64 of a numpy array's little-endian bytes, as 0x-prefixed hex."""
    return f"{seeded.fnv1a64(np.ascontiguousarray(x).tobytes()):#018x}"


def f64bits(v):
    return f"{np.float64(v).view(np.uint64):#018x}"


def f32bits_exact(v):
    """f32 bit pattern of v when v is exactly a float32 value, else None."""
    f = np.float32(v)
    return f"{f.view(np.uint32):#010x}" if float(f) == float(v) else None


def qp(scale, zp):
    scale = float(scale)
    d = {"scale": scale, "zero_point": int(zp)}
    b = f32bits_exact(scale)
    if b is not None:
        d["scale_f32_bits"] = b
    else:
        d["scale_f64_bits"] = f64bits(scale)
    return d


def op_modules(model):
    """(path, module) of every module that runs an op: leaves, quantized Linear, QFunctional;
    not containers, torchvision blocks, Identity (fused-away BN/ReLU) or LinearPackedParams."""
    out = []
    for path, mod in model.named_modules():
        t = type(mod)
        if path == "" or t in (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.Identity):
            continue
        if t.__name__ == "LinearPackedParams":
            continue
        if not t.__module__.startswith("torch."):
            continue
        if path.endswith(".activation_post_process"):
            continue
        out.append((path, mod))
    return out


class Recorder:
    """Forward hooks recording each op module's quantized outputs in execution order,
    plus which FloatFunctional/QFunctional method ran at each path."""

    def __init__(self, model):
        self.calls, self.handles, self.ops, self.inputs = [], [], {}, {}
        for path, mod in op_modules(model):
            if isinstance(mod, (nnq.QFunctional, torch.ao.nn.quantized.FloatFunctional)):
                hook_mod = mod.activation_post_process
            else:
                hook_mod = mod
            self.handles.append(hook_mod.register_forward_hook(
                lambda m, i, o, path=path, mod=mod: self.calls.append((path, mod, o))))
            if hasattr(mod, "weight") and callable(mod.weight):
                self.handles.append(mod.register_forward_hook(
                    lambda m, i, o, path=path: self.inputs.__setitem__(path, i)))
        self._patched = []
        for name in QF_OPS:
            orig = getattr(nnq.QFunctional, name)

            def wrapper(this, *a, _orig=orig, _name=name, **k):
                self.ops.setdefault(id(this), [])
                if _name not in self.ops[id(this)]:
                    self.ops[id(this)].append(_name)
                return _orig(this, *a, **k)
            setattr(nnq.QFunctional, name, wrapper)
            self._patched.append((name, orig))

    def close(self):
        for h in self.handles:
            h.remove()
        for name, orig in self._patched:
            setattr(nnq.QFunctional, name, orig)


def run_q(model, x):
    """Run a converted model; return its quantized logits (the input of the DeQuantStub)."""
    got = []
    h = model.dequant.register_forward_pre_hook(lambda m, i: got.append(i[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    assert len(got) == 1 and got[0].is_quantized
    return got[0]


def short_type(mod):
    t = type(mod)
    return t.__name__, f"{t.__module__}.{t.__name__}"


def weight_table(qmodel, prepared):
    """Hashes of every quantized weight (int_repr, per-channel scales/zero points), its float bias,
    and the fused fp32 weight it was quantized from (conv+BN folded by fuse_model)."""
    out = {}
    for path, mod in qmodel.named_modules():
        if not hasattr(mod, "weight") or not callable(mod.weight) or not hasattr(mod, "bias"):
            continue
        w = mod.weight()
        if not (isinstance(w, torch.Tensor) and w.is_quantized):
            continue
        pm = prepared.get_submodule(path)
        if isinstance(pm, torch.ao.nn.intrinsic._FusedModule):
            pm = pm[0]
        e = {"shape": list(w.shape), "dtype": str(w.dtype).replace("torch.", ""),
             "qscheme": str(w.qscheme()).replace("torch.", "")}
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            e["axis"] = int(w.q_per_channel_axis())
            sc = w.q_per_channel_scales().numpy().astype("<f8")
            zp = w.q_per_channel_zero_points().numpy().astype("<i8")
        else:
            sc = np.array([w.q_scale()], "<f8")
            zp = np.array([w.q_zero_point()], "<i8")
        e["int_repr_fnv1a64"] = h64(w.int_repr().numpy().astype(np.int8))
        e["scales_f64_fnv1a64"] = h64(sc)
        e["zero_points_i64_fnv1a64"] = h64(zp)
        b = mod.bias()
        e["bias_f32_fnv1a64"] = None if b is None else h64(b.detach().numpy().astype("<f4"))
        e["fused_weight_f32_fnv1a64"] = h64(pm.weight.detach().numpy().astype("<f4"))
        assert (b is None) == (pm.bias is None) and (b is None or torch.equal(b, pm.bias.detach()))
        for k in ("stride", "padding", "dilation", "groups"):
            if hasattr(mod, k):
                v = getattr(mod, k)
                e[k] = list(v) if isinstance(v, tuple) else v
        out[path] = e
    return out


def calibrated(model_name, size, weights_file, seed, inputs=None):
    """(prepared + calibrated model, eval input, fp32 logits, fp32 state dict as numpy).
    `inputs`: (eval batch, [calibration batches]) as numpy float32 NCHW instead of the seeded ones."""
    m = seeded.build_fp32(model_name)
    if weights_file:
        if weights_file.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(weights_file)
        else:
            sd = torch.load(weights_file, map_location="cpu", weights_only=True)
        m.load_state_dict(sd, strict=True)
    else:
        seeded.load_seeded(m, seed, seeded.MODELS[model_name][3])
    m.eval()
    sd = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    if inputs is None:
        inputs = (seeded.seeded_input(EVAL_SEED, EVAL_BATCH, size),
                  [seeded.seeded_input(s, CALIB_BATCH, size) for s in CALIB_SEEDS])
    x = torch.from_numpy(inputs[0])
    with torch.no_grad():
        fp32 = m(x)
    m.fuse_model(is_qat=False)
    m.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        for c in inputs[1]:
            m(torch.from_numpy(c))
    return m, x, fp32, sd


def convert_under(prepared, engine):
    torch.backends.quantized.engine = engine
    return tq.convert(copy.deepcopy(prepared), inplace=False)


def run_recorded(qmodel, x, engine):
    torch.backends.quantized.engine = engine
    rec = Recorder(qmodel)
    try:
        logits = run_q(qmodel, x)
    finally:
        rec.close()
    return logits, rec


def expected(model_name, size, weights_file=None, seed=0, inputs=None, input_desc=None):
    """(expected JSON, x86-vs-fbgemm note). `inputs` as for `calibrated`, described in the
    JSON by `input_desc` (default: the seeded batches)."""
    torch.set_num_threads(1)
    prepared, x, fp32, fp32_sd = calibrated(model_name, size, weights_file, seed, inputs)
    q = convert_under(prepared, "fbgemm")
    logits, rec = run_recorded(q, x, "fbgemm")
    ref = logits.int_repr().numpy()

    # determinism: twice more at 1 thread, then at 2 threads
    checks = []
    for nt in (1, 1, 2, 2):
        torch.set_num_threads(nt)
        again = run_q(q, x).int_repr().numpy()
        if not np.array_equal(again, ref):
            sys.exit(f"{model_name}@{size}: int8 logits differ at {nt} thread(s)")
        checks.append(nt)
    torch.set_num_threads(1)

    calls, seen = [], set()
    for path, mod, o in rec.calls:
        tname, _ = short_type(mod)
        entry = {"path": path, "type": tname}
        if id(mod) in rec.ops:
            entry["ops"] = rec.ops[id(mod)]
        if isinstance(o, torch.Tensor):
            entry["shape"] = list(o.shape)
            if o.is_quantized:
                entry["out"] = [float(o.q_scale()), int(o.q_zero_point())]
            if o.dtype != torch.quint8:
                entry["dtype"] = str(o.dtype).replace("torch.", "")
        calls.append(entry)
        seen.add(path)
    types, act = {}, {}
    for path, mod in op_modules(q):
        tname, full = short_type(mod)
        types[tname] = full
        if hasattr(mod, "scale") and hasattr(mod, "zero_point"):
            act[path] = qp(mod.scale, mod.zero_point)
    uncalled = [p for p, _ in op_modules(q) if p not in seen]

    fp = fp32.numpy().astype(np.float64)
    deq = logits.dequantize().numpy().astype(np.float64)
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(fp, deq)]
    _, _, default_size, gain = seeded.MODELS[model_name]
    builder, kw, _, _ = seeded.MODELS[model_name]
    if weights_file:
        wspec = {"file": os.path.basename(weights_file),
                 "sha256": hashlib.sha256(open(weights_file, "rb").read()).hexdigest()}
    else:
        wspec = {"formula": "tools/vision/README.md, seeded weights v1", "seed": seed, "conv_gain": gain}
    wspec["state_dict_tensors"] = len(fp32_sd)
    wspec["state_dict_values"] = int(sum(v.size for v in fp32_sd.values()))
    wspec["state_dict_digest"] = seeded.state_dict_digest(fp32_sd)
    ci = cpu_info()
    res = {
        "format": "rquant torchvision expected outputs v1 (tools/vision/torch_expected.py)",
        "model": model_name,
        "builder": f"torchvision.models.quantization.{builder}",
        "builder_kwargs": {"weights": None, "quantize": False, **kw},
        "transform_input": getattr(q, "transform_input", None),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu": ci,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "engine": "fbgemm",
        "recipe": "eval(); fuse_model(is_qat=False); qconfig = get_default_qconfig('x86') "
                  "(HistogramObserver reduce_range=True quint8 activations, PerChannelMinMaxObserver "
                  "qint8 per_channel_symmetric weights); prepare; calibrate; convert and run under engine fbgemm",
        "threads": 1,
        "determinism_checked_threads": checks,
        "weights": wspec,
        "input": input_desc or {
            "name": seeded.INPUT_NAME, "range": list(seeded.INPUT_RANGE), "size": size,
            "eval": {"seed": EVAL_SEED, "shape": [EVAL_BATCH, 3, size, size], "f32_fnv1a64": h64(x.numpy())},
            "calibration": [{"seed": s, "shape": [CALIB_BATCH, 3, size, size],
                             "f32_fnv1a64": h64(seeded.seeded_input(s, CALIB_BATCH, size))} for s in CALIB_SEEDS],
            "calibration_note": "one forward pass of the prepared model per batch, in this order",
        },
        "output": {
            **qp(logits.q_scale(), logits.q_zero_point()),
            "dtype": str(logits.dtype).replace("torch.", ""),
            "shape": list(logits.shape),
            "int_repr": ref.tolist(),
        },
        "fp32_logits": {
            "first10": [[float(v) for v in row[:10]] for row in fp32.numpy()],
            "min": float(fp.min()), "max": float(fp.max()), "std": round(float(fp.std()), 6),
            "argmax": fp.argmax(1).tolist(),
        },
        "int8_vs_fp32": {"argmax_int8": deq.argmax(1).tolist(), "cosine": [round(c, 6) for c in cos]},
        "activation_qparams": act,
        "calls": calls,
        "uncalled_modules": uncalled,
        "types": dict(sorted(types.items())),
        "weights_quantized": weight_table(q, prepared),
    }

    # the same calibrated model under engine x86
    qx = convert_under(prepared, "x86")
    lx, recx = run_recorded(qx, x, "x86")
    torch.backends.quantized.engine = "fbgemm"
    outs_f = {p: o for p, _, o in rec.calls if isinstance(o, torch.Tensor) and o.is_quantized}
    differing, isolated = [], 0
    torch.backends.quantized.engine = "x86"
    for p, mod, o in recx.calls:
        if p in outs_f and isinstance(o, torch.Tensor) and o.is_quantized:
            f = outs_f[p].int_repr().numpy().astype(int)
            n = int((f != o.int_repr().numpy().astype(int)).sum())
            m_cas = int(np.abs(f - o.int_repr().numpy().astype(int)).max())
            n_iso = m_iso = None
            if p in rec.inputs:  # conv / linear: the x86 module on the fbgemm run's own input
                with torch.no_grad():
                    oi = mod(*rec.inputs[p]).int_repr().numpy().astype(int)
                n_iso, m_iso = int((f != oi).sum()), int(np.abs(f - oi).max())
                isolated += n_iso > 0
            if n or n_iso:
                desc = short_type(mod)[0]
                if hasattr(mod, "kernel_size") and hasattr(mod, "groups"):
                    desc += (f" {mod.in_channels}->{mod.out_channels} k{mod.kernel_size[0]}x{mod.kernel_size[1]}"
                             f" s{mod.stride[0]} p{mod.padding[0]} g{mod.groups}")
                differing.append([p, desc, int(f.size), n, m_cas, n_iso, m_iso])
    torch.backends.quantized.engine = "fbgemm"
    a, b = ref.astype(int), lx.int_repr().numpy().astype(int)
    note = {
        "model": model_name, "size": size, "cpu": cpu_string(ci), "torch": torch.__version__,
        "logits_differing": int((a != b).sum()), "logits_total": int(a.size),
        "logits_max_abs_diff": int(np.abs(a - b).max()),
        "same_output_qparams": bool(lx.q_scale() == logits.q_scale() and lx.q_zero_point() == logits.q_zero_point()),
        "modules_compared": len(outs_f), "modules_with_differing_outputs": len(differing),
        "conv_linear_modules_differing_on_same_input": isolated,
        "conv_linear_modules": len(rec.inputs),
        "differing_modules_columns": ["path", "module", "outputs", "differing (whole model)", "max abs diff",
                                      "differing (x86 module on the fbgemm run's input; conv/linear only)",
                                      "max abs diff"],
        "differing_modules": differing,
    }
    return res, note


def fmt(obj, ind=0):
    """JSON with dicts one key per line and lists of scalars (or of short lists) on one line."""
    pad, pad1 = " " * ind, " " * (ind + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        if all(not isinstance(v, (dict, list)) or (isinstance(v, list) and len(v) <= 4 and
               all(not isinstance(e, (dict, list)) for e in v)) for v in obj.values()) and len(json.dumps(obj)) < 600:
            return json.dumps(obj)
        items = [f"{pad1}{json.dumps(k)}: {fmt(v, ind + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(e, (dict, list)) for e in obj) or len(json.dumps(obj)) < 120:
            return json.dumps(obj)
        items = [f"{pad1}{fmt(e, ind + 1)}" for e in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj)


def write(path, obj):
    text = fmt(obj) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return len(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="all", help="comma-separated names or 'all': " + ", ".join(seeded.MODELS))
    ap.add_argument("--sizes", default="default,reduced",
                    help="comma-separated input sizes; 'default' = 224 (inception_v3 299), 'reduced' = 64 (75)")
    ap.add_argument("--size", type=int, help="shorthand for --sizes N")
    ap.add_argument("--weights", help="a state_dict (.safetensors or torch .pth) instead of the seeded weights")
    ap.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    ap.add_argument("--out-dir", default=OUT_DIR)
    ap.add_argument("--note", default=NOTE, help="x86-vs-fbgemm note file (updated per model and size)")
    a = ap.parse_args()
    names = list(seeded.MODELS) if a.models == "all" else a.models.split(",")
    for n in names:
        if n not in seeded.MODELS:
            sys.exit(f"unknown model {n}")
    sizes = [str(a.size)] if a.size else a.sizes.split(",")
    os.makedirs(a.out_dir, exist_ok=True)
    notes = json.load(open(a.note)) if os.path.exists(a.note) else {}
    for n in names:
        default = seeded.MODELS[n][2]
        for s in sizes:
            size = default if s == "default" else REDUCED.get(n, 64) if s == "reduced" else int(s)
            res, note = expected(n, size, a.weights, a.seed)
            fname = f"{n}.json" if size == default else f"{n}_{size}.json"
            nbytes = write(os.path.join(a.out_dir, fname), res)
            notes[f"{n}_{size}"] = note
            out = res["output"]["int_repr"]
            print(f"{fname:32s} {nbytes / 1024:6.1f} KB  out scale {res['output']['scale']:.6g} zp "
                  f"{res['output']['zero_point']}  int8 logits range [{min(map(min, out))}, {max(map(max, out))}]  "
                  f"cos {res['int8_vs_fp32']['cosine']}  x86 vs fbgemm: {note['logits_differing']} of "
                  f"{note['logits_total']} logits differ, {note['modules_with_differing_outputs']} modules",
                  flush=True)
            if a.weights is None:
                write(a.note, dict(sorted(notes.items())))


if __name__ == "__main__":
    main()
