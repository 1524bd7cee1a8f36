"""Datasets: on-disk layouts, the labels manifest, image decoding, splits and the synthetic default."""
