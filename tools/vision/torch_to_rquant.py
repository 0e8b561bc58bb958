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

QAT-prepared checkpoints (torchvision's MobileNetV3 `IMAGENET1K_QNNPACK_V1` is a
QAT-prepared state_dict that torchvision converts after loading) are detected by their
fake-quant / observer keys (or `--qat-prepared`, which then requires them) and converted as
torchvision's builder does: the `quantize=False` model, `fuse_model(is_qat=True)`,
`get_default_qat_qconfig(--qat-backend)` (default qnnpack for mobilenet_v3_large, as
torchvision, else x86), `prepare_qat`, strict `load_state_dict`, `eval`, `convert` (under
fbgemm); the converted state_dict then goes the same way as above. --model is required.

    $P tools/vision/torch_to_rquant.py --model mobilenet_v3_large --checkpoint mnv3_qnnpack_qat.pth \\
        --template /tmp/template.safetensors --out mnv3_int8.safetensors
    $P tools/vision/torch_to_rquant.py --model mobilenet_v3_large --verify --qat-prepared

Only torch reads the .pth files (full unpickler: files you trust); rquant reads the result.
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
    header["__metadata__"] = dict(sorted(meta.items()))  # the template's key order varies
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
    meta["modules"] = json.dumps(tree, separators=(",", ":"), sort_keys=True)  # byte-deterministic
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


# Keys only a QAT-prepared (fake-quantized, not yet converted) state_dict has.
QAT_MARKERS = (
    "weight_fake_quant.scale",
    "weight_fake_quant.fake_quant_enabled",
    "activation_post_process.scale",
    "activation_post_process.fake_quant_enabled",
    "activation_post_process.observer_enabled",
)


def is_qat_prepared(sd):
    """True for a QAT-prepared state_dict (fake-quant / observer entries, no quantized tensors)."""
    import torch

    qat = any(k.endswith(QAT_MARKERS) for k in sd)
    quantized = any(isinstance(v, torch.Tensor) and v.is_quantized for v in sd.values())
    if qat and quantized:
        sys.exit("the checkpoint has both fake-quant entries and quantized tensors: neither form")
    return qat


def num_classes_of(m, sd):
    """The checkpoint's class count: the out_features of its last Linear's weight."""
    import torch.nn as nn

    last = [p for p, x in m.named_modules() if isinstance(x, nn.Linear)][-1]
    w = sd.get(f"{last}.weight")
    if w is None:
        sys.exit(f"{last}.weight: the classifier's weight is missing from the checkpoint")
    return int(w.shape[0])


def qat_convert(model, sd, backend, engine="fbgemm"):
    """Form (c): a QAT-prepared state_dict, converted as torchvision's builder does for
    MobileNetV3's IMAGENET1K_QNNPACK_V1: the quantize=False model (train mode),
    fuse_model(is_qat=True), qconfig = get_default_qat_qconfig(backend), prepare_qat,
    load_state_dict (strict), eval, convert (the packed weights for `engine`).
    Returns (converted model, its state_dict)."""
    import seeded

    torch, _ = seeded.check_torch()
    import torchvision.models.quantization as tvq
    from torch.ao import quantization as tq

    if model not in seeded.MODELS:
        sys.exit(f"--model: unknown model {model!r}; one of {', '.join(seeded.MODELS)}")
    builder, kw, _, _ = seeded.MODELS[model]
    kw = dict(kw)
    torch.manual_seed(0)
    m = getattr(tvq, builder)(weights=None, quantize=False, **kw)
    classes = num_classes_of(m, sd)
    if classes != 1000:
        m = getattr(tvq, builder)(weights=None, quantize=False, num_classes=classes, **kw)
    m.train()
    m.fuse_model(is_qat=True)
    m.qconfig = tq.get_default_qat_qconfig(backend)
    tq.prepare_qat(m, inplace=True)
    try:
        m.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        sys.exit(f"the QAT-prepared checkpoint does not load into {model} prepared with the "
                 f"{backend} QAT qconfig: {e}")
    m.eval()
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        q = tq.convert(m, inplace=False)
    finally:
        torch.backends.quantized.engine = old
    return q, q.state_dict()


def converted_state_dict(sd, model, backend):
    """A converted state_dict as it is (forms a, b) or through qat_convert (form c)."""
    if not is_qat_prepared(sd):
        return sd
    if not model:
        sys.exit("a QAT-prepared checkpoint: --model is needed to build the model to convert it in")
    print(f"QAT-prepared checkpoint: prepare_qat with the {backend} QAT qconfig, load, convert")
    return qat_convert(model, sd, backend)[1]


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
        import copy

        want_forms = rquant_forms(copy.deepcopy(q))(x)
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
        diff = int((got != want_forms.numpy()).sum())
        print(f"{model} {size}x{size} ({qconfig} qconfig), engine {engine or 'default'}: {diff} of {got.size} logits differ from PyTorch fbgemm with rquant's add/hardswish/pool/mean forms")
    if bad:
        sys.exit(1)


def _torch_int8_logits(q, x):
    """(float logits, the quantized tensor entering the DeQuantStub) of a converted model."""
    import torch

    seen = []
    h = q.dequant.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        y = q(x)
    h.remove()
    return y, seen[0]


def rquant_forms(q):
    """Patch a converted PyTorch model (in place) to the arithmetic docs/numerics.md
    specifies where PyTorch's CPU kernels take another form on its channels-last tensors:
    add / add_relu and hardswish dequantized exactly (§8; PyTorch uses an FMA on the first
    64*floor(n/64) elements), the global average pool on a contiguous tensor (§9, PyTorch's
    NCHW kernel) and ShuffleNetV2's global mean on a contiguous tensor (§13). Everything
    else stays PyTorch's: if rquant then agrees, the differences came from these forms."""
    import types

    import torch
    import torch.nn as nn
    from torch.ao.nn import quantized as nnq

    f32 = lambda v: torch.tensor(v, dtype=torch.float32)

    def deq(x):
        return (x.int_repr().to(torch.int32) - x.q_zero_point()).to(torch.float32) * f32(x.q_scale())

    def quant(c, scale, zp):
        r = torch.round(c * (f32(1.0) / f32(float(scale))))  # ties to even
        v = (r.to(torch.int64) + int(zp)).clamp(0, 255).to(torch.uint8)
        return torch._make_per_tensor_quantized_tensor(v.contiguous(), float(scale), int(zp))

    def add(self, a, b):
        return quant(deq(a) + deq(b), self.scale, self.zero_point)

    def add_relu(self, a, b):
        return quant(torch.clamp(deq(a) + deq(b), min=0.0), self.scale, self.zero_point)

    def hardswish(self, x):
        v = deq(x)
        return quant(v * torch.clamp(v + 3.0, 0.0, 6.0) / 6.0, self.scale, self.zero_point)

    for mod in q.modules():
        if isinstance(mod, nnq.QFunctional):
            mod.add = types.MethodType(add, mod)
            mod.add_relu = types.MethodType(add_relu, mod)
        elif isinstance(mod, nnq.Hardswish):
            mod.forward = types.MethodType(hardswish, mod)
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            mod.register_forward_pre_hook(lambda m, inp: (inp[0].contiguous(),))
    if hasattr(q, "stage2") and hasattr(q, "conv5"):  # ShuffleNetV2's x.mean([2, 3])

        def forward_impl(self, x):
            x = self.maxpool(self.conv1(x))
            x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
            return self.fc(x.contiguous().mean([2, 3]))

        q._forward_impl = types.MethodType(forward_impl, q)
    return q


def _rquant_logits(rquant, model, weights, xs, engine, d):
    js = os.path.join(d, f"logits-{engine or 'default'}.json")
    args = ["classify", "--model", model, "--weights", weights, "--input-tensors", xs, "--json", js]
    subprocess.run([rquant, *(args + (["--engine", engine] if engine else []))], check=True,
                   stdout=subprocess.DEVNULL)
    return np.array([r["logits"] for r in json.load(open(js))["results"]], np.float32)


def qat_prepared_seeded(model, size, backend, classes=1000, observe="eval"):
    """A QAT-prepared torchvision model with non-trivial fake-quant state, from the seeded
    fp32 weights: two forward passes in train mode (batch-norm statistics move), then two
    in eval mode. observe="eval": the train passes run with fake quant and observers off
    (fp32 batch-norm updates), the observers see only the eval passes, so the activation
    ranges are the eval network's; observe="train": fake quant and observers on throughout
    (the moving-average ranges are then mostly the train-mode network's, and eval-mode
    activations overflow them to codes up to 255). Returns (prepared model, the seeded
    fp32 state_dict)."""
    import seeded

    torch, _ = seeded.check_torch()
    import torchvision.models.quantization as tvq
    from torch.ao import quantization as tq

    builder, kw, _, gain = seeded.MODELS[model]
    torch.manual_seed(0)
    m = getattr(tvq, builder)(weights=None, quantize=False, num_classes=classes, **kw)
    seeded.load_seeded(m, 0, gain)
    fp32 = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}
    m.train()
    m.fuse_model(is_qat=True)
    m.qconfig = tq.get_default_qat_qconfig(backend)
    tq.prepare_qat(m, inplace=True)
    with torch.no_grad():
        for i, s in enumerate((100, 101, 102, 103)):
            m.train(i < 2)
            if observe == "eval":
                m.apply(tq.disable_observer if i < 2 else tq.enable_observer)
                m.apply(tq.disable_fake_quant if i < 2 else tq.enable_fake_quant)
            m(torch.from_numpy(seeded.seeded_input(s, 2, size)))
    return m, fp32


def verify_qat(model, rquant, size, keep, backend, classes=1000, fixture=None, observe="eval"):
    """Form (c): seeded weights -> PyTorch QAT-prepared model, fake quants calibrated ->
    its state_dict torch.save'd -> this script's QAT path (prepare_qat, load, convert) ->
    rquant classify; the logits compared with PyTorch's converted model under fbgemm
    (rquant's recipe) and under `backend`'s engine (what torchvision runs it with)."""
    import seeded

    torch, _ = seeded.check_torch()
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    d = keep or tempfile.mkdtemp(prefix="torch_to_rquant-qat-")
    m, fp32 = qat_prepared_seeded(model, size, backend, classes, observe)
    m.apply(torch.ao.quantization.enable_observer)  # as a training run would leave them
    w = os.path.join(d, "seeded.safetensors")
    save_file(fp32, w)
    ck = os.path.join(d, "qat_prepared.pth")
    torch.save(m.state_dict(), ck)
    sd = load_checkpoint(ck)
    if not is_qat_prepared(sd):
        sys.exit("internal: the QAT-prepared state_dict is not detected as one")
    n_fq = sum(k.endswith(".scale") and "fake_quant" in k or k.endswith("activation_post_process.scale") for k in sd)
    print(f"QAT-prepared state_dict: {len(sd)} entries, {n_fq} fake-quant scales")
    x = torch.from_numpy(seeded.seeded_input(1, 2, size))
    xs = os.path.join(d, "input.safetensors")
    save_file({"x": x.contiguous()}, xs)
    cs = os.path.join(d, "template_calib.safetensors")
    save_file({"0": torch.from_numpy(seeded.seeded_input(7, 1, size)) * 0.5}, cs)
    tpl = os.path.join(d, "template.safetensors")
    subprocess.run([rquant, "quantize", "--model", model, "--weights", w, "--input-tensors", cs,
                    "--out", tpl, "--no-transform-input"], check=True, stdout=subprocess.DEVNULL)
    out = os.path.join(d, "converted.safetensors")
    convert(tpl, converted_state_dict(sd, model, backend), out, model)
    engines = ["fbgemm"] + ([backend] if backend not in ("fbgemm", "x86") else [])
    ref = {}
    for eng in engines:
        q, _ = qat_convert(model, sd, backend, engine=eng)
        torch.backends.quantized.engine = eng
        ref[eng] = _torch_int8_logits(q, x)
    torch.backends.quantized.engine = "fbgemm"
    q, _ = qat_convert(model, sd, backend, engine="fbgemm")
    ref["fbgemm+forms"] = _torch_int8_logits(rquant_forms(q), x)
    engines.append("fbgemm+forms")
    bad = 0
    for engine in ("reference", None):
        got = _rquant_logits(rquant, model, out, xs, engine, d)
        for eng in engines:
            want, wq = ref[eng]
            scale = wq.q_scale()
            steps = np.abs(np.round((got - want.numpy()) / scale)).astype(np.int64)
            diff = int((got != want.numpy()).sum())
            if eng == "fbgemm+forms":
                bad += diff
            what = {"fbgemm+forms": "PyTorch fbgemm with rquant's add/hardswish/pool/mean forms"}
            print(f"{model} {size}x{size} QAT-prepared ({backend} QAT qconfig), rquant engine "
                  f"{engine or 'default'}: {diff} of {got.size} logits differ from "
                  f"{what.get(eng, 'PyTorch ' + eng)} (max {int(steps.max())} steps)")
    if fixture:
        write_fixture(fixture, model, size, classes, backend, out, x, ref["fbgemm+forms"][1],
                      ref["fbgemm"][1])
    return bad


def write_fixture(prefix, model, size, classes, backend, converted, x, wq, wq_stock):
    """The CI fixture: the converted rquant file and PyTorch fbgemm's int8 logits."""
    import hashlib
    import shutil

    import seeded
    import torch

    shutil.copyfile(converted, prefix + ".safetensors")
    raw = open(converted, "rb").read()
    xb = x.numpy().astype("<f4").tobytes()
    doc = {
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
        "engine": "fbgemm",
        "form": "QAT-prepared state_dict (torchvision's MobileNetV3 IMAGENET1K_QNNPACK_V1 form), "
                "converted by tools/vision/torch_to_rquant.py",
        "recipe": f"{model}(weights=None, quantize=False, num_classes={classes}), seeded weights "
                  f"(seed 0, conv gain {seeded.MODELS[model][3]}), fuse_model(is_qat=True), "
                  f"get_default_qat_qconfig({backend!r}), prepare_qat, forward seeds 100, 101 (train mode, "
                  f"fake quant and observers off) and 102, 103 (eval mode, observers on) at "
                  f"{size}x{size}; state_dict torch.save'd, "
                  "loaded into a fresh prepare_qat model, eval, convert under fbgemm",
        "model": model,
        "num_classes": classes,
        "qat_qconfig": backend,
        "file": os.path.basename(prefix) + ".safetensors",
        "file_sha256": hashlib.sha256(raw).hexdigest(),
        "input": {"name": seeded.INPUT_NAME, "range": list(seeded.INPUT_RANGE), "seed": 1,
                  "shape": list(x.shape), "f32_fnv1a64": f"0x{seeded.fnv1a64(xb):016x}"},
        "output": {
            "scale": wq.q_scale(),
            "scale_f32_bits": f"0x{struct.unpack('<I', struct.pack('<f', wq.q_scale()))[0]:08x}",
            "zero_point": wq.q_zero_point(),
            "dtype": "quint8",
            "shape": list(wq.shape),
            "int_repr": wq.int_repr().tolist(),
        },
        "output_note": "`output`: PyTorch fbgemm's converted model with rquant_forms() applied "
                       "(for ShuffleNetV2: the global x.mean([2, 3]) on a contiguous tensor, "
                       "PyTorch's kernel that docs/numerics.md §13 specifies); `output_stock`: the "
                       "stock model, whose mean runs PyTorch's channels-last form (differs on ties)",
        "output_stock": {
            "scale_f32_bits": f"0x{struct.unpack('<I', struct.pack('<f', wq_stock.q_scale()))[0]:08x}",
            "zero_point": wq_stock.q_zero_point(),
            "int_repr": wq_stock.int_repr().tolist(),
            "differing": int((wq_stock.int_repr() != wq.int_repr()).sum()),
        },
    }
    with open(prefix + ".json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {prefix}.safetensors ({len(raw)} bytes) and {prefix}.json")


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
    ap.add_argument("--qat-prepared", action="store_true",
                    help="the checkpoint is a QAT-prepared state_dict (also detected by its fake-quant "
                         "keys); --verify: exercise that form")
    ap.add_argument("--qat-backend", choices=["qnnpack", "x86", "fbgemm"],
                    help="QAT qconfig the checkpoint was prepared with (default: qnnpack for "
                         "mobilenet_v3_large, as torchvision's builder, else x86)")
    ap.add_argument("--num-classes", type=int, default=1000, help="--verify --qat-prepared: classifier size")
    ap.add_argument("--fixture", metavar="PREFIX",
                    help="--verify --qat-prepared: also write PREFIX.safetensors and PREFIX.json (CI fixture)")
    ap.add_argument("--qat-observe", choices=["eval", "train"], default="eval",
                    help="--verify --qat-prepared: which passes the fake quants observe (see qat_prepared_seeded)")
    a = ap.parse_args()
    backend = a.qat_backend or ("qnnpack" if a.model == "mobilenet_v3_large" else "x86")
    if a.verify:
        if not a.model:
            ap.error("--verify needs --model")
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
        if a.qat_prepared:
            if verify_qat(a.model, a.rquant, a.size, a.keep, backend, a.num_classes, a.fixture,
                          a.qat_observe):
                sys.exit(1)
        else:
            verify(a.model, a.rquant, a.size, a.keep, a.qconfig)
        return
    if not (a.checkpoint and a.template and a.out):
        ap.error("--checkpoint, --template and --out are required (or --verify)")
    sd = load_checkpoint(a.checkpoint)
    if a.qat_prepared and not is_qat_prepared(sd):
        sys.exit(f"{a.checkpoint}: --qat-prepared, but no fake-quant / observer entries in it")
    convert(a.template, converted_state_dict(sd, a.model, backend), a.out, a.model)


if __name__ == "__main__":
    main()
