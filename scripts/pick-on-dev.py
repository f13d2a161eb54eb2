#!/usr/bin/env python3
"""Per task, the fine-tuning run with the best dev score among several finished ones.

    scripts/pick-on-dev.py [--tasks T1,T2] OUT_DIR RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds TASK/eval.json (a finetune-tasks.sh output, e.g. one per learning rate).
OUT_DIR/TASK becomes a link to the TASK run with the highest dev "main" score (ties: the
first RUN_DIR given); test scores are not looked at. Every task found in a RUN_DIR is linked,
or only those of --tasks (a task the grid did not cover for this seed stays out). This is
the learning-rate choice on dev for runs made separately (another learning rate added
later, a run reused from an earlier experiment); within one run, `slimbert finetune --lr A,B,C`
chooses (finetune-tasks.sh passes LRS to it). Prints the choice per task.
"""
import argparse, json, os, sys

ap = argparse.ArgumentParser(usage=__doc__.strip().splitlines()[2].strip())
ap.add_argument("--tasks", help="comma-separated tasks to link (default: every task found)")
ap.add_argument("out")
ap.add_argument("run_dirs", nargs="+")
args = ap.parse_args()
for d in args.run_dirs:
    if not os.path.isdir(d):
        sys.exit(f"pick-on-dev.py: {d} is not a directory")
found = {t for d in args.run_dirs for t in os.listdir(d)
         if os.path.isfile(os.path.join(d, t, "eval.json"))}
tasks = sorted(found) if args.tasks is None else args.tasks.split(",")
for task in tasks:
    if task not in found:
        sys.exit(f"pick-on-dev.py: no {task}/eval.json under {', '.join(args.run_dirs)}")
if not tasks:
    sys.exit(f"pick-on-dev.py: no TASK/eval.json under {', '.join(args.run_dirs)}")
os.makedirs(args.out, exist_ok=True)
for task in tasks:
    best = None
    for d in args.run_dirs:
        path = os.path.join(d, task, "eval.json")
        if not os.path.isfile(path):
            continue
        report = json.load(open(path))
        dev = report.get("dev", {}).get("main")
        if dev is None:
            sys.exit(f"pick-on-dev.py: {path} has no dev.main score")
        if best is None or dev > best[0]:
            best = (dev, os.path.realpath(os.path.join(d, task)), report.get("training", {}).get("lr"))
    link = os.path.join(args.out, task)
    if os.path.lexists(link) and not os.path.islink(link):
        sys.exit(f"pick-on-dev.py: {link} exists and is not a link; not replacing it")
    tmp = link + ".tmp-link"
    if os.path.lexists(tmp):
        os.remove(tmp)
    # Relative to where the link really lives, so it holds if OUT_DIR's path has links in it.
    os.symlink(os.path.relpath(best[1], os.path.realpath(args.out)), tmp)
    os.replace(tmp, link)  # atomic: a reader sees the old choice or the new one
    lr = "?" if best[2] is None else f"{best[2]:g}"
    print(f"{task}: dev {best[0]:.4f} at lr {lr} ({os.path.relpath(best[1])})")
