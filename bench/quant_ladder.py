#!/usr/bin/env python3
"""The quantization ladder's table: per rung, bits per weight (the file's bytes x 8 over
the F32 file's weights) and the divergence figures of reports/quantization-ladder/results.json,
as Markdown for the book's Findings.

Usage: python3 bench/quant_ladder.py RESULTS_JSON LADDER_DIR
"""
import json
import os
import re
import sys


def main():
    results = json.load(open(sys.argv[1]))
    ladder = sys.argv[2]
    f32 = os.path.join(ladder, "SmolLM2-135M-F32.gguf")
    weights = os.path.getsize(f32) / 4  # F32: 4 bytes a weight (metadata is noise here)
    print(f"{results['corpus']['tokens']} tokens in {results['corpus']['texts']} texts\n")
    print("| rung | bits per weight | KL mean (± se) | KL p99 | KL max | same top-1 | Δp rms | PPL ratio | ln ratio (± se) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for a in results["analyses"]:
        if a["kind"] != "divergence":
            continue
        path = a["model"]
        rung = re.search(r"SmolLM2-135M-(.+)\.gguf", path).group(1)
        bpw = os.path.getsize(os.path.join(ladder, os.path.basename(path))) * 8 / weights
        kl = a["kl"]
        ratio = a["ppl_new"] / a["ppl_base"]
        print(
            f"| {rung} | {bpw:.2f} | {kl['mean']:.5f} ± {kl['se']:.5f} | {kl['quantiles']['0.99']:.4f} "
            f"| {kl['max']['value']:.3f} | {100 * a['same_top1']['rate']:.2f}% | {100 * a['delta_p']['rms']:.3f}% "
            f"| {ratio:.4f} | {a['ln_ppl_ratio']['mean']:.5f} ± {a['ln_ppl_ratio']['se']:.5f} |"
        )


if __name__ == "__main__":
    main()
