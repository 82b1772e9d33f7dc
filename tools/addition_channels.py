"""What each transformer of an MNIST addition run attends to: of the ink in each
transformer's output, the share that comes from each input channel's digit, over
the fixed test set.

    .venv/bin/python -m tools.addition_channels --workdirs=runs/reproduce_addition/mnist_addition_st_fcn_2x_affine

The paper's 2xST-FCN (STN A.1, Table 4 right) has "the two spatial transformers
co-adapt to focus on a single channel each": then one transformer's output is mostly
channel 1 and the other's mostly channel 2. A transformer that looks at both digits
alike keeps about half of each.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from stn_tf import models, runs
from tools import reprolib

reprolib.define_flag(
    "list", "workdirs", None, "Addition runs (workdirs of python -m stn_tf.train)."
)
reprolib.define_flag(
    "integer", "num_examples", 10_000, "Test examples to average over.", lower_bound=1
)
FLAGS = flags.FLAGS


def channel_shares(transformed: np.ndarray) -> np.ndarray:
    """``[K, C]``: per transformer, the mean over examples of each channel's share
    of the ink in its output. ``transformed``: ``[B, K, H, W, C]`` (``[B, H, W, C]``
    for one transformer)."""
    out = np.asarray(transformed, np.float64)
    if out.ndim == 4:
        out = out[:, None]
    ink = np.clip(out, 0.0, None).sum(axis=(2, 3))  # [B, K, C]
    total = ink.sum(axis=-1, keepdims=True)
    shares = np.divide(ink, total, out=np.full_like(ink, np.nan), where=total > 0)
    return np.nanmean(shares, axis=0)


def measure(
    workdir: str, num_examples: int
) -> tuple[runs.TrainConfig, np.ndarray, int]:
    """A run's channel shares over its first ``num_examples`` test examples."""
    config, model, _ = runs.restore(workdir)
    if (
        config.dataset != "mnist_addition"
        or not models.get_model(config.model).uses_transform
    ):
        raise ValueError(
            f"{workdir} trained {config.model!r} on {config.dataset!r}; expected a "
            "transformer model (st_fcn, st_fcn_2x, ...) on mnist_addition"
        )
    pipeline = runs.make_pipeline(config, "test", batch_size=500, training=False)
    parts, seen = [], 0
    for batch in pipeline.dataset():
        images = batch["image"][: num_examples - seen]
        parts.append(model(images, training=False)["transformed"].numpy())
        seen += len(images)
        if seen >= num_examples:
            break
    return config, channel_shares(np.concatenate(parts)), seen


def main(argv):
    del argv
    if not FLAGS.workdirs:
        raise app.UsageError("--workdirs: give at least one addition run")
    rows = []
    for workdir in FLAGS.workdirs:
        config, shares, seen = measure(workdir, FLAGS.num_examples)
        for k, (first, second) in enumerate(shares):
            rows.append(
                [
                    f"{config.model} {config.transform}",
                    f"ST{k + 1}",
                    f"{100 * first:.1f}",
                    f"{100 * second:.1f}",
                    f"{seen:,}",
                ]
            )
    print(
        reprolib.markdown_table(
            [
                "run",
                "transformer",
                "% of its output's ink from channel 1",
                "from channel 2",
                "test examples",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    app.run(main)
