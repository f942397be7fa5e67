#!/usr/bin/env python3
"""The transformers peer of benches/forward.rs: same files, same token ids, same work
(every hidden state), median of REPS runs after a warm-up. Prints JSON tokens/s."""
import json
import statistics
import sys
import time

import torch
from transformers import GPT2Model

model_dir, ids_file, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = json.load(open(ids_file))
model = GPT2Model.from_pretrained(model_dir, torch_dtype=torch.float32).eval()


def rate(batch):
    x = torch.tensor(batch, dtype=torch.long)
    with torch.inference_mode():
        model(x, output_hidden_states=True)
        secs = []
        for _ in range(reps):
            t = time.perf_counter()
            model(x, output_hidden_states=True)
            secs.append(time.perf_counter() - t)
    return x.numel() / statistics.median(secs)


print(json.dumps({"long": rate([ids["long"]]), "batch": rate(ids["batch"]),
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
