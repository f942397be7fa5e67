#!/usr/bin/env python3
"""A Gemma-3-270M-shaped GGUF file with seeded random weights, for the memory benchmark:
18 blocks, 640 wide, 4 query heads and 1 key/value head of 256, a 2,048-wide MLP, and a
SentencePiece vocabulary of 262,144 pieces (special tokens, the 256 byte pieces, then
made-up word pieces), written as llama.cpp's converter writes Gemma 3 (the key/values and
tensor names of tests/fixtures/gguf/gemma3-f16.gguf), in F16, then quantized to Q4_K_M by
llama-quantize. The real file cannot be downloaded here; its shapes and vocabulary size
are what make its memory.

Usage: gemma3_gguf.py OUT_DIR LLAMA_QUANTIZE   (needs numpy and llama.cpp's gguf-py on
PYTHONPATH: target/llama-cpp/llama.cpp/gguf-py). Writes OUT_DIR/gemma3-270m-{F16,Q4_K_M}.gguf.
"""
import os
import subprocess
import sys

import numpy as np
import gguf

VOCAB, WIDTH, BLOCKS, FFN, HEADS, KV, HEAD_DIM = 262144, 640, 18, 2048, 4, 1, 256


def vocabulary(rng):
    """Pieces, scores and types as SentencePiece's Gemma vocabulary has them."""
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [3, 3, 3, 2]
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen = set(pieces)
    for c in letters + letters.upper() + "0123456789.,;:!?'\"()-":
        for p in (c, "\u2581" + c):
            seen.add(p)
            pieces.append(p)
            types.append(1)
    while len(pieces) < VOCAB:
        n = int(rng.integers(2, 9))
        word = "".join(letters[i] for i in rng.integers(0, 26, n))
        p = ("\u2581" if rng.random() < 0.6 else "") + word
        if p not in seen:
            seen.add(p)
            pieces.append(p)
            types.append(1)
    scores = [0.0] * 4 + [0.0] * 256 + [-float(i) for i in range(VOCAB - 260)]
    return pieces, scores, types


def main():
    out, quantize = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(270)
    f16 = os.path.join(out, "gemma3-270m-F16.gguf")
    w = gguf.GGUFWriter(f16, "gemma3")
    w.add_block_count(BLOCKS)
    w.add_context_length(32768)
    w.add_embedding_length(WIDTH)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(1e6)
    w.add_float32("gemma3.rope.freq_base_swa", 10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_sliding_window(512)
    w.add_file_type(1)
    pieces, scores, types = vocabulary(rng)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)

    def matrix(rows, cols, scale=0.02):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(np.float16)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    w.add_tensor("token_embd.weight", matrix(VOCAB, WIDTH))
    for i in range(BLOCKS):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", norm(WIDTH))
        w.add_tensor(b + "attn_q.weight", matrix(HEADS * HEAD_DIM, WIDTH))
        w.add_tensor(b + "attn_k.weight", matrix(KV * HEAD_DIM, WIDTH))
        w.add_tensor(b + "attn_v.weight", matrix(KV * HEAD_DIM, WIDTH))
        w.add_tensor(b + "attn_q_norm.weight", norm(HEAD_DIM))
        w.add_tensor(b + "attn_k_norm.weight", norm(HEAD_DIM))
        w.add_tensor(b + "attn_output.weight", matrix(WIDTH, HEADS * HEAD_DIM))
        w.add_tensor(b + "post_attention_norm.weight", norm(WIDTH))
        w.add_tensor(b + "ffn_norm.weight", norm(WIDTH))
        w.add_tensor(b + "ffn_gate.weight", matrix(FFN, WIDTH))
        w.add_tensor(b + "ffn_up.weight", matrix(FFN, WIDTH))
        w.add_tensor(b + "ffn_down.weight", matrix(WIDTH, FFN))
        w.add_tensor(b + "post_ffw_norm.weight", norm(WIDTH))
    w.add_tensor("output_norm.weight", norm(WIDTH))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    q = os.path.join(out, "gemma3-270m-Q4_K_M.gguf")
    with open(os.path.join(out, "Q4_K_M.log"), "w") as log:
        subprocess.run([quantize, f16, q, "Q4_K_M"], stdout=log, stderr=log, check=True)
    print(q)


if __name__ == "__main__":
    main()
