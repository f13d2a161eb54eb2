#!/usr/bin/env python3
"""Per task, the fine-tuning run with the best dev score among several finished ones.

    scripts/pick-on-dev.py OUT_DIR RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds TASK/eval.json (a finetune-tasks.sh output, e.g. one per learning rate).
OUT_DIR/TASK becomes a link to the TASK run with the highest dev "main" score (ties: the
first RUN_DIR given); test scores are not looked at. A task is linked when at least one RUN_DIR
has it. This is finetune-tasks.sh's LRS grid selection, for runs made separately (another
learning rate added later, a run reused from an earlier protocol). Prints the choice per task.
"""
import json, os, sys

if len(sys.argv) < 3:
    sys.exit("usage: scripts/pick-on-dev.py OUT_DIR RUN_DIR [RUN_DIR ...]")
out, run_dirs = sys.argv[1], sys.argv[2:]
for d in run_dirs:
    if not os.path.isdir(d):
        sys.exit(f"pick-on-dev.py: {d} is not a directory")
tasks = sorted({t for d in run_dirs for t in os.listdir(d)
                if os.path.isfile(os.path.join(d, t, "eval.json"))})
if not tasks:
    sys.exit(f"pick-on-dev.py: no TASK/eval.json under {', '.join(run_dirs)}")
os.makedirs(out, exist_ok=True)
for task in tasks:
    best = None
    for d in run_dirs:
        path = os.path.join(d, task, "eval.json")
        if not os.path.isfile(path):
            continue
        report = json.load(open(path))
        dev = report.get("dev", {}).get("main")
        if dev is None:
            sys.exit(f"pick-on-dev.py: {path} has no dev.main score")
        lr = report.get("training", {}).get("lr")
        if best is None or dev > best[0]:
            best = (dev, os.path.realpath(os.path.join(d, task)), lr)
    link = os.path.join(out, task)
    if os.path.lexists(link) and not os.path.islink(link):
        sys.exit(f"pick-on-dev.py: {link} exists and is not a link; not replacing it")
    tmp = link + ".tmp-link"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.relpath(best[1], out), tmp)
    os.replace(tmp, link)  # atomic: a reader sees the old choice or the new one
    lr = "?" if best[2] is None else f"{best[2]:g}"
    print(f"{task}: dev {best[0]:.4f} at lr {lr} ({os.path.relpath(best[1])})")
