#!/usr/bin/python3
"""RoBERTa as HuggingFace transformers computes it (modeling_roberta.py: RobertaModel,
RobertaForMaskedLM's lm_head, RobertaForSequenceClassification's head; XLM-RoBERTa is the same
code), written op for op in PyTorch from the checkpoint's own tensor names. transformers is not
installable offline here; this is the reference slimbert's RoBERTa goldens come from.

  modeling_roberta.py MODEL_DIR      writes MODEL_DIR/outputs.safetensors: a fixed padded batch
                                     (one row a pair) and every output, in float32
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from torch_bert import load_safetensors  # noqa: E402  (the benchmark's reader: floats as float32)


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.numpy().tobytes()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def create_position_ids_from_input_ids(input_ids, padding_idx):
    # modeling_roberta: positions count non-padding tokens, starting at padding_idx + 1.
    mask = input_ids.ne(padding_idx).int()
    incremental = torch.cumsum(mask, dim=1).type_as(mask) * mask
    return incremental.long() + padding_idx


def forward(w, c, input_ids, token_type_ids, attention_mask):
    eps = c["layer_norm_eps"]
    p = "roberta."
    pos = create_position_ids_from_input_ids(input_ids, c["pad_token_id"])
    x = (F.embedding(input_ids, w[p + "embeddings.word_embeddings.weight"]) +
         F.embedding(token_type_ids, w[p + "embeddings.token_type_embeddings.weight"]) +
         F.embedding(pos, w[p + "embeddings.position_embeddings.weight"]))
    x = F.layer_norm(x, (x.shape[-1],), w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"], eps)
    ext = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    hidden = [x]
    heads = c["num_attention_heads"]
    for l in range(c["num_hidden_layers"]):
        q = f"{p}encoder.layer.{l}."
        lin = lambda t, m: F.linear(t, w[q + m + ".weight"], w[q + m + ".bias"])
        B, T, H = x.shape
        d = H // heads
        split = lambda t: t.view(B, T, heads, d).permute(0, 2, 1, 3)
        qh, kh, vh = split(lin(x, "attention.self.query")), split(lin(x, "attention.self.key")), split(lin(x, "attention.self.value"))
        scores = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(d) + ext
        ctx = torch.matmul(F.softmax(scores, dim=-1), vh).permute(0, 2, 1, 3).reshape(B, T, H)
        a = F.layer_norm(lin(ctx, "attention.output.dense") + x, (H,), w[q + "attention.output.LayerNorm.weight"],
                         w[q + "attention.output.LayerNorm.bias"], eps)
        h = F.gelu(lin(a, "intermediate.dense"))
        x = F.layer_norm(lin(h, "output.dense") + a, (H,), w[q + "output.LayerNorm.weight"], w[q + "output.LayerNorm.bias"], eps)
        hidden.append(x)
    out = {f"hidden_states.{i}": h for i, h in enumerate(hidden)}
    out["last_hidden_state"] = x
    # RobertaLMHead: dense, gelu, layer_norm, then the decoder tied to the word embeddings.
    m = F.gelu(F.linear(x, w["lm_head.dense.weight"], w["lm_head.dense.bias"]))
    m = F.layer_norm(m, (m.shape[-1],), w["lm_head.layer_norm.weight"], w["lm_head.layer_norm.bias"], eps)
    out["mlm_logits"] = F.linear(m, w[p + "embeddings.word_embeddings.weight"], w["lm_head.bias"])
    # RobertaClassificationHead: the first token, dense, tanh, out_proj.
    if "classifier.dense.weight" in w:
        h = torch.tanh(F.linear(x[:, 0], w["classifier.dense.weight"], w["classifier.dense.bias"]))
        out["cls_logits"] = F.linear(h, w["classifier.out_proj.weight"], w["classifier.out_proj.bias"])
    return out


def main():
    d = sys.argv[1]
    c = json.load(open(f"{d}/config.json"))
    w = load_safetensors(f"{d}/model.safetensors")
    pad, V = c["pad_token_id"], c["vocab_size"]
    g = torch.Generator().manual_seed(0)
    T = 12
    rows = []
    for n, pair in ((12, False), (7, False), (10, True)):
        body = torch.randint(4, V - 1, (n - 2,), generator=g).tolist()
        if pair:  # <s> a </s> </s> b </s>
            body[3], body[4] = 2, 2
        rows.append([0] + body + [2] + [pad] * (T - n))
    input_ids = torch.tensor(rows)
    attention_mask = input_ids.ne(pad).long()
    token_type_ids = torch.zeros_like(input_ids)
    with torch.no_grad():
        out = forward(w, c, input_ids, token_type_ids, attention_mask)
    out.update(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    save_safetensors(f"{d}/outputs.safetensors", out)
    print(f"{d}/outputs.safetensors: {', '.join(sorted(out))}")


if __name__ == "__main__":
    main()
