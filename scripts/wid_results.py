#!/usr/bin/env python3
"""The WID experiment's tables (docs/RESULTS.md) from runs/wid-exp and the teacher's runs.

    scripts/wid_results.py [RUNS_DIR] [plain|kd|kd-eN]

Per model: test main metric of each task, their mean as % of the teacher's mean, encoder
parameters and encoder GFLOPs per 128-token sequence (from config.json), MLM validation loss.
plain (default): the students fine-tuned with the teacher's recipe (NAME-METHOD-ft), against
runs/ft-teacher. kd: the students distilled from the teacher fine-tuned with a dev-chosen learning rate
(runs/ft-teacher-grid, `LRS="1e-4 5e-4" scripts/finetune-tasks.sh models/teacher-mini
runs/ft-teacher-grid`) into NAME-METHOD-kd (`FINETUNE=kd scripts/wid-experiment.sh`), against that
teacher; the last column lists the learning rates (x 1e-4, task order). kd-eN: the same with N
fine-tuning passes on every task for teacher and students (`FINETUNE=kd FT_EPOCHS=N`):
runs/ft-teacher-grid-eN and NAME-METHOD-kd-eN. kdX-eN: the same against runs/ft-teacher-gridX-eN
(e.g. kd2-e3: every model's learning rate chosen on dev from a wider grid, `pick-on-dev.py`).

Every NAME with a fine-tuned student in the protocol is listed (the recorded runs first, in the
order of docs/RESULTS.md, then the others by name). Further fine-tuning seeds of a student go
into NAME-METHOD-SUFFIX-seedK (`SEED=K scripts/finetune-tasks.sh ...`); a task's score is then the
mean over the seeds that have it, and the last column gives the seeds per task.
"""
import json, os, re, sys

runs = sys.argv[1] if len(sys.argv) > 1 else "runs"
protocol = sys.argv[2] if len(sys.argv) > 2 else "plain"
tasks = ["spam", "debsec", "para", "wngloss"]


def scores(ft_dirs):
    """Per task: the mean test score over the seed directories that have it, and its count."""
    out, counts, lrs = {}, {}, []
    for t in tasks:
        runs_t = [json.load(open(p)) for p in (os.path.join(d, t, "eval.json") for d in ft_dirs)
                  if os.path.exists(p)]
        if runs_t:
            out[t] = sum(r["test"]["main"] for r in runs_t) / len(runs_t)
            counts[t] = len(runs_t)
            lrs.append(f'{runs_t[0].get("training", {}).get("lr", 1e-4) / 1e-4:g}')
    return out, counts, "/".join(lrs)


def seed_dirs(ft_dir):
    """ft_dir and its further seeds ft_dir-seedK, in seed order."""
    parent, base = os.path.split(ft_dir)
    extra = sorted((int(m.group(1)), os.path.join(parent, n)) for n in os.listdir(parent or ".")
                   if (m := re.fullmatch(re.escape(base) + r"-seed(\d+)", n)))
    return [ft_dir] + [d for _, d in extra]


def shape(model_dir):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    params = (c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]) * H + 2 * H
    params += L * (4 * (H * H + H) + 2 * H + 2 * H * I + I + H + 2 * H)
    T = 128
    gflops = L * (2 * T * H * H * 4 + 2 * T * T * H * 2 + 2 * T * H * I * 2) / 1e9
    return H, params, gflops


def validation_loss(log):
    """The exported model's MLM validation loss, and whether it is only the compactor model's.

    A WID log states the merged student's loss; older logs end on the compactor model's, whose removed entries are pulled towards zero but not cut."""
    if not os.path.exists(log):
        return None, False
    text = open(log).read()
    merged = re.findall(r"merged student validation loss ([0-9.]+)", text)
    if merged:
        return float(merged[-1]), False
    losses = re.findall(r"validation loss ([0-9.]+)", text)
    stale = "wid: student" in text  # a WID log without the merged-student line
    return (float(losses[-1]), stale) if losses else (None, False)


teacher_dir = os.path.join(runs, "ft-teacher")
rows = [("teacher (mini)", "models/teacher-mini", *scores([teacher_dir]),
         (5.962, False))]
kd = protocol.startswith("kd")
if kd:
    variant, epochs = re.fullmatch(r"kd(.*?)(?:-e(\d+))?", protocol).groups()
    grid = "ft-teacher-grid" + variant + (f"-e{epochs}" if epochs else "")
    teacher_dir = os.path.join(runs, grid)
    rows.append((f"teacher (mini), lr chosen on dev{f', {epochs} epochs' if epochs else ''}",
                 "models/teacher-mini", *scores([teacher_dir]), (5.962, False)))
rows = [r for r in rows if r[2]] or rows[-1:]  # the plain teacher's runs may not be on this machine
teacher = rows[-1][2]
if len(teacher) < len(tasks):
    sys.exit(f"wid_results.py: {teacher_dir} has the teacher's runs for {sorted(teacher) or 'no task'}; "
             f"the table needs TASK/eval.json for each of {tasks}")
t_mean = sum(teacher[t] for t in tasks) / len(tasks)
exp = os.path.join(runs, "wid-exp")
suffix = protocol if kd else "ft"
# widd: WID for part of the budget, then dense MLM (wid-experiment.sh); its loss is the dense run's.
methods = [("wid", "wid/student"), ("widd", "widd/model"), ("trunc", "trunc/model"),
           ("rand", "rand/model")]
recorded = ["x067", "x067all", "x067l20", "x025", "x025v2", "x025l20", "x025w6"]
found = {m.group(1) for n in os.listdir(exp)
         if (m := re.fullmatch(r"(.+)-(?:wid|widd|trunc|rand)-" + re.escape(suffix), n))}
for size in [s for s in recorded if s in found] + sorted(found - set(recorded)):
    for method, model_sub in methods:
        ft = os.path.join(exp, f"{size}-{method}-{suffix}")
        model = os.path.join(exp, f"{size}-{model_sub}")
        if not os.path.isdir(ft) or not os.path.exists(os.path.join(model, "config.json")):
            continue
        log = os.path.join(exp, f"{size}-{method}.log")
        rows.append((f"{size} {method}", model, *scores(seed_dirs(ft)), validation_loss(log)))

seeded = any(c != 1 for _, _, _, counts, _, _ in rows for c in counts.values())
print("| model | hidden | encoder params (M) | GFLOPs/seq | MLM val loss | "
      + " | ".join(tasks) + " | mean | % of teacher |" + (" lr |" if kd else "")
      + (" seeds |" if seeded else ""))
print("|---|---:|---:|---:|---:|" + "---:|" * len(tasks) + "---:|---:|"
      + ("---|" if kd else "") + ("---|" if seeded else ""))
for name, model, s, counts, lrs, vl in rows:
    H, params, gflops = shape(model)
    cells = [f"{s[t]:.4f}" if t in s else "-" for t in tasks]
    mean = sum(s[t] for t in tasks) / len(tasks) if len(s) == len(tasks) else None
    print(f"| {name} | {H} | {params / 1e6:.2f} | {gflops:.3f} | "
          + (f"{vl[0]:.3f}" + ("c" if vl[1] else "") if vl[0] else "-") + " | "
          + " | ".join(cells) + " | "
          + (f"{mean:.4f} | {100 * mean / t_mean:.1f}%" if mean else "- | -") + " |"
          + (f" {lrs} |" if kd else "")
          + (" " + "/".join(str(counts.get(t, 0)) for t in tasks) + " |" if seeded else ""))
if any(vl[1] for *_, vl in rows):
    print("\nc: the compactor model's loss; the log predates the merged student's line "
          "(`slimbert eval-mlm STUDENT --shards data/shards` scores the student).")
