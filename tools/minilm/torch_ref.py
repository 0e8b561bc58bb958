#!/usr/bin/env python3
"""PyTorch reference for all-MiniLM-L6-v2 sentence embeddings.

A plain-PyTorch BertModel (nn.Linear / nn.LayerNorm / erf GELU, eager
attention with an additive padding mask, as Hugging Face's BertModel) with the
sentence-transformers pipeline: texts sorted by length, batches of 32 padded
to the longest, truncation to max_seq_length 256, mean pooling over the mask,
L2 normalisation. Variants: fp32, and torch.ao.quantization.quantize_dynamic
on every nn.Linear (per-tensor default qconfig, or per-channel), and the
same with the word and position embedding tables quantized by
float_qparams_weight_only_qconfig (dyn_emb, dyn_pc_emb).

usage: torch_ref.py --model-dir DIR --texts FILE(utf-8) --out PREFIX
                    [--variants fp32,dyn,dyn_pc,dyn_emb,dyn_pc_emb] [--threads N] [--repeat R]
Writes PREFIX.<variant>.npy and prints one JSON line per variant with the
embedding time (best of --repeat runs, model already built).
"""
import argparse, json, math, time, warnings

warnings.filterwarnings("ignore")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer


class Layer(nn.Module):
    def __init__(s, h, heads, inter, eps):
        super().__init__()
        s.heads = heads
        s.query, s.key, s.value, s.attn_out = (nn.Linear(h, h) for _ in range(4))
        s.ln1 = nn.LayerNorm(h, eps=eps)
        s.inter = nn.Linear(h, inter)
        s.out = nn.Linear(inter, h)
        s.ln2 = nn.LayerNorm(h, eps=eps)

    def forward(s, x, add_mask):
        b, t, h = x.shape
        d = h // s.heads
        sh = lambda y: y.view(b, t, s.heads, d).transpose(1, 2)
        q, k, v = sh(s.query(x)), sh(s.key(x)), sh(s.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + add_mask
        ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, t, h)
        a = s.ln1(s.attn_out(ctx) + x)
        return s.ln2(s.out(F.gelu(s.inter(a))) + a)


class Bert(nn.Module):
    def __init__(s, c):
        super().__init__()
        h = c["hidden_size"]
        s.word = nn.Embedding(c["vocab_size"], h)
        s.pos = nn.Embedding(c["max_position_embeddings"], h)
        s.tt = nn.Embedding(c["type_vocab_size"], h)
        s.ln = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        s.layers = nn.ModuleList(
            Layer(h, c["num_attention_heads"], c["intermediate_size"], c["layer_norm_eps"])
            for _ in range(c["num_hidden_layers"]))

    def forward(s, ids, tt, mask):
        t = ids.shape[1]
        x = s.ln(s.word(ids) + s.tt(tt) + s.pos(torch.arange(t)[None]))
        add = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for l in s.layers:
            x = l(x, add)
        m = mask[..., None].float()
        e = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(e, p=2, dim=1)


def load(model_dir):
    c = json.load(open(f"{model_dir}/config.json"))
    m = Bert(c)
    sd = load_file(f"{model_dir}/model.safetensors")
    names = {"word.weight": "embeddings.word_embeddings.weight",
             "pos.weight": "embeddings.position_embeddings.weight",
             "tt.weight": "embeddings.token_type_embeddings.weight",
             "ln.weight": "embeddings.LayerNorm.weight", "ln.bias": "embeddings.LayerNorm.bias"}
    sub = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "attn_out": "attention.output.dense",
           "ln1": "attention.output.LayerNorm", "inter": "intermediate.dense",
           "out": "output.dense", "ln2": "output.LayerNorm"}
    for i in range(c["num_hidden_layers"]):
        for a, b in sub.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{a}.{p}"] = f"encoder.layer.{i}.{b}.{p}"
    m.load_state_dict({k: sd[v] for k, v in names.items()})
    return m.eval()


def encode(model, tok, texts, batch_size=32):
    encs = [tok.encode(t) for t in texts]
    # sentence-transformers sorts by text length in characters, longest first.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = [None] * len(texts)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            t = max(len(encs[i].ids) for i in idx)
            ids = torch.zeros(len(idx), t, dtype=torch.long)
            tt = torch.zeros_like(ids)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[r, :n] = torch.tensor(encs[i].ids)
                tt[r, :n] = torch.tensor(encs[i].type_ids)
                mask[r, :n] = 1
            e = model(ids, tt, mask)
            for r, i in enumerate(idx):
                out[i] = e[r].numpy()
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="fp32,dyn,dyn_pc")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.quantized.engine = "x86"
    texts = open(a.texts, encoding="utf-8").read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    tok = Tokenizer.from_file(f"{a.model_dir}/tokenizer.json")
    tok.enable_truncation(256)
    tok.no_padding()
    for v in a.variants.split(","):
        m = load(a.model_dir)
        if v == "dyn":
            m = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
        elif v == "dyn_pc":
            m = torch.ao.quantization.quantize_dynamic(
                m, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig})
        elif v in ("dyn_emb", "dyn_pc_emb"):
            # Linear as dyn / dyn_pc, and the word and position nn.Embedding
            # tables weight-only quint8 per row (rquant embed --int8's
            # default; the token-type table stays fp32).
            q = torch.ao.quantization
            lin = q.per_channel_dynamic_qconfig if v == "dyn_pc_emb" else q.default_dynamic_qconfig
            fq = q.float_qparams_weight_only_qconfig
            m = q.quantize_dynamic(m, {nn.Linear: lin, "word": fq, "pos": fq})
        elif v != "fp32":
            raise SystemExit(f"unknown variant {v}")
        best = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            e = encode(m, tok, texts)
            best = min(best, time.perf_counter() - t0)
        np.save(f"{a.out}.{v}.npy", e.astype(np.float32))
        print(json.dumps({"variant": v, "threads": a.threads, "texts": len(texts),
                          "seconds": round(best, 4)}), flush=True)


if __name__ == "__main__":
    main()
