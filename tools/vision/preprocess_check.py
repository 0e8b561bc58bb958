#!/usr/bin/env python3
"""torchvision's ImageNet preprocessing of image files, to compare with (or
feed to) `rquant classify`.

    P=/work/venv-torch/bin/python
    # rquant's preprocessing against torchvision's tensor path, value for value:
    rquant classify --model resnet18 --weights W --save-input /tmp/r.safetensors a.png b.jpg
    $P tools/vision/preprocess_check.py --model resnet18 --compare /tmp/r.safetensors a.png b.jpg
    # torchvision's batch, for `--input-tensors` (bit-exact comparisons with PyTorch):
    $P tools/vision/preprocess_check.py --model resnet18 --out /tmp/t.safetensors a.png b.jpg
    # the hashes pinned by crates/cli/src/imagenet.rs's torchvision_pins test:
    $P tools/vision/preprocess_check.py --pins

The path is torchvision's documented one for tensors: `torchvision.io.decode_image(path,
ImageReadMode.RGB)` (uint8 tensor) then the weights' `ImageClassification` preset
(resize 256 bilinear antialias, center crop 224, or 342 / 299 for inception_v3;
ImageNet mean/std). JPEG decoders differ (libjpeg-turbo here, the `image` crate in
rquant), so compare PNGs for exactness.
"""
import argparse
import sys

import torch
from safetensors.torch import load_file, save_file
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms._presets import ImageClassification


def batch(model, paths):
    crop, resize = (299, 342) if model == "inception_v3" else (224, 256)
    t = ImageClassification(crop_size=crop, resize_size=resize)
    return torch.stack([t(decode_image(p, mode=ImageReadMode.RGB)) for p in paths])


# Synthetic images for `--pins`: (height, width, preset) with a pattern that has
# sharp edges, so the resampling's last-place arithmetic reaches the uint8 rounding.
PINS = [(375, 500, "resnet18"), (600, 341, "resnet18"), (200, 180, "resnet18"), (257, 1000, "inception_v3")]


def pattern(h, w):
    """uint8 [3, h, w]: (7x + 13y + 101c + 9·((x·y) mod 17)) mod 256."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([(7 * x + 13 * y + 101 * c + 9 * ((x * y) % 17)) % 256 for c in range(3)]).to(torch.uint8)


def pins():
    """FNV-1a 64 of the preprocessed float32 batch of each synthetic image, as the
    Rust unit test `imagenet::tests::torchvision_pins` expects them."""
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    import seeded

    for h, w, model in PINS:
        crop, resize = (299, 342) if model == "inception_v3" else (224, 256)
        x = ImageClassification(crop_size=crop, resize_size=resize)(pattern(h, w)).contiguous()
        print(f"({h}, {w}, {resize}, {crop}, 0x{seeded.fnv1a64(x.numpy().astype('<f4').tobytes()):016x}),")


def main():
    if sys.argv[1:] == ["--pins"]:
        return pins()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--compare", help="rquant's --save-input file")
    ap.add_argument("--out", help="write torchvision's batch (tensor 'input') here")
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    x = batch(a.model, a.images).contiguous()
    if a.out:
        save_file({"input": x}, a.out)
        print(f"wrote {a.out}: {tuple(x.shape)}")
    if a.compare:
        r = load_file(a.compare)["input"]
        if r.shape != x.shape:
            sys.exit(f"shape {tuple(r.shape)} != torchvision's {tuple(x.shape)}")
        d = (r - x).abs()
        # One uint8 level after normalisation is 1 / 255 / std ≈ 0.017.
        levels = (d * 255 * 0.225).round()
        for i, p in enumerate(a.images):
            di = d[i]
            print(
                f"{p}: {int((di != 0).sum())} of {di.numel()} values differ, max |diff| "
                f"{float(di.max()):.3g} (≈ {int(levels[i].max())} uint8 levels)"
            )
        if bool((d != 0).any()):
            sys.exit(1)


if __name__ == "__main__":
    main()
