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
import signal
from pathlib import Path

from absl import app, flags

from stn_tf import cli, models
from stn_tf.pipelines import datasets
from stn_tf.pipelines import flags as _data_flags  # noqa: F401 - defines --dataset, --mnist_dir, ...
from stn_tf.runs import (
    OPTIMIZERS,
    PRECISIONS,
    TRANSFORMS_2D,
    WEIGHTS,
    TrainConfig,
)
from stn_tf.training import Preempted, train_and_evaluate

__all__ = ["Preempted", "TrainConfig", "main", "train_and_evaluate"]


# Every flag that is a config field takes its default from TrainConfig, the one
# source; a flag not given takes the dataset's recipe where it has one
# (TrainConfig.for_dataset, runs.RECIPES).
_DEFAULT = TrainConfig.defaults()

flags.DEFINE_enum(
    "model",
    _DEFAULT["model"],
    list(models.MODELS),
    "Model (stn_tf/models); default: the dataset's (st_cnn for distorted MNIST, "
    "rnn_spn, st_fcn_2x, st_cnn_3d, st_inception for cub, st_cnn_multi for svhn).",
)
flags.DEFINE_enum(
    "transform",
    _DEFAULT["transform"],
    [*TRANSFORMS_2D, "affine3d"],
    "Transform of ST models (default: the model's, affine or affine3d).",
)
flags.DEFINE_integer(
    "steps", _DEFAULT["steps"], "Training steps (the paper: 150k).", lower_bound=1
)
flags.DEFINE_integer(
    "batch_size", _DEFAULT["batch_size"], "Global batch size.", lower_bound=1
)
flags.DEFINE_float(
    "learning_rate", _DEFAULT["learning_rate"], "Base learning rate.", lower_bound=0.0
)
flags.DEFINE_enum(
    "optimizer",
    _DEFAULT["optimizer"],
    list(OPTIMIZERS),
    "sgd (STN paper) or rmsprop (RNN-SPN paper).",
)
flags.DEFINE_float(
    "momentum",
    _DEFAULT["momentum"],
    "Momentum of the optimizer (the STN paper: plain SGD, 0).",
    lower_bound=0.0,
    upper_bound=0.999,
)
flags.DEFINE_list(
    "lr_boundaries",
    None,  # not given: the config's own default, 1/3 and 2/3 of the steps
    "Steps at which the learning rate is divided by 10 (default: 1/3 and 2/3 of --steps).",
)
flags.DEFINE_float(
    "loc_lr_multiplier",
    _DEFAULT["loc_lr_multiplier"],
    "Learning rate of the localisation net, times the base rate.",
    lower_bound=0.0,
)
flags.DEFINE_integer(
    "loc_hold_steps",
    _DEFAULT["loc_hold_steps"],
    "Steps during which the localisation nets are not trained (held at the identity) "
    "while the rest of the model is: the classifier learns first.",
    lower_bound=0,
)
flags.DEFINE_enum(
    "augment_on",
    _DEFAULT["augment_on"],
    list(datasets.AUGMENT_ON),
    "Where distortions run.",
)
flags.DEFINE_string(
    "workdir",
    None,
    "Run folder (default runs/<dataset>_<model>[_<transform>]_s<seed>).",
)
flags.DEFINE_integer(
    "param_budget",
    _DEFAULT["param_budget"],
    "Parameters every model gets.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "width",
    _DEFAULT["width"],
    "Classifier width (FCN units, CNN filters); default: the width that meets "
    "--param_budget (written to config.json). The sequence, SVHN and CUB models "
    "have the papers' fixed widths.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "starts",
    _DEFAULT["starts"],
    list(models.STARTS),
    "rnn_spn: where the glimpses start: identity (the paper) or left_to_right "
    "(windows of 0.6x the input, left to right; an aid, not the paper's).",
)
flags.DEFINE_bool(
    "learn_offsets",
    _DEFAULT["learn_offsets"],
    "rnn_spn: train the per-step offsets of --starts (an aid, not the paper's).",
)
flags.DEFINE_bool(
    "shared_localization",
    _DEFAULT["shared_localization"],
    "st_fcn_2x: one localisation net with two heads instead of the paper's two "
    "independent transformers.",
)
flags.DEFINE_float(
    "downsample",
    _DEFAULT["downsample"],
    "Down-sampling factor d of the transformer (rnn_spn, ffn_spn, st_cnn_3d).",
    lower_bound=0.01,
)
flags.DEFINE_float(
    "dropout",
    _DEFAULT["dropout"],
    "Dropout rate of the sequence models' classifiers.",
    lower_bound=0.0,
    upper_bound=0.99,
)
flags.DEFINE_float(
    "weight_decay",
    _DEFAULT["weight_decay"],
    "Weight decay of the kernels, as the papers mean it: an L2 penalty "
    "wd/2 * sum(w^2) added to the loss, so momentum and --loc_lr_multiplier apply "
    "to it (not Keras's decoupled decay); cub and svhn default to the paper's.",
    lower_bound=0.0,
)
flags.DEFINE_integer(
    "accumulate",
    _DEFAULT["accumulate"],
    "Gradient accumulation: each step sums the gradients of this many equal parts "
    "of the batch (for batches that do not fit the accelerator at once).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "image_size",
    _DEFAULT["image_size"],
    "cub: 448 or 224 (default 448); svhn: 64 or 128 (default 64).",
)
flags.DEFINE_integer(
    "num_st",
    _DEFAULT["num_st"],
    "cub: parallel attention transformers (0: the Inception baseline; default 4).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "crop_size",
    _DEFAULT["crop_size"],
    "cub: side of each transformer's crop.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "weights",
    _DEFAULT["weights"],
    list(WEIGHTS),
    "cub: the Inception backbones' starting weights (none: random, offline).",
)
flags.DEFINE_bool(
    "xla_sampler",
    _DEFAULT["xla_sampler"],
    "Run the transformers' sampler through XLA (--noxla_sampler: the plain graph).",
)
flags.DEFINE_integer(
    "log_every",
    _DEFAULT["log_every"],
    "Steps between progress lines and metrics rows.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "checkpoint_every",
    _DEFAULT["checkpoint_every"],
    "Steps between checkpoints.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "picture_every",
    _DEFAULT["picture_every"],
    "Steps between TensorBoard pictures.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "precision",
    _DEFAULT["precision"],
    list(PRECISIONS),
    "The training step's compute: float32, or mixed_bfloat16 (bfloat16 activations, "
    "float32 variables and loss; faster on CPUs with AVX512_BF16 and on GPUs). "
    "Checkpoints and exports are float32 either way.",
)
flags.DEFINE_integer(
    "eval_every",
    _DEFAULT["eval_every"],
    "Steps between evaluations on the whole test set, written to eval.csv, "
    "TensorBoard and results.json's curve (0: at the end only).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "eval_batch_size",
    _DEFAULT["eval_batch_size"],
    "Batch size of the final evaluation.",
    lower_bound=1,
)
flags.DEFINE_bool(
    "deterministic",
    _DEFAULT["deterministic"],
    "Deterministic ops: a run resumed after a kill ends with the same weights.",
)

FLAGS = flags.FLAGS


# === Command line ===


def config_from_flags() -> TrainConfig:
    """The config the flags name: ``TrainConfig.for_dataset`` with every flag given
    (the dataset's recipe, ``runs.RECIPES``, for the rest)."""
    given = {
        f.name: FLAGS[f.name].value
        for f in dataclasses.fields(TrainConfig)
        if f.name in FLAGS and FLAGS[f.name].present and f.name != "dataset"
    }
    if "lr_boundaries" in given:
        given["lr_boundaries"] = tuple(int(b) for b in given["lr_boundaries"] or ())
    return TrainConfig.for_dataset(FLAGS.dataset, **given)


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
    except Preempted as e:
        print(str(e), flush=True)
        raise SystemExit(128 + signal.SIGTERM) from None  # the shell's code for SIGTERM
    except (OSError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
