#!/usr/bin/env bash
# Runs a strata spec as a Slurm job array of N shards plus a merge job that waits for
# them, with one command:
#
#   deploy/slurm/launch.sh SPEC N [--out DIR] [--partials DIR] [--only 3,5] [--wait] [-- SBATCH_ARGS...]
#
#   SPEC        the experiment spec (its model and corpus must be readable on every node)
#   N           the number of shards
#   --out       where results.json and index.html go (default reports/NAME)
#   --partials  where the shards write their partial files (default OUT/partials); a
#               folder every node can write to
#   --only      re-run just these shard indices (what `strata merge` names as missing),
#               then merge again
#   --wait      block until the merge job ends, and fail unless it wrote results.json
#   SBATCH_ARGS passed to both sbatch calls (--partition, --time, --mem, --account, ...)
#
# STRATA names the strata binary (default: `strata` on the PATH of the nodes).
set -euo pipefail
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
spec=$1 n=$2; shift 2
case $n in ''|*[!0-9]*) echo "launch.sh: N must be a whole number, got '$n'" >&2; exit 2;; esac
[ "$n" -ge 1 ] || { echo "launch.sh: N must be at least 1" >&2; exit 2; }
[ -f "$spec" ] || { echo "launch.sh: no spec file $spec" >&2; exit 2; }
out='' partials='' only='' wait=0 extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2;;
    --partials) partials=$2; shift 2;;
    --only) only=$2; shift 2;;
    --wait) wait=1; shift;;
    --) shift; extra=("$@"); break;;
    *) echo "launch.sh: unknown option $1" >&2; usage;;
  esac
done
name=$(sed -n 's/^name:[[:space:]]*\([A-Za-z0-9._-]*\).*/\1/p' "$spec" | head -n1)
[ -n "$name" ] || name=$(basename "${spec%.*}")
out=$(realpath -m "${out:-reports/$name}")
partials=$(realpath -m "${partials:-$out/partials}")
spec=$(realpath "$spec")
mkdir -p "$partials"
here=$(cd "$(dirname "$0")" && pwd)
env="ALL,STRATA_SPEC=$spec,STRATA_PARTIALS=$partials,STRATA_OUT=$out,STRATA_SHARD_COUNT=$n"
[ -n "${STRATA:-}" ] && env="$env,STRATA=$STRATA"
array=${only:-0-$((n - 1))}
shards=$(sbatch --parsable --array="$array" --chdir="$partials" --export="$env" "${extra[@]}" "$here/shard.sbatch")
shards=${shards%%;*}
merge=$(sbatch --parsable --dependency="afterok:$shards" --kill-on-invalid-dep=yes \
  --chdir="$partials" --export="$env" "${extra[@]}" "$here/merge.sbatch")
merge=${merge%%;*}
echo "submitted shards as job array $shards (tasks $array of $n), merge as job $merge -> $out"
if [ "$wait" = 1 ]; then
  # A merge cancelled because a shard failed also "ends": check what it wrote.
  while squeue -h -j "$merge" 2>/dev/null | grep -q .; do sleep 1; done
  if [ ! -f "$out/results.json" ] || [ "$out/results.json" -ot "$partials" ]; then
    echo "launch.sh: the merge job $merge wrote no results; see $partials/strata-*.out" >&2
    exit 1
  fi
  echo "merged: $out/results.json"
fi
