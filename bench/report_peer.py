#!/usr/bin/env python3
"""The Python peer of benches/report.rs: what a careful notebook user would write for the
same experiment. transformers forward in batches of 8 (right-padded, attention mask),
every hidden state, token 0 dropped; then streaming numpy: per-batch co-moments merged
with Chan's update (float64) for the 13x13 covariance and R^2, and np.histogram's fast
uniform-bin path on [-15, 15] with 300 bins. Writes the numbers as JSON.

usage: report_peer.py MODEL_DIR CORPUS.txt OUT.json
"""
import json
import sys

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Model

model_dir, corpus, out = sys.argv[1:4]
torch.set_grad_enabled(False)
model = GPT2Model.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
tok = Tokenizer(models.BPE.from_file(f"{model_dir}/vocab.json", f"{model_dir}/merges.txt"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()

texts = [line.rstrip("\n") for line in open(corpus, encoding="utf-8") if line.strip()]
L = model.config.n_layer + 1
n, mean, C = 0, np.zeros(L), np.zeros((L, L))
counts = np.zeros((L, 300), dtype=np.int64)

for start in range(0, len(texts), 8):
    ids = [tok.encode(t).ids for t in texts[start:start + 8]]
    T = max(len(i) for i in ids)
    x = torch.zeros((len(ids), T), dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for b, i in enumerate(ids):
        x[b, :len(i)] = torch.tensor(i)
        mask[b, :len(i)] = 1
    hs = model(x, attention_mask=mask, output_hidden_states=True).hidden_states
    for b, i in enumerate(ids):
        X = np.stack([h[b, 1:len(i)].numpy().astype(np.float64).ravel() for h in hs])
        m = X.shape[1]
        mb = X.mean(axis=1)
        D = X - mb[:, None]
        Cb = D @ D.T
        delta = mb - mean
        tot = n + m
        C += Cb + np.outer(delta, delta) * n * m / tot
        mean += delta * m / tot
        n = tot
        for l in range(L):
            counts[l] += np.histogram(X[l], bins=300, range=(-15, 15))[0]

cov = C / (n - 1)
sd = np.sqrt(np.diag(cov))
r2 = (cov / sd[:, None] / sd[None, :]) ** 2
json.dump({"n_points": n, "covariance": cov.tolist(), "r2": r2.tolist(), "counts": counts.tolist()}, open(out, "w"))
