#!/usr/bin/python3
"""PyTorch-eager anchor for slimbert's benchmarks: BERT written as HuggingFace transformers 4.31
computes it (BertModel in eval mode), loading a slimbert/HF checkpoint directory.

transformers is not installable offline here, so this mirrors its modeling_bert.py forward
op for op (Linear, view/permute, matmul, / sqrt(d), additive mask, softmax, GELU, LayerNorm).
`check` verifies it against the golden HF outputs before any timing is trusted.

  torch_bert.py check MODEL_DIR OUTPUTS.safetensors
  torch_bert.py bench MODEL_DIR --batch B --seq S --threads T [--iters N]
  torch_bert.py export MODEL_DIR OUT.onnx --seq S
  torch_bert.py train MODEL_DIR --batch B --seq S --threads T [--head full|masked]
      MLM training steps (forward, backward, AdamW) in tokens/s; `full` computes the vocabulary
      projection at every position as HF's BertForMaskedLM does, `masked` only at masked positions.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
          "I32": torch.int32}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[b:e]), dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = t.float() if t.is_floating_point() else t
    return out


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, self.heads = c["hidden_size"], c["num_attention_heads"]
        self.d = h // self.heads
        self.q, self.k, self.v = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.ao, self.ln1 = nn.Linear(h, h), nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.i, self.o = nn.Linear(h, c["intermediate_size"]), nn.Linear(c["intermediate_size"], h)
        self.ln2 = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        # HF's dropouts (active in train mode only, as in BertLayer).
        self.drop_attn = nn.Dropout(c.get("attention_probs_dropout_prob", 0.1))
        self.drop_hidden = nn.Dropout(c.get("hidden_dropout_prob", 0.1))

    def split(self, x):  # (B, T, H) -> (B, heads, T, d)
        return x.view(x.size()[:-1] + (self.heads, self.d)).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d) + mask
        ctx = torch.matmul(self.drop_attn(F.softmax(scores, dim=-1)), v).permute(0, 2, 1, 3).contiguous()
        ctx = ctx.view(ctx.size()[:-2] + (self.heads * self.d,))
        a = self.ln1(self.drop_hidden(self.ao(ctx)) + x)
        return self.ln2(self.drop_hidden(self.o(F.gelu(self.i(a)))) + a)


class Bert(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.word = nn.Embedding(c["vocab_size"], h)
        self.pos = nn.Embedding(c["max_position_embeddings"], h)
        self.tok_type = nn.Embedding(c["type_vocab_size"], h)
        self.ln = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.drop = nn.Dropout(c.get("hidden_dropout_prob", 0.1))

    def forward(self, input_ids, token_type_ids, attention_mask):
        seq = input_ids.size(1)
        pos = torch.arange(seq, dtype=torch.long).unsqueeze(0)
        x = self.drop(self.ln(self.word(input_ids) + self.tok_type(token_type_ids) + self.pos(pos)))
        mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        return states


class MlmHead(nn.Module):
    def __init__(self, c, word):
        super().__init__()
        h = c["hidden_size"]
        self.dense, self.ln = nn.Linear(h, h), nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.word = word  # tied decoder
        self.bias = nn.Parameter(torch.zeros(c["vocab_size"]))

    def forward(self, x):
        return F.linear(self.ln(F.gelu(self.dense(x))), self.word.weight, self.bias)


def train_bench(model, c, a):
    model.train()
    head = MlmHead(c, model.word)
    params = list(model.parameters()) + [p for n, p in head.named_parameters() if not n.startswith("word")]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, c["vocab_size"], (a.batch, a.seq), generator=g)
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    chosen = torch.rand(a.batch, a.seq, generator=g) < 0.15
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad()
        hidden = model(ids, types, mask)[-1]
        if a.head == "full":
            logits = head(hidden)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        else:
            rows = hidden.reshape(-1, hidden.size(-1))[chosen.view(-1)]
            loss = F.cross_entropy(head(rows), ids.view(-1)[chosen.view(-1)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    print(json.dumps({"engine": "pytorch", "head": a.head, "threads": a.threads, "batch": a.batch, "seq": a.seq,
                      "step_s": step, "tokens_per_s": a.batch * a.seq / step}))


def build(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    p = "bert." if any(k.startswith("bert.") for k in w) else ""
    m = Bert(c)
    sd = {"word.weight": w[p + "embeddings.word_embeddings.weight"],
          "pos.weight": w[p + "embeddings.position_embeddings.weight"],
          "tok_type.weight": w[p + "embeddings.token_type_embeddings.weight"],
          "ln.weight": w[p + "embeddings.LayerNorm.weight"], "ln.bias": w[p + "embeddings.LayerNorm.bias"]}
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "ln1": "attention.output.LayerNorm", "i": "intermediate.dense",
             "o": "output.dense", "ln2": "output.LayerNorm"}
    for l in range(c["num_hidden_layers"]):
        for ours, hf in names.items():
            for kind in ("weight", "bias"):
                sd[f"layers.{l}.{ours}.{kind}"] = w[f"{p}encoder.layer.{l}.{hf}.{kind}"]
    m.load_state_dict(sd)
    return m.eval(), c


def percentile(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "bench", "export", "train"])
    ap.add_argument("model")
    ap.add_argument("path", nargs="?")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--head", choices=["full", "masked"], default="full")
    ap.add_argument("--int8", action="store_true",
                    help="PyTorch's own dynamic int8 (quantize_dynamic, per-channel, engine onednn)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, c = build(a.model)
    if a.mode == "train":
        return train_bench(model, c, a)
    if a.mode == "check":
        g = load_safetensors(a.path)
        with torch.no_grad():
            states = model(g["input_ids"], g["token_type_ids"], g["attention_mask"])
        worst = max(float((s - g[f"hidden_states.{i}"]).abs().max()) for i, s in enumerate(states))
        print(json.dumps({"anchor": "torch", "max_abs_diff_vs_hf_golden": worst}))
        sys.exit(0 if worst <= 1e-5 else 1)
    ids = torch.randint(1000, c["vocab_size"], (a.batch, a.seq), generator=torch.Generator().manual_seed(0))
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    if a.mode == "export":
        class Last(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, i, t, m):
                return self.m(i, t, m)[-1]
        torch.onnx.export(Last(model), (ids, types, mask), a.path, opset_version=14,
                          input_names=["input_ids", "token_type_ids", "attention_mask"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                        ["input_ids", "token_type_ids", "attention_mask", "last_hidden_state"]})
        return
    engine = "pytorch"
    if a.int8:
        torch.backends.quantized.engine = "onednn"
        model = torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8)
        engine = "pytorch-int8"
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            model(ids, types, mask)
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"engine": engine, "threads": a.threads, "batch": a.batch, "seq": a.seq,
                      "p50_ms": percentile(times, 50), "p90_ms": percentile(times, 90),
                      "p99_ms": percentile(times, 99)}))


if __name__ == "__main__":
    main()
