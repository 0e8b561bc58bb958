#!/usr/bin/env python3
"""Copy torchvision's ImageNet class names (`_IMAGENET_CATEGORIES` in
torchvision/models/_meta.py, the list every IMAGENET1K weight's
`meta["categories"]` points at) into crates/cli/data/imagenet_classes.txt, one
name per line in class-index order, for `rquant classify`.

    /work/venv-torch/bin/python tools/vision/imagenet_classes.py           # write
    /work/venv-torch/bin/python tools/vision/imagenet_classes.py --check   # exit 1 if it differs

Needs only torchvision (see tools/vision/README.md for the set-up); without
it, pass the path of a copy of _meta.py with --meta (the file is parsed, not
imported).
"""
import argparse
import ast
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/cli/data/imagenet_classes.txt"


def from_source(path):
    tree = ast.parse(pathlib.Path(path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    sys.exit(f"{path}: no _IMAGENET_CATEGORIES assignment")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", help="path of torchvision/models/_meta.py (default: import torchvision)")
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    a = ap.parse_args()
    if a.meta:
        cats = from_source(a.meta)
        origin = a.meta
    else:
        import torchvision
        from torchvision.models._meta import _IMAGENET_CATEGORIES as cats

        origin = f"torchvision {torchvision.__version__}"
    if len(cats) != 1000 or any("\n" in c or not c for c in cats):
        sys.exit(f"{origin}: expected 1000 one-line names, got {len(cats)}")
    text = "".join(c + "\n" for c in cats)
    if a.check:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} differs from {origin}")
        print(f"{OUT}: same as {origin}")
        return
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(cats)} names from {origin})")


if __name__ == "__main__":
    main()
