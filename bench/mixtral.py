#!/usr/bin/env python3
"""Writes the seeded Mixtral-shaped model of benches/forward.rs: 8 experts, top-2, hidden 512,
8 blocks (8 query heads on 2 key/value heads, experts 1792 wide: Mixtral's proportions at a
size a 2-core CPU runs), f32, in the Hub's layout (save_pretrained writes the per-expert
names). The tokenizer is added by the benchmark.

usage: mixtral.py OUT_DIR   (needs torch, transformers)
"""
import sys

import torch
from transformers import MixtralConfig, MixtralModel

cfg = MixtralConfig(vocab_size=32000, hidden_size=512, intermediate_size=1792,
                    num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                    num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=1024,
                    rms_norm_eps=1e-5)
torch.manual_seed(3)
model = MixtralModel(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("gate.weight"):
            p.normal_(0, 0.5)  # a router that prefers some experts per token
model.save_pretrained(sys.argv[1], safe_serialization=True)
