import os

# Quiet TensorFlow and keep every test on the CPU with few threads (2-core CI machines).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
