"""The decoder on hostile and very large images: a pixel limit checked before decoding, bounded memory.

Peak memory is measured in a fresh Python process (``ru_maxrss`` before and after one decode), so
what this test process holds does not blur it. The bounds are generous toward the banded decoder
and far below what converting the whole image to float64 at once took (numbers in the tests).
"""

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlproject.data.decode import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_VARIABLE,
    BadImageError,
    decode_image,
    max_image_pixels,
)

REPO = Path(__file__).resolve().parents[4]
MB = 1024 * 1024


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_gray16_png(path: Path, width: int, height: int, row: np.ndarray) -> Path:
    """A valid 16-bit grayscale PNG whose every row is ``row``, written without holding the image:
    all-equal rows compress to almost nothing, which is how a small file becomes a huge image."""
    line = b"\x00" + np.asarray(row, dtype=">u2").tobytes()  # filter byte 0, then big-endian samples
    compressor, parts = zlib.compressobj(1), []
    for _ in range(height):
        parts.append(compressor.compress(line))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16 bit, gray, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts))
                     + png_chunk(b"IEND", b""))
    return path


MEASURE = """
import json, resource, sys
import numpy as np
from mlproject.data.decode import BadImageError, decode_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    out, error = decode_image(data, source=sys.argv[1]), None
except BadImageError as exc:
    out, error = None, str(exc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
result = {"growth_mb": (peak - before) / 1024, "error": error}
if out is not None:
    expected_row = np.load(sys.argv[2])
    result["shape"] = list(out.shape)
    result["values_match"] = bool((out == expected_row[None, :, None]).all())  # every row, every channel
print(json.dumps(result))
"""


def decode_in_fresh_process(path: Path, expected_row: np.ndarray | None = None, env: dict | None = None) -> dict:
    expected_path = path.with_suffix(".expected.npy")
    np.save(expected_path, expected_row if expected_row is not None else np.zeros(1, np.uint8))
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(expected_path)], cwd=REPO,
                            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_16bit_decompression_bomb_is_refused_before_decoding(tmp_path):
    # 13,300 x 13,300 16-bit: a ~1.5 MB file, 177 MP, just under Pillow's own 179 MP error. Converting
    # it through float64 at full size peaked at 4.4 GB over the baseline (measured on the old decoder).
    bomb = write_gray16_png(tmp_path / "bomb.png", 13_300, 13_300, np.zeros(13_300, np.uint16))
    assert bomb.stat().st_size < 3 * MB
    result = decode_in_fresh_process(bomb)
    assert result["error"] is not None, "the bomb was decoded"
    for part in (str(bomb), "176,890,000 pixels", f"limit of {DEFAULT_MAX_PIXELS:,} pixels", MAX_PIXELS_VARIABLE):
        assert part in result["error"]
    assert result["growth_mb"] < 100  # refused from the header: measured 0-1.5 MB


def test_large_allowed_16bit_image_decodes_in_bounded_memory_with_unchanged_values(tmp_path):
    # 6,000 x 6,000 = 36 MP, under the limit. Peak growth measured: 176 MB now (Pillow's 2 bytes per
    # pixel, the 3-byte result, small bands), 820-880 MB with the old whole-image float64 conversion.
    width = 6_000
    row = ((np.arange(width) * 11) % 65536).astype(np.uint16)
    row[:4] = (0, 128, 129, 65535)  # 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1, 65535 -> 255
    image = write_gray16_png(tmp_path / "large16.png", width, 6_000, row)
    expected = np.clip(np.rint(row / 257.0), 0, 255).astype(np.uint8)  # the fixed scale: value / 257 rounded
    assert list(expected[:4]) == [0, 0, 1, 255]
    result = decode_in_fresh_process(image, expected)
    assert result["error"] is None and result["shape"] == [6_000, width, 3]
    assert result["values_match"]
    assert result["growth_mb"] < 450


def test_large_float_image_decodes_in_bounded_memory_with_unchanged_values(tmp_path):
    # 4,000 x 4,000 float32 TIFF = 16 MP in [0, 1] (scaled x 255). Peak growth measured: 58 MB now,
    # 334-359 MB with the old whole-image float64 conversion.
    width = 4_000
    row = ((np.arange(width) % 1000) / 999.0).astype(np.float32)
    Image.fromarray(np.broadcast_to(row, (4_000, width)).copy(), "F").save(tmp_path / "large.tif")
    expected = np.clip(np.rint(row.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    result = decode_in_fresh_process(tmp_path / "large.tif", expected)
    assert result["error"] is None and result["shape"] == [4_000, width, 3]
    assert result["values_match"]
    assert result["growth_mb"] < 180


def gray_png(width: int, height: int, value: int = 7) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), value, np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


# Between the limit and twice it, Pillow warns before our check refuses the image: expected, harmless.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_comes_from_the_environment_and_names_source_count_and_variable(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_VARIABLE, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS == 50_000_000
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    assert decode_image(gray_png(25, 40)).shape == (40, 25, 3)  # exactly at the limit: allowed
    with pytest.raises(BadImageError) as over:
        decode_image(gray_png(40, 40), source="task 12")  # our own check, from the header
    assert over.value.source == "task 12"
    assert "40 x 40 = 1,600 pixels, over the limit of 1,000 pixels" in over.value.reason
    assert MAX_PIXELS_VARIABLE in over.value.reason
    with pytest.raises(BadImageError) as far_over:
        decode_image(gray_png(100, 100), source="task 13")  # over twice the limit: Pillow refuses it first
    assert "10,000 pixels, over the limit of 1,000 pixels" in far_over.value.reason
    assert MAX_PIXELS_VARIABLE in far_over.value.reason

    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_VARIABLE}='lots'.*positive number of pixels"):
        decode_image(gray_png(2, 2))


def test_a_limit_raised_above_pillows_is_not_overruled_by_pillow(monkeypatch):
    # Pillow's own limit stands in for its default (89 MP; an error above 179 MP), scaled down.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "10000")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = decode_image(gray_png(60, 60, value=9))  # 3,600 pixels: over twice Pillow's 100
    assert out.shape == (60, 60, 3) and (out == 9).all()
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's setting is restored after the decode
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    with pytest.raises(BadImageError, match="over the limit of 1,000"):
        decode_image(gray_png(60, 60))
    assert Image.MAX_IMAGE_PIXELS == 100  # and after a refusal
