"""Trains a model of the papers on one of their datasets, then evaluates it.

    python -m stn_tf.train --dataset=mnist_rts --model=st_cnn --transform=affine

This file holds the flags and ``main``; the loop is ``stn_tf.training``.
One custom loop serves one device, several (MirroredStrategy) and several
machines (MultiWorkerMirroredStrategy, from ``TF_CONFIG``; only the chief writes
the workdir): ``strategy.run`` over per-replica parts of each global batch. The
workdir is the source of truth: ``config.json`` (written before the first step),
``checkpoints/`` (the same command resumes from the latest, mid-run, after a
kill; SIGTERM saves one first; ``--deterministic`` makes the resumed run end
with the uninterrupted run's weights), TensorBoard
logs in ``tensorboard/``, ``metrics.csv``, and at the end ``results.json`` and
``transformer.png`` (inputs with the transformer's sampling grids, and its
outputs). Defaults follow STN Appendix A.4: SGD, batch 256, learning rate 0.01
divided by 10 at 1/3 and 2/3 of the steps, no weight decay, no dropout.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import app, flags

from stn_tf import cli, fields, models
from stn_tf.pipelines import datasets
from stn_tf.pipelines import flags as _data_flags  # noqa: F401 - defines --dataset, --mnist_dir, ...
from stn_tf.runs import TrainConfig
from stn_tf.training import DataError, Preempted, train_and_evaluate

__all__ = ["Preempted", "TrainConfig", "main", "train_and_evaluate"]


# A flag for every field of TrainConfig, made from its declaration (type, default,
# help, accepted values); --dataset, --seed and the data sources come with
# stn_tf.pipelines.flags. A flag not given takes the dataset's recipe where it has
# one (TrainConfig.for_dataset, runs.RECIPES), else the field's default.
fields.define_flags(
    TrainConfig,
    skip=(
        "dataset",
        "seed",
        *(f.name for f in dataclasses.fields(datasets.Sources)),
        "model_version",  # how a saved run is read back, not a choice to make
    ),
)
flags.DEFINE_string(
    "workdir",
    None,
    "Run folder (default runs/<dataset>_<model>[_<transform>]_s<seed>).",
)

FLAGS = flags.FLAGS


# === Command line ===


def config_from_flags() -> TrainConfig:
    """The config the flags name: ``TrainConfig.for_dataset`` with every flag given
    (the dataset's recipe, ``runs.RECIPES``, for the rest)."""
    given = fields.given(TrainConfig)
    given.pop("dataset", None)
    return TrainConfig.for_dataset(FLAGS.dataset, **given)


@cli.preemptible()
def main(argv):
    cli.prepare(argv)
    try:
        config = config_from_flags()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    uses = models.get_model(config.model).uses_transform
    name = (
        f"{config.dataset}_{config.model}"
        + (f"_{config.transform}" if uses else "")
        + f"_s{config.seed}"
    )
    workdir = FLAGS.workdir or str(Path("runs") / name)
    try:
        train_and_evaluate(config, workdir)
    except (OSError, FloatingPointError, DataError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
