#!/usr/bin/env python3
"""Join `cargo xtask bench --json` records with tools/bench/torch_peers.py
records (same op, shape and thread count) into a markdown table of GOP/s
(G elements/s for quantize/dequantize) and rquant/peer ratios.

Whole models and single layers (tools/bench/torch_models.py records, op "model"
and "conv_layer"): rquant's records with the same op, shape ({"model", "batch"}
or the layer's shape) and threads are joined with PyTorch's fp32, int8 x86 and
int8 fbgemm rows into a table of ms per image and speed-ups (PyTorch time /
rquant time; > 1 means rquant is faster). rquant's int8 row per key is the
fastest non-reference engine/ISA (or the --isa one); its fp32 row, if any, has
"variant": "fp32". Records without "variant" count as int8.

Repeated runs: RQUANT may list several files separated by commas and the peers
files may repeat a configuration; records of the same op, shape, threads,
engine and ISA (and variant) are then reduced to their median time, so that
interleaved rounds on a noisy machine give one ratio of medians per row.

Usage: python compare.py RQUANT.json[,MORE.json...] PEERS.json [MORE_PEERS.json ...] [--isa avx512vnni]"""
import argparse, json, statistics

MODEL_OPS = ("model", "conv_layer")
TORCH = ("torch-fp32", "torch-x86", "torch-fbgemm")


def key(r):
    return (r["op"], json.dumps(r["shape"], sort_keys=True), r["threads"])


def medians(recs):
    """One record per (key, engine, isa, variant): the median time's."""
    groups = {}
    for r in recs:
        groups.setdefault((key(r), r["engine"], r.get("isa", ""), r.get("variant")), []).append(r)
    out = []
    for g in groups.values():
        t = statistics.median(r["median_s"] for r in g)
        r = dict(min(g, key=lambda r: abs(r["median_s"] - t)))
        if "gops" in r and r.get("gops") is not None:
            r["gops"] = r["gops"] * r["median_s"] / t
        r["median_s"] = t
        r["runs"] = len(g)
        out.append(r)
    return out


def gemm_table(rq, peers, isa):
    best = {}
    for r in rq:
        if r["engine"] == "reference" or r["op"] in MODEL_OPS:
            continue
        if isa and r["op"] != "fp32_linear" and r["isa"] != isa:
            continue
        k = key(r)
        if k not in best or r["gops"] > best[k]["gops"]:
            best[k] = r
    if not best:
        return
    by = {}
    for p in peers:
        if p["op"] not in MODEL_OPS:
            by.setdefault(key(p), {})[p["engine"]] = p["gops"]
    print("| op | shape | thr | rquant (isa) | torch | ort | rquant/torch | rquant/ort |")
    print("|---|---|---|---|---|---|---|---|")
    for k, r in sorted(best.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        p = by.get(k, {})
        t, o = p.get("torch"), p.get("ort")
        shape = ",".join(f"{n}={v}" for n, v in r["shape"].items())
        f = lambda v: f"{v:.1f}" if v is not None else "-"
        ratio = lambda v: f"{r['gops'] / v:.2f}x" if v else "-"
        print(f"| {r['op']} | {shape} | {r['threads']} | {r['gops']:.1f} ({r['isa']}) | {f(t)} | {f(o)} | {ratio(t)} | {ratio(o)} |")
    print()


def model_tables(rq, peers, isa):
    ours = {}  # key -> {"int8": rec, "fp32": rec}
    for r in rq:
        if r["op"] not in MODEL_OPS or r["engine"] == "reference" or r["engine"].startswith("torch"):
            continue
        v = r.get("variant", "int8")
        if isa and v == "int8" and r["isa"] != isa:
            continue
        slot = ours.setdefault(key(r), {})
        if v not in slot or r["median_s"] < slot[v]["median_s"]:
            slot[v] = r
    theirs = {}
    for p in peers:
        if p["op"] in MODEL_OPS and p["engine"] in TORCH:
            theirs.setdefault(key(p), {})[p["engine"]] = p
    keys = sorted(set(ours) | set(theirs), key=lambda k: (k[0] != "model", k[2], k[1]))
    for op in MODEL_OPS:
        ks = [k for k in keys if k[0] == op]
        if not ks:
            continue
        if op == "model":
            print("ms per image (batch time / batch); speed-up = PyTorch time / rquant int8 time")
            print("| model | batch | thr | rquant int8 (engine/isa) | rquant fp32 | torch fp32 | torch int8 x86 "
                  "| torch int8 fbgemm | vs torch fp32 | vs torch x86 | vs torch fbgemm |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
        else:
            print("int8 conv layers alone, ms per batch and GOP/s; speed-up = PyTorch time / rquant time")
            print("| model | layer | C_in→C_out k/s g | H×W | batch | thr | rquant (engine/isa) | torch x86 "
                  "| torch fbgemm | vs x86 | vs fbgemm |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
        for k in ks:
            o, t = ours.get(k, {}), theirs.get(k, {})
            any_rec = next(iter(o.values()), None) or next(iter(t.values()))
            s, thr = any_rec["shape"], k[2]
            r8 = o.get("int8")
            sp = lambda e: f"{t[e]['median_s'] / r8['median_s']:.2f}x" if r8 and e in t else "-"
            if op == "model":
                b = s["batch"]
                ms = lambda rec: f"{rec['median_s'] * 1e3 / b:.3f}" if rec else "-"
                who = f" ({r8['engine']}/{r8['isa']})" if r8 else ""
                print(f"| {s['model']} | {b} | {thr} | {ms(r8)}{who} | {ms(o.get('fp32'))} | {ms(t.get('torch-fp32'))} "
                      f"| {ms(t.get('torch-x86'))} | {ms(t.get('torch-fbgemm'))} | {sp('torch-fp32')} "
                      f"| {sp('torch-x86')} | {sp('torch-fbgemm')} |")
            else:
                def cell(rec):
                    if not rec:
                        return "-"
                    g = rec.get("gops")
                    return f"{rec['median_s'] * 1e3:.3f}" + (f" ({g:.0f})" if g else "")
                who = f" {r8['engine']}/{r8['isa']}" if r8 else ""
                print(f"| {s['model']} | {s['layer']} | {s['C_in']}→{s['C_out']} {s['k']}/{s['stride']} g{s['groups']} "
                      f"| {s['H']}×{s['W']} | {s['batch']} | {thr} | {cell(r8)}{who} | {cell(t.get('torch-x86'))} "
                      f"| {cell(t.get('torch-fbgemm'))} | {sp('torch-x86')} | {sp('torch-fbgemm')} |")
        print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rquant"); ap.add_argument("peers", nargs="+")
    ap.add_argument("--isa", default=None, help="rquant ISA path (default: the fastest per row)")
    a = ap.parse_args()
    rq = medians([r for f in a.rquant.split(",") for r in json.load(open(f))])
    peers = medians([r for p in a.peers for r in json.load(open(p))])
    gemm_table(rq, peers, a.isa)
    model_tables(rq, peers, a.isa)


if __name__ == "__main__":
    main()
