#!/usr/bin/env python3
"""Convert a PyTorch *converted* (int8) state_dict of a torchvision quantizable model
into rquant's quantized safetensors, which `rquant classify --weights` loads.

    P=/work/venv-torch/bin/python
    # 1. a template: any rquant quantized file of the same model (its module tree; its
    #    numbers are all replaced). Seeded weights and one random batch do (GoogLeNet and
    #    Inception-v3: the template's transform_input must match the checkpoint's model:
    #    on for torchvision's pretrained ones, the default; --no-transform-input otherwise):
    $P tools/vision/seeded.py --model resnet18 --seed 0 --out /tmp/seeded.safetensors
    rquant quantize --model resnet18 --weights /tmp/seeded.safetensors \\
        --input-tensors SOME_BATCH.safetensors --out /tmp/template.safetensors
    # 2. the conversion (e.g. torchvision's IMAGENET1K_FBGEMM_V1 state_dict, torch.save'd):
    $P tools/vision/torch_to_rquant.py --model resnet18 --checkpoint resnet18_fbgemm.pth \\
        --template /tmp/template.safetensors --out resnet18_int8.safetensors
    # self-check against PyTorch 2.15's fbgemm engine (seeded weights, no download):
    $P tools/vision/torch_to_rquant.py --model shufflenet_v2_x0_5 --verify --rquant target/release/rquant

What is taken from the checkpoint, module by module (torchvision's converted names, the
same paths rquant's fused modules have): every quantized conv / linear's int8 weight
(`int_repr`), its scales and zero points (per channel on axis 0, or per tensor: the
module's `qscheme` attribute in the tree is rewritten to match, so qnnpack-config
checkpoints with per-tensor weights convert too), its float bias, its output `scale`
(PyTorch keeps float32 in the state_dict, which is what a loaded PyTorch model runs with)
and `zero_point`; the QuantStub's and every FloatFunctional's `scale` / `zero_point`.
Every tensor of the template must be found and have the template's shape (a per-tensor
weight's scale becomes one value), and every checkpoint entry must be used (BatchNorm
leftovers and packed-params dtypes aside): anything else is an error naming the key.

Not covered: QAT-prepared checkpoints (torchvision's MobileNetV3 `IMAGENET1K_QNNPACK_V1`
is a QAT-prepared state_dict that torchvision converts after loading): load it into the
QAT-prepared torchvision model, `torch.ao.quantization.convert` it, and pass the
converted model's state_dict (`--checkpoint` accepts a torch.save'd state_dict).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def read_rquant(path):
    """(ordered header dict without metadata, metadata dict, data bytes)."""
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    if meta.get("format") not in ("rquant.quantized.v2",):
        sys.exit(f"{path}: __metadata__.format {meta.get('format')!r} is not rquant.quantized.v2")
    return header, meta, b[8 + n :]


NP = {"I8": np.int8, "I64": np.int64, "F64": np.float64, "F32": np.float32}


def write_rquant(path, tensors, meta):
    """tensors: {name: np.ndarray} in the dtypes of NP; written in name order."""
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dt = {np.dtype(v): k for k, v in NP.items()}[a.dtype]
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def torch_entries(sd):
    """{module path: {"weight": qtensor, "bias": tensor|None, "scale": float, "zero_point": int}}
    from a converted state_dict (conv: path.weight / path.bias; linear: packed params)."""
    import torch

    out, used = {}, set()
    for k, v in sd.items():
        path, _, leaf = k.rpartition(".")
        if k.endswith("._packed_params._packed_params"):
            mod = k[: -len("._packed_params._packed_params")]
            w, b = v
            out.setdefault(mod, {})["weight"] = w
            out[mod]["bias"] = b
            used.add(k)
        elif k.endswith("._packed_params.dtype"):
            used.add(k)  # qint8, checked through the weight itself
        elif leaf in ("weight", "bias") and isinstance(v, torch.Tensor):
            if leaf == "weight" and not v.is_quantized:
                continue  # a float weight: left unused, reported below
            out.setdefault(path, {})[leaf] = v
            used.add(k)
        elif leaf in ("scale", "zero_point"):
            out.setdefault(path, {})[leaf] = v.item() if isinstance(v, torch.Tensor) else v
            used.add(k)
    return out, [k for k in sd if k not in used and not k.endswith("num_batches_tracked")]


def convert(template_path, sd, out_path, model=None):
    import torch

    header, meta, _ = read_rquant(template_path)
    if model and meta.get("model") not in (None, model):
        sys.exit(f"{template_path}: the template is {meta.get('model')!r}, not {model}")
    tree = json.loads(meta["modules"])
    entries, unused = torch_entries(sd)
    if unused:
        sys.exit(f"checkpoint entries with no rquant counterpart: {unused[:8]}{' …' if len(unused) > 8 else ''}")
    nodes = {}

    def walk(t, p):
        nodes[p] = t
        for n, c in t.get("children", []):
            walk(c, f"{p}.{n}" if p else n)

    walk(tree, "")
    tensors, done = {}, set()
    for name, info in header.items():
        path, _, leaf = name.rpartition(".")
        if path not in entries:
            sys.exit(f"{name}: no module {path!r} in the checkpoint")
        e = entries[path]
        want = info["shape"]
        if leaf == "weight":
            w = e.get("weight")
            if w is None or not w.is_quantized or w.dtype != torch.qint8:
                sys.exit(f"{path}.weight: not a qint8 tensor in the checkpoint")
            if list(w.shape) != want:
                sys.exit(f"{path}.weight: shape {list(w.shape)} in the checkpoint, the model's is {want}")
            tensors[name] = w.int_repr().numpy()
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                if w.q_per_channel_axis() != 0:
                    sys.exit(f"{path}.weight: per-channel axis {w.q_per_channel_axis()}, rquant needs 0")
                s = w.q_per_channel_scales().to(torch.float64).numpy()
                z = w.q_per_channel_zero_points().to(torch.int64).numpy()
                scheme = "per_channel_affine"
            else:
                s = np.array([w.q_scale()], np.float64)
                z = np.array([w.q_zero_point()], np.int64)
                scheme = "per_tensor_affine"
            tensors[f"{path}.weight_scale"], tensors[f"{path}.weight_zero_point"] = s, z
            node = nodes.get(path)
            if node is None or "qscheme" not in node:
                sys.exit(f"{path}: the template's module tree has no quantized weight there")
            node["qscheme"] = scheme
        elif leaf in ("weight_scale", "weight_zero_point"):
            continue  # written with the weight
        elif leaf == "bias":
            b = e.get("bias")
            if b is None:
                sys.exit(f"{name}: the template has a bias, the checkpoint none")
            b = b.detach().to(torch.float32).numpy()
            if list(b.shape) != want:
                sys.exit(f"{name}: shape {list(b.shape)} in the checkpoint, the model's is {want}")
            tensors[name] = b
        elif leaf == "scale":
            if "scale" not in e:
                sys.exit(f"{name}: missing from the checkpoint")
            # float32 in PyTorch's state_dict; widened exactly.
            tensors[name] = np.array([np.float32(e["scale"])], np.float64)
        elif leaf == "zero_point":
            if "zero_point" not in e:
                sys.exit(f"{name}: missing from the checkpoint")
            tensors[name] = np.array([int(e["zero_point"])], np.int64)
        else:
            sys.exit(f"{name}: a template tensor this script does not know")
        done.add(path)
    for path, e in entries.items():
        if path not in done:
            sys.exit(f"{path}: in the checkpoint ({', '.join(sorted(e))}) but not in the template")
        if e.get("bias") is not None and f"{path}.bias" not in header:
            sys.exit(f"{path}.bias: in the checkpoint, the template has no bias there")
    meta = dict(meta)
    meta["modules"] = json.dumps(tree, separators=(",", ":"))
    meta["qconfig"] = "converted from a PyTorch state_dict by tools/vision/torch_to_rquant.py"
    write_rquant(out_path, tensors, meta)
    print(f"wrote {out_path}: {len(tensors)} tensors from {len(entries)} quantized modules")


def load_checkpoint(path):
    import torch

    # Quantized tensors and packed params need the full unpickler: only for files you trust.
    sd = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(sd, dict):
        sys.exit(f"{path}: not a state_dict (got {type(sd).__name__})")
    return sd


def verify(model, rquant, size, keep, qconfig="x86"):
    """Seeded weights -> PyTorch PTQ (x86 qconfig) -> convert under fbgemm -> this script ->
    rquant classify --input-tensors: the logits must equal PyTorch's bit for bit."""
    import seeded

    torch, _ = seeded.check_torch()
    from safetensors.torch import save_file
    from torch.ao import quantization as tq

    d = keep or tempfile.mkdtemp(prefix="torch_to_rquant-")
    m = seeded.build_fp32(model)
    seeded.load_seeded(m, 0, seeded.MODELS[model][3])
    w = os.path.join(d, "seeded.safetensors")
    save_file({k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}, w)
    m.eval()
    m.fuse_model(is_qat=False)
    # x86: torchvision's FBGEMM checkpoints; qnnpack: per-tensor weights, full-range
    # activations (MobileNetV2's QNNPACK checkpoint), still run under fbgemm.
    m.qconfig = tq.get_default_qconfig(qconfig)
    tq.prepare(m, inplace=True)
    calib = [torch.from_numpy(seeded.seeded_input(s, 2, size)) for s in (100, 101)]
    with torch.no_grad():
        for x in calib:
            m(x)
    torch.backends.quantized.engine = "fbgemm"
    q = tq.convert(m, inplace=False)
    x = torch.from_numpy(seeded.seeded_input(1, 2, size))
    with torch.no_grad():
        want = q(x)
    ck = os.path.join(d, "torch_int8.pth")
    torch.save(q.state_dict(), ck)
    xs = os.path.join(d, "input.safetensors")
    save_file({"x": x.contiguous()}, xs)
    # The template is calibrated on other data (half the range), so every qparam in the
    # converted file must come from the checkpoint for the logits to match.
    cs = os.path.join(d, "template_calib.safetensors")
    save_file({"0": torch.from_numpy(seeded.seeded_input(7, 1, size)) * 0.5}, cs)
    tpl = os.path.join(d, "template.safetensors")
    run = lambda *a: subprocess.run([rquant, *a], check=True, stdout=subprocess.DEVNULL)
    # weights=None builds: transform_input off, as in PyTorch above.
    run("quantize", "--model", model, "--weights", w, "--input-tensors", cs, "--out", tpl,
        "--no-transform-input")
    out = os.path.join(d, "converted.safetensors")
    convert(tpl, load_checkpoint(ck), out, model)
    th, _, tb = read_rquant(tpl)
    ch, _, cb = read_rquant(out)
    changed = sum(
        tb[slice(*th[k]["data_offsets"])] != cb[slice(*ch[k]["data_offsets"])] for k in th
    )
    print(f"{changed} of {len(th)} tensors differ from the template's")
    bad = 0
    for engine in ("reference", None):
        js = os.path.join(d, f"logits-{engine}.json")
        args = ["classify", "--model", model, "--weights", out, "--input-tensors", xs, "--json", js]
        run(*(args + (["--engine", engine] if engine else [])))
        got = np.array([r["logits"] for r in json.load(open(js))["results"]], np.float32)
        diff = int((got != want.numpy()).sum())
        bad += diff
        print(f"{model} {size}x{size} ({qconfig} qconfig), engine {engine or 'default'}: {diff} of {got.size} logits differ from PyTorch fbgemm")
    if bad:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--checkpoint", help="torch.save'd converted state_dict (.pth)")
    ap.add_argument("--template", help="an rquant quantized file of the same model")
    ap.add_argument("--out")
    ap.add_argument("--verify", action="store_true", help="self-check against PyTorch (seeded weights)")
    ap.add_argument("--rquant", default="target/release/rquant")
    ap.add_argument("--size", type=int, default=64, help="--verify input size")
    ap.add_argument("--keep", help="--verify: keep the files in this directory")
    ap.add_argument("--qconfig", default="x86", choices=["x86", "qnnpack"], help="--verify: PyTorch's qconfig")
    a = ap.parse_args()
    if a.verify:
        if not a.model:
            ap.error("--verify needs --model")
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
        verify(a.model, a.rquant, a.size, a.keep, a.qconfig)
        return
    if not (a.checkpoint and a.template and a.out):
        ap.error("--checkpoint, --template and --out are required (or --verify)")
    convert(a.template, load_checkpoint(a.checkpoint), a.out, a.model)


if __name__ == "__main__":
    main()
