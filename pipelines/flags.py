"""Command-line flags shared by everything that reads a dataset (absl).

Importing this module defines ``--dataset``, ``--mnist_dir``, ``--data_dir``,
``--mnist_source`` and ``--seed``; :func:`load_digits` resolves them.
"""

from __future__ import annotations

from absl import flags

from stn_tf import fields
from stn_tf.pipelines import datasets, mnist

__all__ = ["FLAGS", "load_digits"]

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "dataset",
    datasets.DEFAULT_DATASET,
    [*datasets.DATASETS, *datasets.IMAGE_DATASETS],
    datasets.DATASET_HELP,
)
fields.define_flags(datasets.Sources)  # --mnist_dir, --data_dir, ...
flags.DEFINE_integer("seed", datasets.DEFAULT_SEED, datasets.SEED_HELP)


def load_digits(split: str) -> mnist.Digits:
    """The split's digits from the source the flags name."""
    return mnist.load_mnist(
        split,
        mnist_dir=FLAGS.mnist_dir,
        data_dir=FLAGS.data_dir,
        source=FLAGS.mnist_source,
    )
