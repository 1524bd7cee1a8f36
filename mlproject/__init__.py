"""alloop: train, register, serve and keep improving VGG16 defect classifiers.

The package follows the flow of the product:
data -> models (VGG16 variants) -> training (MLflow entry points) -> evaluation
-> registry (pyfunc model, promotion) -> serving / labelling loop (integrations/, cli).
"""

import os

# TensorFlow's pooling CPU allocator instead of malloc. At 512 px every 32-image batch through
# VGG16 allocates ~10 GB of activations; with malloc the kernel maps and zeroes it afresh each time
# (a quarter of the CPU went to page faults). Measured here, building finetune's cache: 1.45x the
# images/s (benchmarks/bench_allocator.py). Read when TensorFlow starts, so set before any import of
# it; a value the user set wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

__version__ = "0.1.0"
