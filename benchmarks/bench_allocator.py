"""Building `finetune`'s cache with TensorFlow's default CPU allocator vs its pooling (BFC) allocator.

Why: while `finetune` builds its cache at 512 px, a quarter of the CPU time went to the kernel
(`vmstat` sy 16-28 %, ~70,000 page faults/s): every 32-image batch allocates ~10 GB of fresh
activations and hands them back. TensorFlow's BFC allocator (``TF_CPU_ALLOCATOR_USE_BFC=true``)
keeps freed memory for reuse. Each configuration runs in its own process (the variable is read
when TensorFlow starts), alternating, on the same random images through VGG16 blocks 1-4 (the
weights do not change the arithmetic's cost).

Usage: python benchmarks/bench_allocator.py --images 48 --size 512 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# both explicit: importing mlproject sets "true" unless the variable is already set
CONFIGS = {"default": {"TF_CPU_ALLOCATOR_USE_BFC": "false"}, "bfc": {"TF_CPU_ALLOCATOR_USE_BFC": "true"}}


def child(images: int, size: int) -> dict:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from mlproject.models.variants import build_head_classifier
    from mlproject.training.batches import predict_in_batches
    from mlproject.training.head_training import CACHE_BATCH_SIZE

    fixed = build_head_classifier("none", size, trainable_blocks=1).fixed
    x = np.random.default_rng(0).integers(0, 256, size=(images, size, size, 3), dtype=np.uint8)
    predict_in_batches(fixed, x[:CACHE_BATCH_SIZE], batch_size=CACHE_BATCH_SIZE, progress=False)  # warm-up
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    predict_in_batches(fixed, x, batch_size=CACHE_BATCH_SIZE, progress=False)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "images_per_s": images / wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt,
            "max_rss_gib": after.ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "allocator.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.images, args.size)))
        return
    runs = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name, env in CONFIGS.items():  # alternating, so both see the same machine
            command = [sys.executable, __file__, "--child", "--images", str(args.images), "--size", str(args.size)]
            result = subprocess.run(command, capture_output=True, text=True, check=True,
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    best = {name: max(r["images_per_s"] for r in results) for name, results in runs.items()}
    summary = {"command": " ".join(sys.argv), "runs": runs, "best_images_per_s": best,
               "ratio_bfc_over_default": best["bfc"] / best["default"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
