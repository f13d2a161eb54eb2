#!/usr/bin/env python3
"""P2: does a sub-network's latency fall with its FLOPs? For every (width, depth) of the default
DynaBERT grid, slimbert's p50 relative to the full model against its FLOPs relative to the full
model, fp32 and int8, one run.

  bench/subnets.py SLIMBERT MODEL [--batch 1] [--seq 128] [--iters 20]
Prints a Markdown table and one JSON line per point; the goal is
latency(w, d) / latency(1, 1) <= 1.25 x FLOPs(w, d) / FLOPs(1, 1).
"""
import argparse
import json
import subprocess
import sys

WIDTHS = [1.0, 0.75, 0.5, 0.25]
DEPTHS = [1.0, 0.75, 0.5]


def bench(a, width, depth, int8):
    cmd = [a.slimbert, "bench", a.model, "--batch", str(a.batch), "--seq", str(a.seq), "--iters",
           str(a.iters), "--warmup", "3", "--width", str(width), "--depth", str(depth), "--json"]
    if int8:
        cmd.append("--int8")
    j = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    j["gflops"] = j["gflop_per_s"] * j["p50_ms"] / 1e3 / a.batch
    return j


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slimbert")
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    print(f"| width | depth | FLOPs ratio | fp32 p50 (ms) | fp32 latency ratio | fp32 ratio / FLOPs ratio "
          f"| int8 p50 (ms) | int8 latency ratio | int8 ratio / FLOPs ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    full = {q: bench(a, 1.0, 1.0, q) for q in (False, True)}
    worst = {False: 0.0, True: 0.0}
    for d in DEPTHS:
        for w in WIDTHS:
            row = [f"{w}", f"{d}"]
            res = {q: (full[q] if (w, d) == (1.0, 1.0) else bench(a, w, d, q)) for q in (False, True)}
            flops = res[False]["gflops"] / full[False]["gflops"]
            row.append(f"{flops:.3f}")
            for q in (False, True):
                lat = res[q]["p50_ms"] / full[q]["p50_ms"]
                worst[q] = max(worst[q], lat / flops)
                row += [f"{res[q]['p50_ms']:.2f}", f"{lat:.3f}", f"{lat / flops:.2f}"]
                print(json.dumps({"width": w, "depth": d, "int8": q, "p50_ms": res[q]["p50_ms"],
                                  "latency_ratio": lat, "flops_ratio": flops}), file=sys.stderr)
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nworst latency ratio / FLOPs ratio: fp32 {worst[False]:.2f}, int8 {worst[True]:.2f} "
          f"(goal <= 1.25); threads {full[False]['threads']} / {full[True]['threads']}")


if __name__ == "__main__":
    main()
