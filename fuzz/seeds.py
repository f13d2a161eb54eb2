#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the test fixtures: small valid inputs of each
kind (and a few near misses), so that fuzzing starts from the formats' real structure.
Usage: fuzz/seeds.py OUT_DIR   (writes OUT_DIR/<target>/<name>)"""
import json
import pathlib
import struct
import sys

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "tests" / "fixtures"
out = pathlib.Path(sys.argv[1])


def put(target, name, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: {name: (dtype, shape, bytes)} -> a safetensors file."""
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blob


# safetensors: the first tensors of the fixture model, and small files of every dtype.
model = (fixtures / "hf/model/model.safetensors").read_bytes()
n = struct.unpack("<Q", model[:8])[0]
header = json.loads(model[8:8 + n])
data = model[8 + n:]
picked = {}
for name, e in header.items():
    if name == "__metadata__" or len(picked) == 3:
        continue
    b, end = e["data_offsets"]
    picked[name] = (e["dtype"], e["shape"], data[b:end])
put("safetensors", "fixture-head", safetensors(picked, {"format": "pt"}))
sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
for dtype, size in sizes.items():
    put("safetensors", "dtype-" + dtype, safetensors({"t": (dtype, [2, 3], bytes(6 * size))}))
put("safetensors", "empty-tensor", safetensors({"e": ("F32", [0, 4], b"")}))
put("safetensors", "overflow", safetensors({"t": ("I64", [2147483648, 2147483648], b"")}))

# config.json: the fixture's, and variants that reach each field's checks.
config = json.loads((fixtures / "hf/model/config.json").read_text())
put("config", "fixture", json.dumps(config, indent=2))
variants = {
    "pruned": {"pruned_heads": {"0": [1, 2], "1": [0]}},
    "regression": {"problem_type": "regression", "id2label": {"0": "score"}, "label2id": {"score": 0}},
    "num-labels": {"num_labels": 5, "id2label": None, "label2id": None},
    "head-size": {"attention_head_size": 32, "num_attention_heads": 3},
    "act": {"hidden_act": "gelu_new", "classifier_dropout": 0.2},
}
for name, change in variants.items():
    c = dict(config)
    for k, v in change.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    put("config", name, json.dumps(c))

# tokenizer: option bytes, vocabulary lines, NUL, text, NUL, pair.
vocab = (fixtures / "vocab/bert-base-uncased-vocab.txt").read_text(encoding="utf-8").split("\n")
small_vocab = "\n".join(vocab[999:1400] + ["##s", "##ing", "un", "##aff", "##able", "中", "é"])
cases = [json.loads(line) for line in (fixtures / "hf/tokenizer_public.jsonl").read_text(encoding="utf-8").splitlines()[:40]]
for i, case in enumerate(cases[::4]):
    opts = bytes([i * 37 % 256, [0, 5, 7, 16, 0x83][i % 5], i % 4, i % 3])
    pair = case.get("text_pair") or cases[(i + 1) % len(cases)]["text"]
    put("tokenizer", f"case-{i}", opts + small_vocab.encode() + b"\0" + case["text"].encode() + b"\0" + pair.encode())
put("tokenizer", "cjk-accents", bytes([0x2f, 9, 1, 2]) + small_vocab.encode() + "\0Héllo 中文 naïve\0ÅB\u0301c".encode())

# tokenizer_json: option bytes, a small tokenizer.json of each kind, NUL, text, NUL, pair.
def small_tokenizer(path, keep=300):
    spec = json.loads((fixtures / "tokenizers" / path).read_text(encoding="utf-8"))
    model = spec["model"]
    if isinstance(model.get("vocab"), list):
        model["vocab"] = model["vocab"][:keep]
        if model.get("unk_id", 0) >= keep:
            model["unk_id"] = 0
    elif "vocab" in model:
        items = sorted(model["vocab"].items(), key=lambda kv: kv[1])[:keep]
        model["vocab"] = {t: i for t, i in items}
        if "merges" in model:
            def ok(m):
                a, b = m.split(" ") if isinstance(m, str) else m
                return a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"]
            model["merges"] = [m for m in model["merges"] if ok(m)]
    return json.dumps(spec).encode()
for i, name in enumerate(["bert-wordpiece", "roberta-bpe", "xlmr-unigram", "llama-bpe-fallback", "mix-wordpiece"]):
    text = cases[i]["text"]
    put("tokenizer_json", name, bytes([i * 53 % 256, 9 + i]) + small_tokenizer(name + ".json") + b"\0" +
        (text + " <mask> [MASK] Héllo 中文 😀").encode() + b"\0" + cases[i + 1]["text"].encode())

# task files: one small valid file per layout (first byte: layout index, then the split).
glue = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli"]
names = glue + ["tsv", "csv", "jsonl"]
rows = {
    "cola": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more books I ask to whom he will give.\n",
    "sst2": "sentence\tlabel\nit 's a charming journey .\t1\nunflinchingly bleak\t0\n",
    "mrpc": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tHe said so .\tSo he said .\n",
    "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n",
    "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhat is it?\tWhat's that?\t1\n",
    "mnli": "index\tpromptID\tpairID\tgenre\ts1bp\ts2bp\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n0\t1\t2\tgov\tx\tx\tx\tx\tHe ran.\tHe moved.\tentailment\tentailment\n",
    "qnli": "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n",
    "rte": "index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tAn animal sat.\tentailment\n",
    "wnli": "index\tsentence1\tsentence2\tlabel\n0\tI saw it.\tIt was seen.\t1\n",
    "tsv": "text\tlabel\ngood film\tpos\nbad film\tneg\n",
    "csv": 'text,text_pair,label\n"a, quoted ""one""",b,pos\nplain,c,neg\n',
    "jsonl": '{"text": "good", "label": "pos"}\n{"text": "bad", "text_pair": "x", "label": 1}\n',
}
rows["mnli-mm"] = rows["mnli"]
for i, name in enumerate(names):
    put("tasks", name, bytes([i]) + rows[name].encode())
    put("tasks", name + "-dev", bytes([i + len(names)]) + rows[name].encode())

# trainer state: what a checkpoint holds, and a state from before run options were recorded.
run = {"command": "pretrain", "defining": {"seed": 0, "batch_size": 8, "steps": 100}, "adjustable": {"lr": 0.001}}
put("trainer_state", "current", json.dumps({"step": 10, "epoch": 1, "offset": 8, "run": run, "best": 0.5, "best_step": 4}, indent=2))
put("trainer_state", "old", json.dumps({"step": 10, "epoch": 0, "offset": 80, "seed": 0, "total_steps": 100}))

# server requests: every shape each endpoint takes, and the sub-network fields.
put("request", "single", json.dumps({"inputs": "hello world"}))
put("request", "list", json.dumps({"inputs": ["a", "b c"], "width": 0.5, "depth": 0.75}))
put("request", "pairs", json.dumps({"inputs": [["a", "b"], "c"], "latency_budget_ms": 20, "truncate": True}))
put("request", "embed", json.dumps({"inputs": ["x"], "pooling": "mean", "normalize": False}))
put("request", "openai", json.dumps({"input": ["x", "y"], "model": "m", "encoding_format": "float", "user": "u"}))
put("request", "tokenize", json.dumps({"inputs": "x", "add_special_tokens": False}))
put("request", "ids", json.dumps({"inputs": [[101, 7592, 102], "text"], "dimensions": 8, "truncation_direction": "Left"}))
put("request", "rerank", json.dumps({"query": "q", "texts": ["a", "b"], "return_text": True, "raw_scores": True}))
put("request", "similarity", json.dumps({"inputs": {"source_sentence": "s", "sentences": ["a"]}, "parameters": {"truncate": True, "prompt_name": "query"}}))
put("request", "decode", json.dumps({"ids": [[101, 102], [7592]], "skip_special_tokens": False}))
put("request", "base64", json.dumps({"input": "x", "encoding_format": "base64", "dimensions": 4}))
put("request", "overflow", "184467642147483e2147483")  # a finding: the JSON library's out_of_range
