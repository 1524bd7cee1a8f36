"""Importing alloop switches TensorFlow to its pooling CPU allocator, unless the user chose otherwise.

Each case runs in a fresh interpreter: the allocator is fixed when TensorFlow starts.
"""

import os
import subprocess
import sys

import pytest

PROBE = """
import mlproject, os
import tensorflow as tf
print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"))
tf.zeros((4, 4)).numpy()
# Only TensorFlow's BFC allocator counts this small tensor (it rounds it up to 256-byte chunks). With
# the plain allocator this raised ValueError in earlier CI runs, and reported a peak of 0 bytes on a
# fresh machine on 2026-11-30 (same TensorFlow 2.21.0). Larger ops are counted either way: keep it tiny.
try:
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
except ValueError:
    peak = 0
print("bfc" if peak > 0 else "malloc")
"""


def run_probe(extra_env: dict) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra_env})
    return result.stdout.split()


@pytest.mark.parametrize(("preset", "expected"), [({}, ["true", "bfc"]),
                                                  ({"TF_CPU_ALLOCATOR_USE_BFC": "false"}, ["false", "malloc"])])
def test_importing_alloop_picks_the_pooling_allocator_unless_the_user_set_one(preset, expected):
    assert run_probe(preset) == expected
