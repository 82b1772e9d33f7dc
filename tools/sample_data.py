"""Small stand-ins for the real-image datasets, and the smoke run, for tests and
benchmarks offline.

- ``smoke_config``: a training config that runs in seconds on the embedded MNIST
  sample; the tests (``conftest.tiny_config``), the golden runs
  (``tools/make_golden.py``) and the reliability table (``tools/reliability.py``)
  all start from it.
- ``write_idx`` / ``mnist_sample``: IDX files as MNIST distributes them; the first
  digits of each split of the embedded sample as an IDX folder (``--mnist_dir``),
  for runs whose evaluation on the sample's 1,000 test digits would be most of
  their time (the 60^3 volumes of ``mnist_3d``, the sequences).
- ``mock_cub``: TFDS's ``caltech_birds2011`` answers with JPEGs made here, of all
  sizes (portrait and landscape, as the real ones), through
  ``tfds.testing.mock_data``; nothing is prepared or downloaded.
- ``write_archive`` / ``write_digit_struct``: SVHN's "full numbers" archives
  (PNGs plus ``digitStruct.mat`` in the MATLAB v7.3 layout), which our
  ``svhn_multi`` builder prepares as it would the real ones; ``svhn_sample``
  writes a train and a test archive of random house numbers.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tarfile
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

GREY, RED, BLUE, GREEN = (128, 128, 128), (255, 0, 0), (0, 0, 255), (0, 255, 0)
BOX_COLOURS = (RED, BLUE, GREEN)


# The smoke run: the embedded sample, a 20k-parameter budget where a width is solved,
# evaluation in a few batches, no pictures along the way.
SMOKE = {
    "dataset": "mnist",
    "model": "fcn",
    "batch_size": 8,
    "mnist_source": "embedded",
    "param_budget": 20_000,
    "eval_batch_size": 250,
    "picture_every": 10**6,
}


def smoke_config(**overrides):
    """A ``TrainConfig`` that trains in seconds on the embedded sample (by default
    an FCN on plain MNIST); ``overrides`` replace any field."""
    from stn_tf.runs import TrainConfig

    return TrainConfig(**{**SMOKE, **overrides})


def write_idx(
    path: Path, array, magic: bytes | None = None, extra: bytes = b""
) -> Path:
    """``array`` (uint8) as an IDX file: the magic (default ``0 0 8 ndim``), the
    dimensions as big-endian int32, the bytes, then ``extra``."""
    array = np.asarray(array)
    header = magic or bytes([0, 0, 8, array.ndim])
    dims = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + dims + array.astype(np.uint8).tobytes() + extra)
    return path


def mnist_sample(folder: Path, num_train: int, num_test: int) -> Path:
    """The first ``num_train`` and ``num_test`` digits of the embedded sample's
    splits, as an IDX folder in MNIST's layout."""
    from stn_tf.pipelines import mnist

    folder.mkdir(parents=True, exist_ok=True)
    for split, stem, num in (("train", "train", num_train), ("test", "t10k", num_test)):
        digits = mnist.load_embedded(split)
        write_idx(folder / f"{stem}-images-idx3-ubyte", digits.images[:num])
        write_idx(folder / f"{stem}-labels-idx1-ubyte", digits.labels[:num])
    return folder


def jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
    """A JPEG of random pixels."""
    from PIL import Image

    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@contextlib.contextmanager
def mock_cub(splits: dict[str, int]) -> Iterator[None]:
    """``caltech_birds2011`` as ``splits[name]`` random JPEGs per split (label = index).

    TFDS prepares CUB with OpenCV, which is not needed here: preparing is mocked
    away, so a stand-in module passes ``stn_tf.pipelines.cub``'s "OpenCV installed?" check.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del self, decoders, read_config, shuffle_files
        rng = np.random.default_rng(len(split))
        n = splits[split]
        sizes = [(90 + 7 * (i % 40), 160 - 5 * (i % 20)) for i in range(n)]
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": [jpeg(rng, h, w) for h, w in sizes],
                "label": np.arange(n, dtype=np.int64) % 200,
            }
        )

    saved = sys.modules.get("cv2")
    sys.modules["cv2"] = types.ModuleType("cv2")
    try:
        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            yield
    finally:
        if saved is None:
            sys.modules.pop("cv2", None)
        else:
            sys.modules["cv2"] = saved


def box_png(width: int, height: int, digits) -> bytes:
    """A grey picture with each digit box painted, in turn, red, blue, green."""
    from PIL import Image

    pixels = np.full((height, width, 3), GREY, np.uint8)
    for i, (left, top, w, h, _) in enumerate(digits):
        pixels[top : top + h, left : left + w] = BOX_COLOURS[i % 3]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_digit_struct(path, images: dict) -> None:
    """digitStruct.mat as MATLAB v7.3 writes it (see pipelines/svhn.py).

    ``images``: file name -> ``(width, height, [(left, top, w, h, label), ...])``.
    """
    import h5py

    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        names = f.create_dataset("digitStruct/name", (len(images), 1), h5py.ref_dtype)
        bbox = f.create_dataset("digitStruct/bbox", (len(images), 1), h5py.ref_dtype)
        for i, (name, (_, _, digits)) in enumerate(images.items()):
            codes = np.array([[ord(c)] for c in name], np.uint16)
            names[i, 0] = refs.create_dataset(f"name{i}", data=codes).ref
            group = refs.create_group(f"bbox{i}")
            for j, field in enumerate(("height", "label", "left", "top", "width")):
                column = {"left": 0, "top": 1, "width": 2, "height": 3, "label": 4}
                values = [float(d[column[field]]) for d in digits]
                if len(values) == 1:
                    group.create_dataset(field, data=[[values[0]]])
                    continue
                ds = group.create_dataset(field, (len(values), 1), h5py.ref_dtype)
                for k, value in enumerate(values):
                    value_ds = refs.create_dataset(f"v{i}_{j}_{k}", data=[[value]])
                    ds[k, 0] = value_ds.ref
            bbox[i, 0] = group.ref


def write_archive(
    path: Path,
    folder: str,
    images: dict,
    struct_first: bool,
    png: Callable[..., bytes] = box_png,
) -> None:
    """``path`` (``.tar.gz``): ``folder/<name>`` PNGs and ``folder/digitStruct.mat``."""
    struct = path.parent / f"{folder}_digitStruct.mat"
    write_digit_struct(struct, images)
    members = [(name, png(*spec)) for name, spec in images.items()]
    entry = ("digitStruct.mat", struct.read_bytes())
    members = [entry, *members] if struct_first else [*members, entry]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    struct.unlink()


def svhn_sample(root: Path, num_train: int, num_test: int, seed: int = 0) -> Path:
    """``root/train.tar.gz`` and ``root/test.tar.gz`` of random 1-5 digit house
    numbers (boxes on a grey picture); returns ``root``, a ``--manual_dir``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("test", num_test)):
        images = {}
        for i in range(count):
            n = int(rng.integers(1, 6))
            width, height = 20 + 14 * n + int(rng.integers(0, 30)), 40
            digits = [
                (6 + 14 * k, 8, 12, 22, int(rng.integers(1, 11))) for k in range(n)
            ]
            images[f"{i + 1}.png"] = (width, height, digits)
        write_archive(root / f"{split}.tar.gz", split, images, struct_first=False)
    return root
