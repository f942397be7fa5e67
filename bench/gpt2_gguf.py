#!/usr/bin/env python3
"""Writes the bench's 124M-shaped GPT-2 as a GGUF file the way llama.cpp's converter
writes a GPT-2 (`conversion/gpt2.py`: its metadata keys, GGUF tensor names, Conv1D weights
transposed to [out, in], 1-D tensors kept f32, the tokenizer as `gpt2` BPE with the
`gpt-2` pre-tokenizer), with the `gguf` package the converter itself writes through.
`make bench` needs no llama.cpp checkout this way; the fixtures in tests/fixtures/gguf come
from the converter itself.

usage: gpt2_gguf.py MODEL_DIR OUT.gguf f16|q8_0
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType, quants
from safetensors.numpy import load_file

src, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = json.load(open(os.path.join(src, "config.json")))
w = load_file(os.path.join(src, "model.safetensors"))
w = {k.removeprefix("transformer."): v for k, v in w.items()}
vocab = json.load(open(os.path.join(src, "vocab.json")))
merges = [m for m in open(os.path.join(src, "merges.txt"), encoding="utf-8").read().split("\n")[1:] if m]

g = GGUFWriter(out, "gpt2")
n = cfg["n_layer"]
g.add_block_count(n)
g.add_context_length(cfg["n_positions"])
g.add_embedding_length(cfg["n_embd"])
g.add_feed_forward_length(4 * cfg["n_embd"])
g.add_head_count(cfg["n_head"])
g.add_layer_norm_eps(cfg.get("layer_norm_epsilon", 1e-5))
g.add_file_type(LlamaFileType.MOSTLY_F16 if kind == "f16" else LlamaFileType.MOSTLY_Q8_0)
tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
g.add_tokenizer_model("gpt2")
g.add_tokenizer_pre("gpt-2")
g.add_token_list(tokens)
g.add_token_types([TokenType.CONTROL if t == "<|endoftext|>" else TokenType.NORMAL for t in tokens])
g.add_token_merges(merges)
g.add_bos_token_id(vocab["<|endoftext|>"])
g.add_eos_token_id(vocab["<|endoftext|>"])

names = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight",
         "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias"}
parts = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
         "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
for i in range(n):
    for hf, gg in parts.items():
        for s in ("weight", "bias"):
            names[f"h.{i}.{hf}.{s}"] = f"blk.{i}.{gg}.{s}"


def add(name, t):
    t = t.astype(np.float32)
    if t.ndim == 1:
        g.add_tensor(name, t)
    elif kind == "f16":
        g.add_tensor(name, t.astype(np.float16))
    else:
        g.add_tensor(name, quants.quantize(t, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)


for hf, gg in names.items():
    t = w[hf]
    if hf.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
        t = t.T
    add(gg, np.ascontiguousarray(t))
# The converter writes GPT-2's tied head as its own tensor too.
add("output.weight", w["wte.weight"])
g.write_header_to_file()
g.write_kv_data_to_file()
g.write_tensors_to_file()
g.close()
