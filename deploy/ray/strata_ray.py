"""Runs a strata spec as N shards on a Ray cluster and merges them, with one command:

    ray job submit --working-dir deploy/ray -- \
        python strata_ray.py SPEC --shards 8 --out reports/NAME [--strata PATH]

Each shard is a Ray task that calls the strata binary on its node and returns the bytes
of its partial file (a partial holds the analyses' state, not the activations, so it
is small); the driver writes them to OUT/partials and runs `strata merge`. The nodes need
no shared folder: only the strata binary, the spec, its corpus and the model (or the
Hugging Face cache) at the same paths. A failed task is retried by Ray
(`max_retries`); a re-run shard writes the same bytes. On nodes running containers, the
image `strata:latest` (`make image`, deploy/Dockerfile) has the binary on its PATH; on
bare nodes, `pip install strata-lens` puts it there.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import ray


@ray.remote(max_retries=2)
def shard(strata, spec, index, count):
    """Runs shard index/count; returns (file name, bytes) of its partial."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [strata, "report", spec, "--shard", f"{index}/{count}", "--out", out, "--quiet"],
            check=True,
        )
        (name,) = [n for n in os.listdir(out) if n.endswith(".partial")]
        with open(os.path.join(out, name), "rb") as f:
            return name, f.read()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="the experiment spec (same path on every node)")
    p.add_argument("--shards", type=int, required=True, help="number of shards N")
    p.add_argument("--out", required=True, help="folder for results.json and index.html")
    p.add_argument("--strata", default="strata", help="the strata binary on the nodes")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster)")
    a = p.parse_args(argv)
    if a.shards < 1:
        p.error("--shards must be at least 1")
    ray.init(address=a.address)
    spec = os.path.abspath(a.spec)
    parts = ray.get([shard.remote(a.strata, spec, i, a.shards) for i in range(a.shards)])
    folder = os.path.join(a.out, "partials")
    os.makedirs(folder, exist_ok=True)
    for name, data in parts:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return subprocess.run([a.strata, "merge", folder, "--out", a.out]).returncode


if __name__ == "__main__":
    sys.exit(main())
