"""MNIST-format sources: TFDS, a folder of IDX files, or the embedded sample.

``load_mnist(split)`` picks the source the way the command-line tools do:

1. ``mnist_dir`` (or the environment variable ``STN_TF_MNIST_DIR``): a folder of
   IDX files named as the official distribution (``train-images-idx3-ubyte[.gz]``,
   ``t10k-labels-idx1-ubyte[.gz]``, ...). Fashion-MNIST and KMNIST folders work too.
2. TFDS ``mnist`` in ``data_dir``: read if prepared, downloaded if not and the
   download host answers.
3. Otherwise the real MNIST sample shipped inside the package (5,000 training and
   1,000 test digits, see ``data/README.md``), with one log line saying so.

A source that is named explicitly (``source="idx"|"tfds"|"embedded"`` or a given
``mnist_dir``) never falls back: its errors are raised, naming the file and what was
wrong with it.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import socket
from pathlib import Path

import numpy as np
from absl import logging

__all__ = [
    "EMBEDDED_DIR",
    "ENV_MNIST_DIR",
    "SOURCES",
    "SPLITS",
    "Digits",
    "load_embedded",
    "idx_folder",
    "load_idx_dir",
    "load_idx_pair",
    "load_mnist",
    "load_tfds",
    "read_idx",
    "split_files",
]

SOURCES = ("auto", "idx", "tfds", "embedded")
SPLITS = ("train", "test")
ENV_MNIST_DIR = "STN_TF_MNIST_DIR"
EMBEDDED_DIR = Path(__file__).parent / "data" / "mnist"

# IDX magic: two zero bytes, a type code, the number of dimensions.
_IDX_TYPES = {0x08: np.uint8}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
# Where TFDS downloads MNIST from; probed before trying, so an offline machine
# falls back at once instead of retrying for minutes.
_TFDS_HOST = ("storage.googleapis.com", 443)
_FALLBACK_LOGGED = False


@dataclasses.dataclass(frozen=True)
class Digits:
    """One split of an MNIST-format dataset, in memory.

    Attributes:
        images: ``uint8 [N, H, W]``, 0 = background.
        labels: ``int32 [N]``.
        origin: where the digits came from, for logs and ``config.json``.
    """

    images: np.ndarray
    labels: np.ndarray
    origin: str

    def __post_init__(self):
        if (
            self.images.ndim != 3
            or self.labels.shape != (len(self.images),)
            or not len(self.images)
        ):
            raise ValueError(
                f"{self.origin}: expected images [N, H, W] and labels [N] with N > 0. "
                f"Received: images {self.images.shape}, labels {self.labels.shape}"
            )

    def __len__(self):
        return len(self.images)


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
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
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


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")


def _find(directory: Path, stem: str) -> Path:
    # The official names, also with the dot some mirrors use (train-images.idx3-ubyte).
    names = [stem, stem.replace("-idx", ".idx")]
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise FileNotFoundError(
        f"{directory}: no {stem}[.gz] in this folder "
        + (
            f"(it holds: {', '.join(present[:12])})"
            if present
            else "(missing or empty)"
        )
    )


def split_files(directory: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """The images and labels files of ``split`` in a folder laid out as the official
    MNIST distribution."""
    _check_split(split)
    directory = Path(directory).expanduser()
    prefix = _IDX_PREFIX[split]
    return (
        _find(directory, f"{prefix}-images-idx3-ubyte"),
        _find(directory, f"{prefix}-labels-idx1-ubyte"),
    )


def idx_folder(mnist_dir: str | None, source: str, origin: str = "") -> Path | None:
    """The folder of IDX files ``load_mnist(mnist_dir=..., source=...)`` reads, or
    None where it reads TFDS. ``origin``: the ``Digits.origin`` it gave, which says
    whether ``source="auto"`` fell back to the embedded sample."""
    mnist_dir = mnist_dir or os.environ.get(ENV_MNIST_DIR) or None
    if source in ("idx", "auto") and mnist_dir:
        return Path(mnist_dir).expanduser()
    if source == "embedded" or origin.startswith("embedded"):
        return EMBEDDED_DIR
    return None


def load_idx_dir(directory: str | os.PathLike, split: str) -> Digits:
    """One split from a folder laid out as the official MNIST distribution."""
    directory = Path(directory).expanduser()
    images_path, labels_path = split_files(directory, split)
    images, labels = load_idx_pair(images_path, labels_path)
    return Digits(
        images, labels.astype(np.int32), f"IDX files in {directory} ({split})"
    )


def load_embedded(split: str) -> Digits:
    """The real MNIST sample inside the package: 5,000 train / 1,000 test digits."""
    digits = load_idx_dir(EMBEDDED_DIR, split)
    return dataclasses.replace(
        digits, origin=f"embedded {len(digits)}-digit MNIST sample ({split})"
    )


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(
    split: str, data_dir: str | None = None, *, download: bool = True
) -> Digits:
    """One split of TFDS ``mnist``: read from ``data_dir`` or downloaded there."""
    _check_split(split)
    import tensorflow_datasets as tfds

    builder = tfds.builder("mnist", data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"mnist is not prepared in {builder.data_dir} and its download host "
                f"{_TFDS_HOST[0]} cannot be reached"
            )
        builder.download_and_prepare()
    # Batches of 4096, not batch_size=-1: that one crashes on datasets of unknown
    # length (as under tfds.testing.mock_data).
    parts = list(tfds.as_numpy(builder.as_dataset(split=split).batch(4096)))
    if not parts:
        raise ValueError(f"TFDS mnist in {builder.data_dir}: split {split!r} is empty")
    images = np.concatenate([p["image"] for p in parts])
    labels = np.concatenate([p["label"] for p in parts])
    if images.ndim == 4:  # TFDS stores [N, 28, 28, 1]
        images = images[..., 0]
    return Digits(
        images.astype(np.uint8),
        labels.astype(np.int32),
        f"TFDS mnist in {builder.data_dir} ({split})",
    )


def load_mnist(
    split: str,
    *,
    mnist_dir: str | None = None,
    data_dir: str | None = None,
    source: str = "auto",
) -> Digits:
    """One split of MNIST from the first source available (see the module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        mnist_dir: a folder of IDX files; defaults to ``$STN_TF_MNIST_DIR``.
        data_dir: TFDS data folder (TFDS's default when None).
        source: ``"auto"`` (IDX folder, then TFDS, then the embedded sample),
            ``"idx"``, ``"tfds"`` or ``"embedded"``.

    Returns:
        The split's :class:`Digits` (cached: callers must not modify the arrays).
    """
    _check_split(split)
    if source not in SOURCES:
        raise ValueError(f"Unknown MNIST source {source!r}; expected one of {SOURCES}")
    mnist_dir = mnist_dir or os.environ.get(ENV_MNIST_DIR) or None
    if source == "idx" and not mnist_dir:
        raise ValueError(f"source='idx' needs mnist_dir (or ${ENV_MNIST_DIR})")
    if source == "auto" and mnist_dir:
        source = "idx"
    return _load_mnist(split, mnist_dir, data_dir, source)


@functools.lru_cache(maxsize=8)
def _load_mnist(split, mnist_dir, data_dir, source) -> Digits:
    if source == "idx":
        return load_idx_dir(mnist_dir, split)
    if source == "embedded":
        return load_embedded(split)
    if source == "tfds":
        return load_tfds(split, data_dir)
    # auto without an IDX folder: TFDS if prepared or downloadable, else the sample.
    try:
        return load_tfds(split, data_dir, download=_reachable(*_TFDS_HOST))
    except Exception as e:  # noqa: BLE001 - any TFDS failure falls back, and says why
        digits = load_embedded(split)
        global _FALLBACK_LOGGED
        if not _FALLBACK_LOGGED:  # one line per process, not one per split
            _FALLBACK_LOGGED = True
            size = sum(
                len(
                    read_idx(_find(EMBEDDED_DIR, f"{_IDX_PREFIX[s]}-labels-idx1-ubyte"))
                )
                for s in SPLITS
            )
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            logging.warning(
                "using the embedded %d-digit MNIST sample; pass --mnist_dir or allow TFDS "
                "to download for full MNIST (TFDS: %s)",
                size,
                reason,
            )
        return digits
