"""Command-line flags shared by everything that reads a dataset (absl).

Importing this module defines ``--dataset``, ``--mnist_dir``, ``--data_dir``,
``--mnist_source`` and ``--seed``; :func:`load_digits` resolves them.
"""

from __future__ import annotations

from absl import flags

from stn_tf.pipelines import datasets, mnist

__all__ = ["FLAGS", "load_digits"]

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "dataset",
    "mnist_rts",
    [*datasets.DATASETS, *datasets.IMAGE_DATASETS],
    "Dataset (see pipelines/datasets.py); cub and svhn are stored images (training only).",
)
flags.DEFINE_string(
    "mnist_dir",
    None,
    "Folder of MNIST-format IDX files (train-images-idx3-ubyte[.gz], t10k-..., as "
    f"distributed); default ${mnist.ENV_MNIST_DIR}. Fashion-MNIST/KMNIST folders work too.",
)
flags.DEFINE_string("data_dir", None, "TFDS data folder (TFDS's default when unset).")
flags.DEFINE_string(
    "manual_dir",
    None,
    "cub, svhn: folder of the downloaded archives, for preparing offline (see README).",
)
flags.DEFINE_enum(
    "mnist_source",
    "auto",
    list(mnist.SOURCES),
    "Where MNIST comes from: auto = --mnist_dir, else TFDS (prepared or downloadable), "
    "else the embedded sample.",
)
flags.DEFINE_integer("seed", 0, "Seed of every random choice of the run.")


def load_digits(split: str) -> mnist.Digits:
    """The split's digits from the source the flags name."""
    return mnist.load_mnist(
        split,
        mnist_dir=FLAGS.mnist_dir,
        data_dir=FLAGS.data_dir,
        source=FLAGS.mnist_source,
    )
