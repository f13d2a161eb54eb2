#!/usr/bin/env python3
"""Tables of docs/RESULTS.md from the DynaBERT experiment's grid reports.

    scripts/dynabert_results.py [RUNS_DIR] [NAME=TEACHER_EVAL_JSON:GRID_JSON ...]

Without pairs, reads RUNS_DIR/dyna-exp/<task>-grid/grid.json for the four tasks that exist, with
the teacher's scores from RUNS_DIR/ft-teacher/<task>/eval.json. Prints a summary (the issue's
targets) and one table per task: test score of each series at every (width, depth).
"""
import json
import os
import sys

SERIES = ["DynaBERT", "DynaBERT + stage 3", "DynaBERT_W", "rewired only", "separate"]


def load(teacher_eval, grid_json):
    teacher = json.load(open(teacher_eval))
    grid = json.load(open(grid_json))
    series = {s["name"]: {(p["width"], p["depth"]): p for p in s["points"]} for s in grid["series"]}
    split = "test" if "test" in teacher else "dev"
    return teacher[split]["main"], split, series


def score(p, split):
    return p["scores"].get(split, p["scores"].get("dev"))


def main():
    runs = sys.argv[1] if len(sys.argv) > 1 and "=" not in sys.argv[1] else "runs"
    pairs = [a for a in sys.argv[1:] if "=" in a]
    runs_list = []
    if pairs:
        for a in pairs:
            name, paths = a.split("=", 1)
            t, g = paths.split(":", 1)
            runs_list.append((name, t, g))
    else:
        for task in ["spam", "debsec", "para", "wngloss"]:
            g = os.path.join(runs, "dyna-exp", task + "-grid", "grid.json")
            if os.path.exists(g):
                runs_list.append((task, os.path.join(runs, "ft-teacher", task, "eval.json"), g))

    print("| task | teacher | DynaBERT (1, 1) | % | DynaBERT (0.25, 0.5) | % |"
          " points > (a) | points >= (b) | DynaBERT_W (1, 1) | + stage 3: (1, 1), (0.25, 0.5),"
          " points > (a), points >= (b) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    tables = []
    for name, t, g in runs_list:
        teacher, split, series = load(t, g)
        d = series["DynaBERT"]
        full, small = score(d[(1.0, 1.0)], split), score(d[(0.25, 0.5)], split)
        a = series.get("rewired only", {})
        b = series.get("separate", {})
        beat_a = sum(score(p, split) > score(a[k], split) for k, p in d.items() if k in a)
        beat_b = sum(score(p, split) >= score(b[k], split) for k, p in d.items() if k in b)
        w = series.get("DynaBERT_W", {}).get((1.0, 1.0))
        wcell = f"{score(w, split):.4f}" if w else "-"
        bcell = f"{beat_b}/{len(b)}" if b else "-"
        s3 = series.get("DynaBERT + stage 3")
        s3cell = "-"
        if s3:
            f3, m3 = score(s3[(1.0, 1.0)], split), score(s3[(0.25, 0.5)], split)
            a3 = sum(score(p, split) > score(a[k], split) for k, p in s3.items() if k in a)
            b3 = sum(score(p, split) >= score(b[k], split) for k, p in s3.items() if k in b)
            s3cell = (f"{f3:.4f} ({100 * f3 / teacher:.1f}%), {m3:.4f} ({100 * m3 / teacher:.1f}%),"
                      f" {a3}/{len(a)}" + (f", {b3}/{len(b)}" if b else ""))
        print(f"| {name} | {teacher:.4f} | {full:.4f} | {100 * full / teacher:.1f}% | {small:.4f} |"
              f" {100 * small / teacher:.1f}% | {beat_a}/{len(a)} | {bcell} | {wcell} | {s3cell} |")

        names = [s for s in SERIES if s in series]
        rows = [f"\n#### {name} ({split} score; teacher {teacher:.4f})\n",
                "| width | depth | params (M) | GFLOPs | p50 ms b1 | p50 ms b8 | "
                + " | ".join(names) + " |",
                "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names)]
        for key, p in d.items():
            cells = []
            for s in names:
                q = series[s].get(key)
                cells.append(f"{score(q, split):.4f}" if q else "-")
            lat = p["latency_p50_ms"]
            rows.append(f"| {key[0]:.2f} | {key[1]:.2f} | {p['parameters'] / 1e6:.2f} |"
                        f" {p['gflops']:.3f} | {lat.get('batch1', 0):.2f} | {lat.get('batch8', 0):.2f} | "
                        + " | ".join(cells) + " |")
        tables.append("\n".join(rows))
    print("\n".join(tables))


if __name__ == "__main__":
    main()
