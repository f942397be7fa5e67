#!/usr/bin/env bash
# Runs the README's first commands as written, from this checkout, on a machine that
# cannot reach the Hub: the `gpt2` they name is served from a Hugging Face cache (HF_HOME,
# HF_HUB_OFFLINE=1) holding the tiny GPT-2 test model in the Hub's layout, so every
# command runs unchanged and only the weights differ.
#   make report EXP=correlation
#   cargo install --locked --path .          (into a scratch root)
#   strata new my-first --model gpt2; strata report experiments/my-first.yaml
#   strata completions bash; strata man --out DIR; strata --version
# Usage: tests/readme_commands.sh   (from anywhere; leaves reports/correlation/ behind)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/strata-readme.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The cache: blobs named by sha256, a snapshot of symlinks, refs/main naming it.
commit=0123456789abcdef0123456789abcdef01234567
repo="$work/hf/hub/models--gpt2"
mkdir -p "$repo/blobs" "$repo/refs" "$repo/snapshots/$commit"
printf '%s' "$commit" > "$repo/refs/main"
for f in config.json model.safetensors tokenizer.json; do
  blob=$(sha256sum "$root/tests/fixtures/tiny-gpt2/$f" | cut -d' ' -f1)
  cp "$root/tests/fixtures/tiny-gpt2/$f" "$repo/blobs/$blob"
  ln -s "../../blobs/$blob" "$repo/snapshots/$commit/$f"
done
export HF_HOME="$work/hf" HF_HUB_OFFLINE=1

echo "== make report EXP=correlation"
(cd "$root" && make report EXP=correlation)
test -s "$root/reports/correlation/results.json" && test -s "$root/reports/correlation/index.html"
grep -q "\"commit\": \"$commit\"" "$root/reports/correlation/results.json"

echo "== cargo install --locked --path ."
(cd "$root" && cargo install --locked --path . --root "$work/install" --quiet)
export PATH="$work/install/bin:$PATH"
strata --version

echo "== strata new / report"
mkdir "$work/first" && cd "$work/first"
strata new my-first --model gpt2
strata report experiments/my-first.yaml
test -s reports/my-first/index.html

echo "== completions and manual pages"
strata completions bash | grep -q strata
strata man --out "$work/man" && ls "$work/man" | grep -q 'strata.1'
echo "the README's commands: ok"
