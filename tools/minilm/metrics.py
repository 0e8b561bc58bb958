#!/usr/bin/env python3
"""Lee-corpus metrics for embedding files (.npy, [50, dim]).

usage: metrics.py SIMILARITIES0-1.TXT REF.npy A.npy [B.npy ...]
For each file: Spearman correlation between cosine(emb_i, emb_j) and the mean
human rating over the 1225 pairs i<j, and the per-document cosine to REF
(min / mean). Prints a Markdown table and one JSON line per file.
"""
import json, sys

import numpy as np


def rank(v):
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    r[order] = np.arange(len(v), dtype=float)
    sv = v[order]
    i = 0
    while i < len(v):  # average ranks over ties
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    ra -= ra.mean(); rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def main():
    sims = np.loadtxt(sys.argv[1])
    ref = np.load(sys.argv[2]).astype(np.float64)
    n = sims.shape[0]
    iu = np.triu_indices(n, 1)
    human = sims[iu]
    print("| file | Spearman | cos to ref min | mean |")
    print("|---|---|---|---|")
    rows = []
    for f in sys.argv[3:]:
        e = np.load(f).astype(np.float64)
        if e.shape[0] != n:
            raise SystemExit(f"{f}: {e.shape[0]} rows, expected {n}")
        en = e / np.linalg.norm(e, axis=1, keepdims=True)
        rho = spearman((en @ en.T)[iu], human)
        rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        cos = (en * rn).sum(1)
        print(f"| {f} | {rho:.4f} | {cos.min():.6f} | {cos.mean():.6f} |")
        rows.append({"file": f, "spearman": rho, "cos_min": float(cos.min()),
                     "cos_mean": float(cos.mean())})
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
