"""MNIST-format sources: a checked reader of IDX files and the embedded sample."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "load_idx_pair", "load_embedded_sample", "EMBEDDED_DIR"]

EMBEDDED_DIR = Path(__file__).parent / "data"

# IDX magic: two zero bytes, a type code, the number of dimensions.
_IDX_TYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzipped), checking its header against its size.

    Args:
        path: an ``*-idx?-ubyte`` file, plain or ``.gz``.

    Returns:
        The array, ``uint8``, of the shape the header gives.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a bad magic number, an unsupported type or a size that does
            not match the header (truncated or padded file), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip: truncated or not gzip at all
        raise ValueError(f"{path}: cannot read ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path}: not an IDX file of unsigned bytes (magic number "
            f"{data[:4].hex() or 'missing'}, expected 0000 08 <ndim>)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: IDX header truncated or with 0 dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file "
            f"has {len(data)} bytes (truncated or corrupt)"
        )
    return np.frombuffer(data, _IDX_TYPES[data[2]], offset=header).reshape(shape)


def load_idx_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """Reads an images file ``[N, H, W]`` and its labels ``[N]``, checking they agree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{images_path} and {labels_path} do not pair up: images {images.shape}, "
            f"labels {labels.shape} (expected [N, H, W] and [N])"
        )
    return images, labels


def load_embedded_sample() -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 real MNIST digits shipped with the package (see data/README.md).

    Returns:
        ``uint8`` images ``[1000, 28, 28]`` and labels ``[1000]``.
    """
    return load_idx_pair(
        EMBEDDED_DIR / "mnist-sample-images-idx3-ubyte.gz",
        EMBEDDED_DIR / "mnist-sample-labels-idx1-ubyte.gz",
    )
