#!/usr/bin/env bash
# Checks a built x86_64 wheel the way a user's machine would meet it:
#   1. auditwheel names its policy: manylinux_2_17 (manylinux2014's name under PEP 600),
#      so it installs on glibc 2.17 and newer (RHEL 7/8, Ubuntu 18.04/20.04);
#   2. its binary holds AVX-512 and AVX2 code (the kernels it picks at run time) yet runs
#      on a CPU with neither: a report under qemu's baseline x86-64 CPU (qemu64: SSE2, no
#      AVX), when qemu-x86_64 is installed;
#   3. installed into a fresh virtualenv, its `strata` prints its version and runs a report.
# Usage: tests/wheel_check.sh WHEEL PY_TOOLS_DIR WORK_DIR
set -euo pipefail
wheel=$1 tools=$2 work=$3
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$work" && mkdir -p "$work/unpacked"

case "$(basename "$wheel")" in
  *manylinux2014_x86_64*) ;;
  *) echo "wheel-check: $wheel is not tagged manylinux2014_x86_64" >&2; exit 1 ;;
esac
"$tools/bin/auditwheel" show "$wheel" | tee "$work/auditwheel.txt"
grep -q 'consistent with the following platform tag' "$work/auditwheel.txt"
grep -q '"manylinux_2_17_x86_64"' "$work/auditwheel.txt" || {
  echo "wheel-check: auditwheel does not call $wheel manylinux_2_17 (manylinux2014)" >&2; exit 1; }

"$tools/bin/python" -m zipfile -e "$wheel" "$work/unpacked"
bin=$(find "$work/unpacked" -path '*scripts/strata' -type f)
chmod +x "$bin"
zmm=$(objdump -d --no-show-raw-insn "$bin" | grep -c '%zmm' || true)
ymm=$(objdump -d --no-show-raw-insn "$bin" | grep -c '%ymm' || true)
echo "wheel-check: $zmm instructions on zmm (AVX-512) and $ymm on ymm (AVX2) registers"
[ "$zmm" -gt 1000 ] && [ "$ymm" -gt 1000 ] || {
  echo "wheel-check: the binary lacks its AVX-512 or AVX2 kernels" >&2; exit 1; }

printf 'name: wheel\nmodel: {id: %s}\ntexts:\n  - {id: a, text: "The goal of a correlation analysis"}\nanalyses:\n  - {kind: summary}\n  - {kind: logit_lens}\n' \
  "$root/tests/fixtures/tiny-gpt2" > "$work/wheel.yaml"
if command -v qemu-x86_64 >/dev/null; then
  qemu-x86_64 -cpu qemu64 "$bin" report --quiet "$work/wheel.yaml" --out "$work/qemu64"
  test -s "$work/qemu64/results.json"
  echo "wheel-check: a report ran on qemu64, a CPU without AVX"
else
  echo "wheel-check: no qemu-x86_64 (Debian's qemu-user); the baseline-CPU run is skipped"
fi

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --no-index "$wheel"
"$work/venv/bin/strata" --version
(cd "$work" && venv/bin/strata report --quiet wheel.yaml)
test -s "$work/reports/wheel/results.json"
echo "wheel-check: ok, $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
