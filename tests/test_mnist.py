"""Tests of pipelines.mnist: the IDX reader and the embedded sample."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from pipelines import mnist

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _write_idx(path, array, magic=None, extra=b""):
    header = magic or bytes([0, 0, 8, array.ndim])
    dims = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + dims + array.astype(np.uint8).tobytes() + extra)
    return path


def test_embedded_sample_is_real_mnist():
    images, labels = mnist.load_embedded_sample()
    assert images.shape == (1000, 28, 28) and labels.shape == (1000,)
    assert images.dtype == np.uint8 and set(labels) == set(range(10))
    if SHARED.is_dir():  # it is the first 1,000 digits of the shared training file
        raw = gzip.decompress((SHARED / "train-images-idx3-ubyte.gz").read_bytes())
        first = np.frombuffer(raw[16 : 16 + 1000 * 784], np.uint8).reshape(1000, 28, 28)
        np.testing.assert_array_equal(images, first)


def test_reads_plain_and_gzipped_files(tmp_path):
    array = np.arange(24).reshape(2, 3, 4)
    plain = _write_idx(tmp_path / "a-idx3-ubyte", array)
    gz = tmp_path / "a-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(mnist.read_idx(plain), array)
    np.testing.assert_array_equal(mnist.read_idx(gz), array)


@pytest.mark.parametrize(
    "magic,extra,message",
    [
        (bytes([0, 0, 9, 3]), b"", r"magic number 00000903"),
        (bytes([1, 2, 8, 3]), b"", r"not an IDX file"),
        (None, b"x", r"header says shape \(2, 3, 4\) \(40 bytes\) but the file has 41"),
    ],
    ids=["type", "magic", "padded"],
)
def test_corrupt_files_name_the_problem(tmp_path, magic, extra, message):
    path = _write_idx(tmp_path / "bad-idx3-ubyte", np.zeros((2, 3, 4)), magic, extra)
    with pytest.raises(ValueError, match=message) as info:
        mnist.read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_and_missing_files(tmp_path):
    path = _write_idx(tmp_path / "t-idx3-ubyte", np.zeros((2, 3, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"truncated or corrupt"):
        mnist.read_idx(path)
    with pytest.raises(FileNotFoundError, match=r"nope-idx3-ubyte"):
        mnist.read_idx(tmp_path / "nope-idx3-ubyte")


def test_image_label_count_mismatch(tmp_path):
    images = _write_idx(tmp_path / "i-idx3-ubyte", np.zeros((3, 2, 2)))
    labels = _write_idx(tmp_path / "l-idx1-ubyte", np.zeros((2,)))
    with pytest.raises(ValueError, match=r"do not pair up.*\(3, 2, 2\).*\(2,\)"):
        mnist.load_idx_pair(images, labels)
