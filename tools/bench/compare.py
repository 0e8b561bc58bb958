#!/usr/bin/env python3
"""Join `cargo xtask bench --json` records with tools/bench/torch_peers.py
records (same op, shape and thread count) into a markdown table of GOP/s
(G elements/s for quantize/dequantize) and rquant/peer ratios.

Usage: python compare.py RQUANT.json PEERS.json [--isa avx512vnni]"""
import argparse, json

def key(r):
    return (r["op"], json.dumps(r["shape"], sort_keys=True), r["threads"])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rquant"); ap.add_argument("peers")
    ap.add_argument("--isa", default=None, help="rquant ISA path (default: the fastest per row)")
    a = ap.parse_args()
    rq, peers = json.load(open(a.rquant)), json.load(open(a.peers))
    best = {}
    for r in rq:
        if r["engine"] == "reference":
            continue
        if a.isa and r["op"] != "fp32_linear" and r["isa"] != a.isa:
            continue
        k = key(r)
        if k not in best or r["gops"] > best[k]["gops"]:
            best[k] = r
    by = {}
    for p in peers:
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

if __name__ == "__main__":
    main()
