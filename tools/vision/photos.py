#!/usr/bin/env python3
"""Real photos for issue 13's PTQ comparison: calibration and evaluation batches made from the
images bundled in the scikit-image and scikit-learn wheels (crops and horizontal flips, torchvision's
ImageNet preprocessing), and PyTorch 2.15's PTQ of the seeded torchvision models calibrated on them.

Needs what tools/vision/torch_expected.py needs, plus scikit-image and scikit-learn (only for the
image files inside their wheels: nothing is downloaded; see tools/vision/README.md, "Real photos").

    P=/work/venv-torch/bin/python
    $P tools/vision/photos.py --tensors                  # crates/models/tests/data/vision/photos_64.safetensors
    $P tools/vision/photos.py --expected                 # <model>_64_photos.json for the default models
    $P tools/vision/photos.py --expected --models resnet18 --size 64 --out-dir /tmp/x
    $P tools/vision/photos.py --cli-fixture crates/cli/tests/data/photos   # PNG crops + PyTorch's PTQ on them

Per model, the expected file is torch_expected.py's (same fields, same recipe: seeded weights, fuse,
x86 qconfig, calibrate, convert and run under fbgemm, everything at 1 thread), with `input` naming
the tensors of the photo file instead of seeds, plus `thread_spread`: the same model calibrated
again at 1 thread and at 2 threads (torch.set_num_threads during calibration; converted and run at
1 thread), each compared with the expected model (activation qparams, weight hashes, int8 logits,
cosine of the dequantized logits per image): PyTorch's own spread between its calibrations.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeded  # noqa: E402
import torch_expected as te  # noqa: E402

torch, torchvision = seeded.check_torch()
from torchvision.transforms._presets import ImageClassification  # noqa: E402

ROOT = te.ROOT
DATA = te.OUT_DIR
CALIB_BATCH = 2

# (source, file, box (top, left, height, width) in the original's pixels or None for the whole
# image, horizontal flip). Every file is inside the scikit-image or scikit-learn wheel.
CALIBRATION = [
    ("skimage", "astronaut.png", None, False),
    ("skimage", "coffee.png", (0, 100, 400, 400), True),
    ("skimage", "chelsea.png", (0, 0, 300, 300), False),
    ("skimage", "rocket.jpg", (0, 160, 427, 320), True),
    ("skimage", "ihc.png", (128, 128, 256, 256), False),
    ("skimage", "hubble_deep_field.jpg", (200, 300, 400, 400), False),
    ("skimage", "camera.png", None, True),  # grayscale: the one channel three times
    ("sklearn", "china.jpg", (0, 0, 427, 427), True),
]
EVAL = [
    ("sklearn", "flower.jpg", (0, 100, 427, 427), False),
    ("skimage", "chelsea.png", (20, 120, 260, 260), True),
    ("skimage", "astronaut.png", (0, 100, 300, 300), True),
    ("skimage", "retina.jpg", (200, 200, 1000, 1000), False),
]
# The CLI fixture: small PNG crops (uint8 RGB, written as they are, no resizing) of other regions,
# for the CLI test's model at its default size (224).
CLI_MODEL = "shufflenet_v2_x0_5"
CLI_FIXTURE = [
    ("calib", "skimage", "coffee.png", (60, 160, 160, 160), False),
    ("calib", "skimage", "rocket.jpg", (150, 240, 160, 160), True),
    ("calib", "sklearn", "china.jpg", (40, 200, 160, 160), False),
    ("eval", "skimage", "chelsea.png", (60, 150, 160, 160), False),
    ("eval", "sklearn", "flower.jpg", (120, 200, 160, 160), True),
]


def image_dir(source):
    if source == "skimage":
        import skimage
        return os.path.join(os.path.dirname(skimage.__file__), "data")
    import sklearn.datasets
    return os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")


def load(source, name, box, flip):
    """uint8 [3, H, W]: the file decoded by torchvision (RGB), cropped, flipped."""
    from torchvision.io import ImageReadMode, decode_image
    img = decode_image(os.path.join(image_dir(source), name), mode=ImageReadMode.RGB)
    if box is not None:
        t, l, h, w = box
        assert t + h <= img.shape[1] and l + w <= img.shape[2], (name, box, tuple(img.shape))
        img = img[:, t:t + h, l:l + w]
    if flip:
        img = img.flip(-1)
    return img.contiguous()


def preset(size):
    """torchvision's ImageNet classification preset scaled to `size`: resize the shorter side to
    size·8/7 (256 for 224; bilinear, antialias), center crop `size`, ImageNet mean/std."""
    return ImageClassification(crop_size=size, resize_size=size * 8 // 7)


def batch(specs, size):
    t = preset(size)
    return torch.stack([t(load(*s)) for s in specs]).contiguous().numpy().astype(np.float32)


def tensors_path(size):
    return os.path.join(DATA, f"photos_{size}.safetensors")


def write_tensors(size):
    calib, ev = batch(CALIBRATION, size), batch(EVAL, size)
    arrays = {"eval": ev}
    for k in range(len(CALIBRATION) // CALIB_BATCH):
        arrays[f"calibration.{k}"] = calib[k * CALIB_BATCH:(k + 1) * CALIB_BATCH]
    meta = {
        "made_by": "tools/vision/photos.py --tensors",
        "preprocessing": f"torchvision ImageClassification(crop_size={size}, resize_size={size * 8 // 7})",
        "calibration": json.dumps(CALIBRATION),
        "eval": json.dumps(EVAL),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
    }
    seeded.write_safetensors(arrays, tensors_path(size), metadata=meta)
    print(f"wrote {tensors_path(size)} ({os.path.getsize(tensors_path(size)) / 1024:.0f} KB): "
          + ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items()))


def read_tensors(size):
    from safetensors.numpy import load_file
    st = load_file(tensors_path(size))
    calib = [st[f"calibration.{k}"] for k in range(len(CALIBRATION) // CALIB_BATCH)]
    return st["eval"], calib


def input_desc(size, ev, calib):
    f = os.path.basename(tensors_path(size))

    def entry(name, x):
        return {"file": f, "tensor": name, "shape": list(x.shape), "f32_fnv1a64": te.h64(x)}
    return {
        "photos": "tools/vision/photos.py: scikit-image / scikit-learn sample images, crops and flips, "
                  f"torchvision ImageClassification(crop_size={size}, resize_size={size * 8 // 7})",
        "size": size,
        "eval": entry("eval", ev),
        "eval_images": [f"{s}:{n} box {b} flip {fl}" for s, n, b, fl in EVAL],
        "calibration": [entry(f"calibration.{k}", c) for k, c in enumerate(calib)],
        "calibration_images": [f"{s}:{n} box {b} flip {fl}" for s, n, b, fl in CALIBRATION],
        "calibration_note": "one forward pass of the prepared model per batch, in this order",
    }


def summary(q, x):
    """Activation qparams, weight table and int8 logits of a converted model on x."""
    act = {}
    for path, mod in te.op_modules(q):
        if hasattr(mod, "scale") and hasattr(mod, "zero_point"):
            act[path] = (float(mod.scale), int(mod.zero_point))
    torch.backends.quantized.engine = "fbgemm"
    logits = te.run_q(q, x)
    return act, logits


def compare(ref, other, ref_w, other_w):
    (ra, rl), (oa, ol) = ref, other
    a, b = rl.int_repr().numpy().astype(int), ol.int_repr().numpy().astype(int)
    da, db = rl.dequantize().numpy().astype(np.float64), ol.dequantize().numpy().astype(np.float64)
    cos = [float(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)) for u, v in zip(da, db)]
    rel = [abs(oa[p][0] / ra[p][0] - 1.0) for p in ra]
    return {
        "activation_qparams_equal": sum(ra[p] == oa[p] for p in ra),
        "activation_qparams_total": len(ra),
        "activation_scale_max_rel_diff": float(max(rel)),
        "weights_equal": ref_w == other_w,
        "output_qparams_equal": (rl.q_scale(), rl.q_zero_point()) == (ol.q_scale(), ol.q_zero_point()),
        "logits_differing": int((a != b).sum()), "logits_total": int(a.size),
        "logits_max_abs_diff": int(np.abs(a - b).max()) if a.shape == b.shape else None,
        "cosine": [round(c, 6) for c in cos],
    }


def thread_spread(model, size, inputs, ref_q, ref_w):
    """The expected model (1 thread) against calibrations repeated at 1 and at 2 threads."""
    x = torch.from_numpy(inputs[0])
    torch.set_num_threads(1)
    ref = summary(ref_q, x)
    out = {"note": "calibration repeated under torch.set_num_threads(N), then converted and run at 1 thread "
                   "under fbgemm; compared with the expected (1-thread) model"}
    for nt in (1, 2):
        torch.set_num_threads(nt)
        prepared, _, _, _ = te.calibrated(model, size, None, 0, inputs)
        torch.set_num_threads(1)
        q = te.convert_under(prepared, "fbgemm")
        out[f"calibrated_{nt}_threads"] = compare(ref, summary(q, x), ref_w, te.weight_table(q, prepared))
    return out


def write_expected(model, size, out_dir):
    ev, calib = read_tensors(size)
    inputs = (ev, calib)
    res, _note = te.expected(model, size, None, 0, inputs, input_desc(size, ev, calib))
    # expected() leaves its converted model to itself: rebuild the reference for the spread the same way.
    torch.set_num_threads(1)
    prepared, _, _, _ = te.calibrated(model, size, None, 0, inputs)
    q = te.convert_under(prepared, "fbgemm")
    ref_w = te.weight_table(q, prepared)
    assert ref_w == res["weights_quantized"], "the 1-thread rebuild differs from expected()'s model"
    x = torch.from_numpy(ev)
    _, lg = summary(q, x)
    assert lg.int_repr().numpy().tolist() == res["output"]["int_repr"], "1-thread rebuild: other logits"
    res["format"] = "rquant torchvision expected outputs v1 (tools/vision/photos.py via torch_expected.py)"
    res["thread_spread"] = thread_spread(model, size, inputs, q, ref_w)
    fname = f"{model}_{size}_photos.json"
    n = te.write(os.path.join(out_dir, fname), res)
    sp = res["thread_spread"]
    print(f"{fname}: {n / 1024:.1f} KB; int8 vs fp32 cos {res['int8_vs_fp32']['cosine']}; "
          f"argmax fp32 {res['fp32_logits']['argmax']} int8 {res['int8_vs_fp32']['argmax_int8']}; "
          + "; ".join(f"{k}: qparams {v['activation_qparams_equal']}/{v['activation_qparams_total']} "
                      f"(max rel {v['activation_scale_max_rel_diff']:.2e}), weights equal {v['weights_equal']}, "
                      f"{v['logits_differing']} logits differ, cos {v['cosine']}"
                      for k, v in sp.items() if k != "note"), flush=True)


def write_cli_fixture(d, model=CLI_MODEL):
    """PNG crops in d/calib and d/eval, and d/expected.json: PyTorch's PTQ of the seeded `model` at
    its default size, calibrated as `rquant quantize --calibrate d/calib` does (each PNG decoded and
    preprocessed by torchvision's ImageClassification preset, one image per forward, in file-name
    order), its int8 logits on the d/eval PNGs, and its 1- vs 2-thread calibration spread."""
    from PIL import Image
    from preprocess_check import batch as tv_batch
    files = {"calib": [], "eval": []}
    for role, src, name, box, flip in CLI_FIXTURE:
        os.makedirs(os.path.join(d, role), exist_ok=True)
        img = load(src, name, box, flip).permute(1, 2, 0).numpy()
        stem = os.path.splitext(name)[0]
        p = os.path.join(d, role, f"{stem}{'_flip' if flip else ''}.png")
        Image.fromarray(img).save(p, optimize=True)
        files[role].append(p)
        print(f"wrote {p} ({os.path.getsize(p) / 1024:.0f} KB)")
    calib = [tv_batch(model, [p]).numpy() for p in sorted(files["calib"])]
    ev = tv_batch(model, sorted(files["eval"])).numpy()
    size = seeded.MODELS[model][2]
    inputs = (ev, calib)
    torch.set_num_threads(1)
    prepared, x, fp32, _ = te.calibrated(model, size, None, 0, inputs)
    q = te.convert_under(prepared, "fbgemm")
    ref_w = te.weight_table(q, prepared)
    ref = summary(q, x)
    spread = {}
    for nt in (1, 2):
        torch.set_num_threads(nt)
        p2, _, _, _ = te.calibrated(model, size, None, 0, inputs)
        torch.set_num_threads(1)
        q2 = te.convert_under(p2, "fbgemm")
        spread[f"calibrated_{nt}_threads"] = compare(ref, summary(q2, x), ref_w, te.weight_table(q2, p2))
    logits = ref[1]
    res = {
        "format": "rquant CLI photo fixture v1 (tools/vision/photos.py --cli-fixture)",
        "model": model, "size": size, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cpu": te.cpu_string(), "weights": {"formula": "tools/vision/README.md, seeded weights v1", "seed": 0},
        "recipe": "seeded weights; eval(); fuse_model(is_qat=False); get_default_qconfig('x86'); prepare; "
                  "one forward per calib/*.png in name order (torchvision decode_image RGB + "
                  "ImageClassification preset); convert and run the eval/*.png batch (name order) under fbgemm, "
                  "1 thread",
        "calibration_images": [os.path.basename(p) for p in sorted(files["calib"])],
        "eval_images": [os.path.basename(p) for p in sorted(files["eval"])],
        "sources": [f"{s}:{n} box {b} flip {fl}" for _, s, n, b, fl in CLI_FIXTURE],
        "eval_f32_fnv1a64": te.h64(ev),
        "output": {**te.qp(logits.q_scale(), logits.q_zero_point()), "shape": list(logits.shape),
                   "int_repr": logits.int_repr().numpy().tolist()},
        "thread_spread": spread,
    }
    n = te.write(os.path.join(d, "expected.json"), res)
    print(f"wrote {os.path.join(d, 'expected.json')} ({n / 1024:.1f} KB): "
          + "; ".join(f"{k}: qparams {v['activation_qparams_equal']}/{v['activation_qparams_total']}, "
                      f"{v['logits_differing']} logits differ, cos {v['cosine']}" for k, v in spread.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tensors", action="store_true", help="write the preprocessed photo batches")
    ap.add_argument("--expected", action="store_true", help="write the PyTorch expected files")
    ap.add_argument("--cli-fixture", metavar="DIR", help="write the CLI test's PNG crops to DIR")
    ap.add_argument("--models", default="resnet18,mobilenet_v2,mobilenet_v3_large")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out-dir", default=DATA)
    a = ap.parse_args()
    if not (a.tensors or a.expected or a.cli_fixture):
        ap.error("nothing to do: --tensors, --expected and/or --cli-fixture DIR")
    if a.tensors:
        write_tensors(a.size)
    if a.expected:
        for m in a.models.split(","):
            write_expected(m, a.size, a.out_dir)
    if a.cli_fixture:
        write_cli_fixture(a.cli_fixture)


if __name__ == "__main__":
    main()
