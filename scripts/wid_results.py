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
runs/ft-teacher-grid-eN and NAME-METHOD-kd-eN.
"""
import json, os, re, sys

runs = sys.argv[1] if len(sys.argv) > 1 else "runs"
protocol = sys.argv[2] if len(sys.argv) > 2 else "plain"
tasks = ["spam", "debsec", "para", "wngloss"]


def scores(ft_dir):
    out, lrs = {}, []
    for t in tasks:
        p = os.path.join(ft_dir, t, "eval.json")
        if os.path.exists(p):
            r = json.load(open(p))
            out[t] = r["test"]["main"]
            lrs.append(f'{r.get("training", {}).get("lr", 1e-4) / 1e-4:g}')
    return out, "/".join(lrs)


def shape(model_dir):
    c = json.load(open(os.path.join(model_dir, "config.json")))
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    params = (c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]) * H + 2 * H
    params += L * (4 * (H * H + H) + 2 * H + 2 * H * I + I + H + 2 * H)
    T = 128
    gflops = L * (2 * T * H * H * 4 + 2 * T * T * H * 2 + 2 * T * H * I * 2) / 1e9
    return H, params, gflops


def validation_loss(log):
    if not os.path.exists(log):
        return None
    losses = re.findall(r"validation loss ([0-9.]+)", open(log).read())
    return float(losses[-1]) if losses else None


rows = [("teacher (mini)", "models/teacher-mini", *scores(os.path.join(runs, "ft-teacher")), 5.962)]
kd = protocol.startswith("kd")
if kd:
    epochs = protocol[len("kd-e"):] if protocol.startswith("kd-e") else None
    grid = "ft-teacher-grid" + (f"-e{epochs}" if epochs else "")
    rows.append((f"teacher (mini), lr chosen on dev{f', {epochs} epochs' if epochs else ''}",
                 "models/teacher-mini", *scores(os.path.join(runs, grid)), 5.962))
teacher = rows[-1][2]
t_mean = sum(teacher[t] for t in tasks) / len(tasks)
exp = os.path.join(runs, "wid-exp")
for size in ["x067", "x067all", "x067l20", "x025", "x025v2", "x025l20", "x025w6"]:
    for method, model_sub in [("wid", "wid/student"), ("trunc", "trunc/model"), ("rand", "rand/model")]:
        ft = os.path.join(exp, f"{size}-{method}-{protocol if kd else 'ft'}")
        model = os.path.join(exp, f"{size}-{model_sub}")
        if not os.path.isdir(ft) or not os.path.exists(os.path.join(model, "config.json")):
            continue
        log = os.path.join(exp, f"{size}-{method}.log")
        rows.append((f"{size} {method}", model, *scores(ft), validation_loss(log)))

print("| model | hidden | encoder params (M) | GFLOPs/seq | MLM val loss | "
      + " | ".join(tasks) + " | mean | % of teacher |" + (" lr |" if kd else ""))
print("|---|---:|---:|---:|---:|" + "---:|" * len(tasks) + "---:|---:|"
      + ("---|" if kd else ""))
for name, model, s, lrs, vl in rows:
    H, params, gflops = shape(model)
    cells = [f"{s[t]:.4f}" if t in s else "-" for t in tasks]
    mean = sum(s[t] for t in tasks) / len(tasks) if len(s) == len(tasks) else None
    print(f"| {name} | {H} | {params / 1e6:.2f} | {gflops:.3f} | "
          + (f"{vl:.3f}" if vl else "-") + " | " + " | ".join(cells) + " | "
          + (f"{mean:.4f} | {100 * mean / t_mean:.1f}%" if mean else "- | -") + " |"
          + (f" {lrs} |" if kd else ""))
