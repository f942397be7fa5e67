#!/usr/bin/env python3
"""The transformers peer of benches/forward.rs: same files, same token ids, same work
(every hidden state, no LM head). Loads the model once, then serves timing requests from
stdin so the Rust side can interleave rounds of both (a shared VM's noisy neighbours then hit
both alike). Each stdin line is `CASE REPS` (CASE: long | batch); each answer is one JSON line
{"case", "tokens", "secs": [...]} after one warm-up forward.

Each answer also carries the process's peak resident memory so far (`peak_rss`, bytes).

usage: hf_forward.py IDS_JSON gpt2 MODEL_DIR
       hf_forward.py IDS_JSON llama MODEL_DIR      (widened to f32 by transformers on load)
       hf_forward.py IDS_JSON gguf DIR FILE.gguf   (dequantized to f32 by transformers)
       hf_forward.py IDS_JSON mixtral MODEL_DIR
"""
import json
import resource
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, GPT2Model, LlamaModel, MixtralModel

ids = json.load(open(sys.argv[1]))
kind = sys.argv[2]
if kind == "gpt2":
    model = GPT2Model.from_pretrained(sys.argv[3], dtype=torch.float32).eval()
elif kind == "llama":
    model = LlamaModel.from_pretrained(sys.argv[3], dtype=torch.float32).eval()
elif kind == "mixtral":
    model = MixtralModel.from_pretrained(sys.argv[3], dtype=torch.float32).eval()
else:
    full = AutoModelForCausalLM.from_pretrained(sys.argv[3], gguf_file=sys.argv[4],
                                                dtype=torch.float32).eval()
    model = full.base_model  # hidden states without the LM head
print(json.dumps({"ready": True, "torch": torch.__version__,
                  "transformers": transformers.__version__,
                  "threads": torch.get_num_threads()}), flush=True)

for line in sys.stdin:
    case, reps = line.split()
    batch = [ids["long"]] if case == "long" else ids["batch"]
    x = torch.tensor(batch, dtype=torch.long)
    secs = []
    with torch.inference_mode():
        model(x, output_hidden_states=True)
        for _ in range(int(reps)):
            t = time.perf_counter()
            model(x, output_hidden_states=True)
            secs.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"case": case, "tokens": x.numel(), "secs": secs, "peak_rss": peak}),
          flush=True)
