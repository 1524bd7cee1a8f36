"""One VGG16 forward pass per scoring engine on this machine: what fast scoring can gain here.

The registered model's fast scoring (``mlproject.registry.pyfunc.fast_network``) picks TensorFlow
float32, TensorFlow's bfloat16 twin, or an OpenVINO compilation. How much each gains depends on the CPU:
with AMX (a Xeon), OpenVINO bfloat16 ran ~9x TensorFlow float32; without AVX512_BF16 or AMX there is
no native bfloat16 and the bfloat16 hint falls back to float32. This script times the same frozen
``hed`` classifier (the ``frozen`` network: VGG16, stats of block3-5, the default head) on random
images through each engine, best of ``--repeats``, in one process, and says which CPU it ran on.

Usage: python benchmarks/bench_pass_speed.py [--size 512] [--images 8] [--repeats 3]
Writes the "pass_speed" key of benchmarks/results/stream.json (other keys are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]
from provenance import git_commit  # noqa: E402  (beside this script)
from suite import machine_description  # noqa: E402
RESULTS = REPO / "benchmarks" / "results" / "stream.json"


def images_per_s(network, batch: np.ndarray, repeats: int) -> float:
    network(batch[:2], training=False)  # kernels built outside the timing
    best = min(_timed(lambda: network(batch, training=False)) for _ in range(repeats))
    return len(batch) / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mlproject.models.openvino_network import compile_network, openvino_available
    from mlproject.models.variants import build_head_classifier
    from mlproject.registry.pyfunc import bfloat16_twin, native_bfloat16

    network = build_head_classifier("hed", args.size, trainable_blocks=0, precision="float32").full
    batch = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3)).astype(np.float32)
    rates = {"tensorflow_float32": images_per_s(network, batch, args.repeats)}
    print(f"tensorflow float32: {rates['tensorflow_float32']:.2f} img/s", flush=True)
    if native_bfloat16():  # elsewhere the twin runs emulated bfloat16, slower than float32: not an option
        rates["tensorflow_bfloat16"] = images_per_s(bfloat16_twin(network), batch, args.repeats)
    if openvino_available():
        for precision in ("float32", "bfloat16"):
            rates[f"openvino_{precision}"] = images_per_s(compile_network(network, precision), batch, args.repeats)
            print(f"openvino {precision}: {rates[f'openvino_{precision}']:.2f} img/s", flush=True)
    base = rates["tensorflow_float32"]
    result = {"date": dt.date.today().isoformat(), "commit": git_commit(),
              "command": "python benchmarks/bench_pass_speed.py " + " ".join(sys.argv[1:]),
              "machine": machine_description(),
              "image_size": args.size, "images": args.images,
              "images_per_s": {k: round(v, 3) for k, v in rates.items()},
              "ratio_to_tensorflow_float32": {k: round(v / base, 2) for k, v in rates.items()}}
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored["pass_speed"] = result  # read-modify-write: other benchmarks keep their keys in this file
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
