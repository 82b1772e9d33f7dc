"""Tests of stn_tf.pipelines.mnist: the IDX reader and the embedded sample."""

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest

from stn_tf.pipelines import mnist
from tools.sample_data import write_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def test_embedded_sample_is_real_mnist_with_its_own_split():
    train, test = mnist.load_embedded("train"), mnist.load_embedded("test")
    assert train.images.shape == (5000, 28, 28) and test.images.shape == (1000, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
    assert set(train.labels) == set(test.labels) == set(range(10))
    assert "embedded 5000-digit MNIST sample" in train.origin
    size = sum(p.stat().st_size for p in mnist.EMBEDDED_DIR.glob("*.gz"))
    assert size <= 1_050_000  # "at most about 1 MB"
    if SHARED.is_dir():  # digits 0-4999 and 5000-5999 of the shared training file
        raw = gzip.decompress((SHARED / "train-images-idx3-ubyte.gz").read_bytes())
        first = np.frombuffer(raw[16 : 16 + 6000 * 784], np.uint8).reshape(6000, 28, 28)
        np.testing.assert_array_equal(train.images, first[:5000])
        np.testing.assert_array_equal(test.images, first[5000:])


def test_reads_plain_and_gzipped_files(tmp_path):
    array = np.arange(24).reshape(2, 3, 4)
    plain = write_idx(tmp_path / "a-idx3-ubyte", array)
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
    path = write_idx(tmp_path / "bad-idx3-ubyte", np.zeros((2, 3, 4)), magic, extra)
    with pytest.raises(ValueError, match=message) as info:
        mnist.read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_and_missing_files(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte", np.zeros((2, 3, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"truncated or corrupt"):
        mnist.read_idx(path)
    with pytest.raises(FileNotFoundError, match=r"nope-idx3-ubyte"):
        mnist.read_idx(tmp_path / "nope-idx3-ubyte")


def test_image_label_count_mismatch(tmp_path):
    images = write_idx(tmp_path / "i-idx3-ubyte", np.zeros((3, 2, 2)))
    labels = write_idx(tmp_path / "l-idx1-ubyte", np.zeros((2,)))
    with pytest.raises(ValueError, match=r"do not pair up.*\(3, 2, 2\).*\(2,\)"):
        mnist.load_idx_pair(images, labels)


def _write_dir(folder, prefix, images, labels, gz=True, dotted=False):
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array, ndim in (("images", images, 3), ("labels", labels, 1)):
        name = f"{prefix}-{kind}{'.' if dotted else '-'}idx{ndim}-ubyte"
        path = write_idx(folder / name, array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()


def test_idx_folder_in_the_official_layout_gz_or_plain(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_dir(tmp_path, "train", images, np.array([7, 1, 2]))
    _write_dir(tmp_path, "t10k", images[:2], np.array([4, 5]), gz=False, dotted=True)
    train = mnist.load_idx_dir(tmp_path, "train")
    np.testing.assert_array_equal(train.images, images)
    np.testing.assert_array_equal(train.labels, [7, 1, 2])
    np.testing.assert_array_equal(mnist.load_idx_dir(tmp_path, "test").labels, [4, 5])
    (tmp_path / "t10k-labels.idx1-ubyte").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"no t10k-labels-idx1-ubyte\[.gz\].*holds: t10k-images"
    ):
        mnist.load_idx_dir(tmp_path, "test")
    with pytest.raises(ValueError, match=r"Unknown split 'valid'"):
        mnist.load_idx_dir(tmp_path, "valid")


@pytest.fixture
def fresh_cache():
    mnist._load_mnist.cache_clear()
    yield
    mnist._load_mnist.cache_clear()


def test_load_mnist_prefers_the_idx_folder_from_the_argument_or_environment(
    tmp_path, monkeypatch, fresh_cache
):
    _write_dir(tmp_path, "train", np.zeros((2, 28, 28)), np.array([3, 4]))
    monkeypatch.setenv(mnist.ENV_MNIST_DIR, str(tmp_path))
    digits = mnist.load_mnist("train")
    assert str(tmp_path) in digits.origin and len(digits) == 2
    with pytest.raises(FileNotFoundError, match=r"no t10k-images"):
        mnist.load_mnist("test")  # a named folder never falls back
    monkeypatch.delenv(mnist.ENV_MNIST_DIR)
    with pytest.raises(ValueError, match=r"source='idx' needs mnist_dir"):
        mnist.load_mnist("train", source="idx")
    with pytest.raises(ValueError, match=r"Unknown MNIST source 'web'"):
        mnist.load_mnist("train", source="web")
    assert len(mnist.load_mnist("test", source="embedded")) == 1000


def test_auto_falls_back_to_the_embedded_sample_with_one_clear_log_line(
    tmp_path, monkeypatch, caplog, fresh_cache
):
    monkeypatch.delenv(mnist.ENV_MNIST_DIR, raising=False)
    monkeypatch.setattr(
        mnist, "_reachable", lambda *a, **k: False
    )  # offline, nothing fetched
    with caplog.at_level(logging.WARNING):
        digits = mnist.load_mnist("train", data_dir=str(tmp_path / "tfds"))
    assert len(digits) == 5000
    lines = [r.getMessage() for r in caplog.records if "embedded" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith(
        "using the embedded 6000-digit MNIST sample; pass --mnist_dir or allow TFDS to download for full MNIST"
    )
    assert "cannot be reached" in lines[0]


def test_tfds_source_through_mock_data(tmp_path, monkeypatch, fresh_cache):
    import tensorflow_datasets as tfds

    monkeypatch.delenv(mnist.ENV_MNIST_DIR, raising=False)
    with tfds.testing.mock_data(num_examples=12):
        explicit = mnist.load_mnist("train", data_dir=str(tmp_path), source="tfds")
        monkeypatch.setattr(
            mnist, "_reachable", lambda *a, **k: True
        )  # "downloads" (mocked)
        auto = mnist.load_mnist("test", data_dir=str(tmp_path))
    for digits in (explicit, auto):
        assert digits.images.shape == (12, 28, 28) and digits.images.dtype == np.uint8
        assert digits.labels.shape == (12,) and "TFDS mnist" in digits.origin
