#!/usr/bin/python3
# Writes tests/fixtures/torch-save/pytorch_model.bin with Debian's python3-torch: a state dict as
# transformers' save_pretrained(safe_serialization=False) writes one (torch.save of an OrderedDict,
# zip format), with float32 and float16 tensors, a tied decoder sharing the word embeddings'
# storage and a transposed (non-contiguous) tensor. Values are arange-based, so the test knows
# them without a second file. libtorch's own unpickler reads OrderedDict as None, so slimbert
# reads these files with its own (src/io/torch_save.cpp).
import collections
import sys

import torch

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/torch-save/pytorch_model.bin"
word = torch.arange(30 * 8, dtype=torch.float32).reshape(30, 8) / 100
sd = collections.OrderedDict()
sd["bert.embeddings.word_embeddings.weight"] = word
sd["cls.predictions.decoder.weight"] = word  # tied: the same storage
sd["bert.embeddings.LayerNorm.weight"] = torch.ones(8, dtype=torch.float16)
sd["bert.encoder.layer.0.attention.self.query.weight"] = (
    torch.arange(64, dtype=torch.float32).reshape(8, 8).t())  # non-contiguous
sd["cls.predictions.bias"] = torch.full((30,), -0.5)
torch.save(sd, out)
print(out)

# The HF fixture model (read from its safetensors with the standard library and numpy) saved as
# pytorch_model.bin, with HF's tied decoder alias: loads must equal the safetensors file's.
import json
import os
import shutil
import struct

import numpy as np

src = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf", "model")
dst = os.path.join(os.path.dirname(out), "hf-model")
os.makedirs(dst, exist_ok=True)
with open(os.path.join(src, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    body = f.read()
dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
hf = collections.OrderedDict()
for name, info in header.items():
    if name == "__metadata__":
        continue
    start, end = info["data_offsets"]
    a = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    hf[name] = torch.from_numpy(a.copy())
hf._metadata = collections.OrderedDict({"": {"version": 1}})  # as Module.state_dict() has
if "bert.embeddings.word_embeddings.weight" in hf:
    hf["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"]
torch.save(hf, os.path.join(dst, "pytorch_model.bin"))
shutil.copy(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
os.chmod(os.path.join(dst, "config.json"), 0o644)
print(dst)

# A file whose pickle would run a shell command: slimbert must refuse it, naming the callable.
class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


torch.save({"x": Evil()}, os.path.join(os.path.dirname(out), "evil.bin"))
