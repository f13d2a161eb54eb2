#!/usr/bin/env python3
"""Checks slimbert's checkpoints against the real transformers package.

    python3 scripts/hf_parity.py DIR [--json OUT.json]

DIR comes from scripts/hf-parity.sh. For every DIR/models/NAME: AutoTokenizer (slow and fast)
must give slimbert's token ids for DIR/texts.jsonl; AutoModel* must load the checkpoint with no
missing, unexpected or mismatched tensors; and on slimbert's padded batch its hidden states,
pooler output and MLM / classification logits must equal `slimbert forward`'s (max |diff| at
real tokens <= TOL). Prints one Markdown row per model and exits 1 on any failure. Needs torch,
transformers and safetensors (not installable offline here: run it where they are)."""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

TOL = 1e-4


def compare(name, ours, theirs, mask):
    """Max |diff| over real (unpadded) positions; logits of padded rows are not compared."""
    theirs = theirs.detach().float().cpu()
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: shape {tuple(theirs.shape)} vs slimbert {tuple(ours.shape)}")
    diff = (ours - theirs).abs()
    if diff.dim() == 3:
        diff = diff * mask.unsqueeze(-1)
    return float(diff.max())


def check_model(root, name):
    path = os.path.join(root, "models", name)
    result = {"model": name}
    texts = [json.loads(l) for l in open(os.path.join(root, "texts.jsonl"))]
    ours_ids = [json.loads(l)["input_ids"] for l in open(os.path.join(root, f"{name}.ids.jsonl"))]
    # A directory with only tokenizer.json has no slow tokenizer to compare.
    only_json = not any(os.path.exists(os.path.join(path, f)) for f in ("vocab.txt", "vocab.json"))
    for fast in (True,) if only_json else (False, True):
        tok = AutoTokenizer.from_pretrained(path, use_fast=fast)
        for text, ids in zip(texts, ours_ids):
            got = tok(text["text"], text.get("text_pair"))["input_ids"]
            if got != ids:
                raise AssertionError(f"{name}: {'fast' if fast else 'slow'} tokenizer gives {got} for "
                                     f"{text!r}, slimbert {ids}")
    kinds = "fast" if only_json else "slow and fast"
    result["tokenizer"] = f"{kinds} ({type(tok).__name__}): {len(texts)}/{len(texts)} equal"

    config = AutoConfig.from_pretrained(path)
    pruned = {str(k): v for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    result.update(layers=config.num_hidden_layers, hidden=config.hidden_size, pruned_heads=pruned)
    if pruned and int(transformers.__version__.split(".")[0]) >= 5:
        # transformers 5 removed head pruning: from_pretrained ignores pruned_heads and rejects the
        # narrower attention tensors. transformers 4.x applies it (prune_heads) and loads them.
        result["skipped"] = "pruned_heads: transformers >= 5 no longer prunes heads on load"
        return result
    inputs = load_file(os.path.join(root, f"{name}.inputs.safetensors"))
    ours = load_file(os.path.join(root, f"{name}.outputs.safetensors"))
    mask = inputs["attention_mask"].float()
    archs = config.architectures or ["BertForMaskedLM"]
    heads = [(AutoModelForMaskedLM, "mlm_logits")] if any("MaskedLM" in a for a in archs) else []
    if any("SequenceClassification" in a for a in archs):
        heads.append((AutoModelForSequenceClassification, "cls_logits"))
    diffs, loaded = {}, []
    for cls, key in heads:
        model, info = cls.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
        # position_ids is a buffer, not a weight; a checkpoint with both heads (MLM and
        # classifier) has the other head's tensors left over whichever class loads it.
        other = (("classifier.", "bert.pooler.", "roberta.pooler.") if key == "mlm_logits"
                 else ("cls.", "lm_head."))
        bad = {k: [t for t in v if "position_ids" not in str(t)
                   and not (k == "unexpected_keys" and len(heads) > 1 and str(t).startswith(other))]
               for k, v in info.items()}
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            raise AssertionError(f"{name}: {type(model).__name__} loading info {bad}")
        model.eval()
        loaded.append(type(model).__name__)
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            for i, h in enumerate(out.hidden_states):
                diffs[f"hidden_states.{i}"] = max(diffs.get(f"hidden_states.{i}", 0),
                                                  compare(name, ours[f"hidden_states.{i}"], h, mask))
            diffs[key] = compare(name, ours[key], out.logits, mask)
            # RoBERTa's classification head has no pooler output to compare (its dense + tanh
            # is inside the head, whose logits are compared).
            if key == "cls_logits" and "pooler_output" in ours and hasattr(model, "bert"):
                diffs["pooler_output"] = compare(name, ours["pooler_output"],
                                                 model.bert(**inputs).pooler_output, mask)
    result.update(
        architecture=" + ".join(loaded),
        max_abs_diff=max(diffs.values()),
        worst=max(diffs, key=diffs.get),
        outputs=len(diffs),
    )
    if result["max_abs_diff"] > TOL:
        raise AssertionError(f"{name}: {result['worst']} differs by {result['max_abs_diff']:.3g} > {TOL}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--json")
    args = ap.parse_args()
    names = sorted(os.listdir(os.path.join(args.dir, "models")))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}\n")
    print("| model | loads as | layers | hidden | pruned heads | tokenizer | outputs | max abs diff |")
    print("|---|---|---:|---:|---|---|---:|---:|")
    results, failed = [], 0
    for name in names:
        try:
            r = check_model(args.dir, name)
            results.append(r)
            if "skipped" in r:
                print(f"| {name} | not loaded: {r['skipped']} | {r['layers']} | {r['hidden']} | "
                      f"{r['pruned_heads']} | {r['tokenizer']} | - | - |")
                continue
            print(f"| {name} | {r['architecture']} | {r['layers']} | {r['hidden']} | "
                  f"{r['pruned_heads'] or '-'} | {r['tokenizer']} | {r['outputs']} | {r['max_abs_diff']:.2e} |")
        except Exception as e:  # one model's failure must not hide the others'
            failed += 1
            results.append({"model": name, "error": f"{type(e).__name__}: {e}"})
            print(f"| {name} | FAILED: {type(e).__name__}: {e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                       "tolerance": TOL, "models": results}, f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
