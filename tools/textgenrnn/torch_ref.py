#!/usr/bin/env python3
"""PyTorch reference for the textgenrnn char-LSTM: next-character top-1 and
cross-entropy on the first N characters of a text (each position predicted
from the previous 40 characters, left-padded with id 0; unknown characters
are id 0, as textgenrnn encodes them), fp32 and quantize_dynamic
({nn.LSTM, nn.Linear}, qint8).

usage: torch_ref.py MODEL.safetensors VOCAB.json TEXT(latin-1) [--chars N] [--threads T] [--variants fp32,dyn]
"""
import argparse, json, time, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

MAXLEN = 40


class CharLstm(nn.Module):
    def __init__(s):
        super().__init__()
        s.embedding = nn.Embedding(465, 100)
        s.lstm1 = nn.LSTM(100, 128, batch_first=True)
        s.lstm2 = nn.LSTM(128, 128, batch_first=True)
        s.attention = nn.Linear(356, 1, bias=False)
        s.output = nn.Linear(356, 465)

    def forward(s, ids):
        e = s.embedding(ids)
        h1, _ = s.lstm1(e)
        h2, _ = s.lstm2(h1)
        x = torch.cat([e, h1, h2], dim=2)
        logits = s.attention(x)[..., 0]
        a = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        a = a / (a.sum(dim=1, keepdim=True) + 1e-7)
        return s.output((x * a[..., None]).sum(1))


def contexts(text, vocab, n):
    ids = [vocab.get(c, 0) for c in text[:n]]
    x = np.zeros((n, MAXLEN), dtype=np.int64)
    for i in range(n):
        ctx = ids[max(0, i - MAXLEN):i]
        if ctx:
            x[i, MAXLEN - len(ctx):] = ctx
    return torch.from_numpy(x), torch.tensor(ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("vocab"); ap.add_argument("text")
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--variants", default="fp32,dyn")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.quantized.engine = "x86"
    vocab = json.load(open(a.vocab, encoding="utf-8"))
    text = open(a.text, encoding="latin-1").read()
    x, y = contexts(text, vocab, a.chars)
    sd = load_file(a.model)
    sd["attention.weight"] = sd["attention.weight"][None]
    for v in a.variants.split(","):
        m = CharLstm()
        m.load_state_dict(sd)
        m.eval()
        if v == "dyn":
            m = torch.ao.quantization.quantize_dynamic(m, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = torch.cat([m(x[i:i + a.batch]) for i in range(0, len(x), a.batch)])
        secs = time.perf_counter() - t0
        top1 = (logits.argmax(1) == y).float().mean().item()
        ce = nn.functional.cross_entropy(logits, y).item()
        print(json.dumps({"variant": v, "top1": round(top1, 4), "ce": round(ce, 4),
                          "chars": a.chars, "threads": a.threads, "seconds": round(secs, 3)}), flush=True)


if __name__ == "__main__":
    main()
