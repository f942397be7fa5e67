#!/usr/bin/env bash
# Every output strata writes, from one binary, into one folder: for checking that a change
# of code leaves every byte as it was. Run it with the binary before and after, then diff:
#
#   bench/outputs.sh OLD/strata /tmp/before
#   bench/outputs.sh target/release/strata /tmp/after
#   bench/outputs.sh --diff /tmp/before /tmp/after
#
# It covers every command that writes a file (report, shards and merge, render, figures as
# SVG, PDF and LaTeX, compare as text and HTML, table in each format, schema, extract,
# validate, new), every analysis kind (the sharded-run spec of the tests), every family
# fixture in both its formats, and the experiments that run on local models (make
# test-models). The commit strata was built from is masked: it is the one byte that is
# meant to differ. Needs nothing but the binary and the repository's fixtures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = "--diff" ]; then
  diff -r "$2" "$3" && echo "identical: $2 and $3"
  exit
fi
bin=$(realpath "$1")
out=$(realpath -m "$2")
# The specs and corpora live in one fixed folder, so the paths results.json records are the
# same for every binary: run one at a time.
work=${TMPDIR:-/tmp}/strata-outputs-work
rm -rf "$out" "$work" && mkdir -p "$out" "$work"
cd "$work"
run() { "$bin" "$@" >>"$out/log.txt" 2>&1 || echo "failed: $*" >>"$out/log.txt"; }

# The sharded-run spec of the tests: every kind, a hostile text id.
python3 - "$root" <<'PY'
import json, sys
root = sys.argv[1]
texts = ["The goal of a correlation analysis is to compute a correlation coefficient.", "Hello",
         "This coefficient is indicated using r, and is a number.",
         "It encodes the normalized strength of the linear relationship between two variables.",
         "Café naïve façade — 東京 🚀 ümlaut 1234567",
         "Negative, zero, and positive correlation coefficients have distinct interpretations.",
         "The normalization imposes boundaries of -1 to +1."]
with open("corpus.jsonl", "w") as f:
    for i, t in enumerate(texts):
        f.write(json.dumps({"id": "doc0 & <b>_50%_</b>" if i == 0 else f"doc{i}", "text": t}) + "\n")
fx = f"{root}/tests/fixtures"
kinds = """  - {kind: scatter, layer: 2}
  - {kind: scatter, layer: 1, text: doc5}
  - {kind: covariance}
  - {kind: pairplot, layers: [0, 1, 2], points: 300, sample: first}
  - {kind: pairplot, layers: [1, 2], points: 500, sample: random}
  - {kind: histogram, range: [-2, 2], bins: 40}
  - {kind: summary}
  - {kind: outliers, k: 7}
  - {kind: norms}
  - {kind: anisotropy, k: 3}
  - {kind: outlier_dims, ratio: 2, massive_abs: 1, massive_ratio: 3, examples: 4}
  - {kind: dimensionality, spectrum: 8}
  - {kind: cka}
  - {kind: logit_lens, layers: [0, 2, 3], text: doc3, positions: 5}
  - {kind: agreement, model: {id: %s/tiny-llama-lens}, k: 4, metrics: [cka, cca, svcca, pwcca, procrustes]}
  - {kind: attention, k: 3}
  - {kind: neurons, k: 4, examples: 2}
  - {kind: surprisal, k: 4, icl: [2, 9], texts: 3}
  - {kind: similarity, layers: [0, 2, 3], leading: 3}
  - {kind: logit_lens, layers: [0, 1, 3], text: doc2, positions: 4, lens: {tuned: %s/tuned-lens/tiny-gpt2, side_by_side: true}}
  - {kind: summary, site: attn_out}
  - {kind: covariance, site: mlp_out}
  - {kind: histogram, site: mlp_act, range: [-1, 1], bins: 20}
""" % (fx, fx)
for name, model in [("every", "tiny-gpt2"), ("variant", "tiny-gpt2")]:
    with open(f"{name}.yaml", "w") as f:
        seed = 3 if name == "every" else 4
        f.write(f"name: {name}\nmodel: {{id: {fx}/{model}}}\nseed: {seed}\nexclude_first_token: true\n"
                f"corpus: corpus.jsonl\nanalyses:\n{kinds}")
# Every family fixture, safetensors and GGUF: the numbers of the forward and the head.
import glob, os
def with_tokenizer(m):
    """A fixture folder without a tokenizer gets a word-level one of 64 words (its own
    vocabulary is at least that), in a folder of links beside its files."""
    if not os.path.isdir(m) or any(os.path.exists(f"{m}/{t}") for t in ("tokenizer.json", "vocab.json")):
        return m
    d = f"models/{os.path.basename(m)}"
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(m):
        os.symlink(f"{m}/{f}", f"{d}/{f}")
    words = "[UNK] the goal of a correlation analysis is to compute coefficient café naïve 東京 🚀 1234567 . ,".split()
    vocab = {w: i for i, w in enumerate(words)}
    json.dump({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
               "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
               "post_processor": None, "decoder": None,
               "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}},
              open(f"{d}/tokenizer.json", "w"))
    return os.path.abspath(d)
models = sorted(glob.glob(f"{fx}/tiny-*")) + sorted(glob.glob(f"{fx}/gguf/*.gguf"))
for m in models:
    m = with_tokenizer(m)
    name = "family-" + os.path.basename(m).replace(".gguf", "")
    # Models without a head refuse the second spec: its message is an output too.
    for suffix, kinds in [("", "  - {kind: summary}\n  - {kind: norms}\n  - {kind: summary, site: mlp_out}\n"),
                          ("-head", "  - {kind: logit_lens, positions: 4}\n  - {kind: surprisal, k: 3}\n")]:
        with open(f"{name}{suffix}.yaml", "w") as f:
            f.write(f"name: {name}{suffix}\nmodel: {{id: {m}}}\ntexts:\n  - {{id: a, text: \"The goal of a correlation analysis is to compute a coefficient.\"}}\n"
                    f"  - {{id: b, text: \"Café naïve 東京 🚀 1234567\"}}\nanalyses:\n{kinds}")
PY

run validate every.yaml variant.yaml family-*.yaml
for spec in every variant family-*; do
  spec=${spec%.yaml}
  run report --quiet "$spec.yaml" --out "$out/report/$spec" || echo "report $spec failed" >>"$out/log.txt"
done
for i in 1 2 3; do run report --quiet every.yaml --shard "$i/3" --out "$out/shards"; done
run merge --quiet "$out/shards" --out "$out/merged" || true
r="$out/report/every/results.json"
run render "$r" --out "$out/render.html" || true
run figures "$r" --out "$out/figures-svg" --format svg || true
run figures "$r" --out "$out/figures-pdf" --format pdf || true
run figures "$r" --out "$out/figures-tex" --format tex || true
run figures "$r" --out "$out/figures-text" --format svg --width text || true
"$bin" compare "$r" "$out/report/variant/results.json" --html "$out/compare.html" >"$out/compare.txt" 2>&1 || true
"$bin" compare "$r" "$r" >"$out/compare-self.txt" 2>&1 || true
for f in csv jsonl parquet; do run table "$r" --format "$f" --out "$out/table.$f" || true; done
for s in spec results reference; do "$bin" schema "$s" >"$out/schema-$s" 2>&1 || true; done
run extract --model "$root/tests/fixtures/tiny-gpt2" --text "The goal of a correlation" --out "$out/extract.safetensors" || true
mkdir -p "$out/new" && run new starter --dir "$out/new" || true

# The experiments that run on local models.
for e in attention-sinks geometry massive-activations moe-routing quantization; do
  [ -f "$root/experiments/$e.yaml" ] || continue
  (cd "$root/experiments" && "$bin" report --quiet "$e.yaml" --out "$out/experiments/$e") \
    >>"$out/log.txt" 2>&1 || echo "experiment $e failed" >>"$out/log.txt"
done
(cd "$root/experiments" && "$bin" report --quiet correlation.yaml --model "$root/tests/fixtures/tiny-gpt2" \
  --out "$out/experiments/correlation") >>"$out/log.txt" 2>&1 || true

# The build's own commit is the one thing meant to differ.
commit=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["provenance"]["strata_commit"])' "$r" || true)
if [ -n "$commit" ]; then
  grep -rlF "$commit" "$out" | while read -r f; do
    case "$f" in *.parquet|*.pdf|*.safetensors) ;; *) sed -i "s/$commit/STRATA_COMMIT/g" "$f" ;; esac
  done
fi
# A partial's last line is the sha256 of the lines above, the commit among them.
for f in "$out"/shards/*.partial; do sed -i 's/^sha256 [0-9a-f]*$/sha256 (of the lines above)/' "$f"; done
sed -i "s#$out#OUT#g; s#$root#ROOT#g" "$out/log.txt"
rm -rf "$work"
echo "wrote $(find "$out" -type f | wc -l) files to $out"
