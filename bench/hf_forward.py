#!/usr/bin/env python3
"""The transformers peer of benches/forward.rs: same files, same token ids, same work
(every hidden state). Loads the model once, then serves timing requests from stdin so the
Rust side can interleave rounds of both (a shared VM's noisy neighbours then hit both
alike). Each stdin line is `CASE REPS` (CASE: long | batch); each answer is one JSON line
{"case", "tokens", "secs": [...]} after one warm-up forward."""
import json
import sys
import time

import torch
from transformers import GPT2Model

model_dir, ids_file = sys.argv[1], sys.argv[2]
ids = json.load(open(ids_file))
model = GPT2Model.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
print(json.dumps({"ready": True, "torch": torch.__version__,
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
    print(json.dumps({"case": case, "tokens": x.numel(), "secs": secs}), flush=True)
