"""A training run's definition: its config, its data, its model, its latest weights.

``TrainConfig`` is what ``python -m stn_tf.train`` writes to ``config.json``; the
functions here rebuild a run's data and model from it, for training and for
everything that reads a finished run (exports, benchmarks). No flags: tools can
import this without inheriting the trainer's command line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import tensorflow as tf

from pipelines import datasets, mnist
from stn_tf import models

__all__ = [
    "COLOCALISATION_DATASETS",
    "MNIST_DATASETS",
    "OPTIMIZERS",
    "TRANSFORMS_2D",
    "TrainConfig",
    "build_model",
    "load_split",
    "restore",
]

# Datasets the training command trains on (co-localisation has its own command,
# python -m stn_tf.colocalise: it learns without labels).
MNIST_DATASETS = (
    "mnist",
    "mnist_r",
    "mnist_rts",
    "mnist_p",
    "mnist_e",
    "mnist_tc",
    "mnist_addition",
    "mnist_sequence",
    "mnist_3d",
)
TRANSFORMS_2D = models.TRANSFORMS_2D
COLOCALISATION_DATASETS = ("mnist_coloc_t", "mnist_coloc_tc")
OPTIMIZERS = ("sgd", "rmsprop")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; written to ``config.json``."""

    dataset: str = "mnist_rts"
    model: str = "st_cnn"
    transform: str | None = None  # None: the model's default (affine, affine3d)
    steps: int = 150_000
    batch_size: int = 256
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    lr_boundaries: tuple[int, ...] = ()
    loc_lr_multiplier: float = 1.0
    seed: int = 0
    augment_on: str = "host"
    param_budget: int = models.PARAM_BUDGET
    downsample: float = 2.0
    dropout: float = 0.0
    mnist_dir: str | None = None
    data_dir: str | None = None
    mnist_source: str = "auto"
    log_every: int = 50
    checkpoint_every: int = 500
    picture_every: int = 2000
    eval_batch_size: int = 500
    deterministic: bool = False

    def __post_init__(self):
        if self.dataset in COLOCALISATION_DATASETS:
            raise ValueError(
                f"dataset {self.dataset!r} is learnt without labels: run "
                "python -m stn_tf.colocalise --dataset=... --digit=K --encoder=RUN"
            )
        if self.dataset not in MNIST_DATASETS:
            raise ValueError(
                f"dataset {self.dataset!r} has no model here yet; expected one of {MNIST_DATASETS}"
            )
        spec = models.get_model(self.model)
        data = datasets.get_dataset(self.dataset)
        fitting = models.models_for(data.shape, data.label_shape)
        if self.model not in fitting:
            raise ValueError(
                f"model {self.model!r} does not fit dataset {self.dataset!r} "
                f"(examples {data.shape}, labels {data.label_shape or 'one per example'}); "
                f"models for it: {', '.join(fitting)}"
            )
        if self.transform is None:
            object.__setattr__(self, "transform", (spec.transforms or ("affine",))[0])
        allowed = spec.transforms or TRANSFORMS_2D + ("affine3d",)
        if self.transform not in allowed:
            raise ValueError(
                f"model {self.model!r} takes transform one of {allowed}. "
                f"Received: transform={self.transform!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {OPTIMIZERS}. Received: {self.optimizer!r}"
            )
        if self.optimizer != "sgd" and self.loc_lr_multiplier != 1.0:
            raise ValueError(
                "loc_lr_multiplier scales the localisation net's gradients, which is "
                f"its learning rate only under SGD. Received: optimizer={self.optimizer!r}, "
                f"loc_lr_multiplier={self.loc_lr_multiplier}"
            )
        if not self.downsample > 0:
            raise ValueError(f"downsample must be > 0. Received: {self.downsample}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")
        if not self.lr_boundaries:  # the paper's 50k and 100k of 150k steps
            thirds = {self.steps // 3, 2 * self.steps // 3} - {0}
            object.__setattr__(self, "lr_boundaries", tuple(sorted(thirds)))
        bounds = tuple(int(b) for b in self.lr_boundaries)
        if bounds and (list(bounds) != sorted(set(bounds)) or bounds[0] < 1):
            raise ValueError(
                f"lr_boundaries must be strictly increasing positive steps. Received: {bounds}"
            )
        object.__setattr__(self, "lr_boundaries", bounds)

    @property
    def pool(self) -> int:
        return 2 if self.dataset in models.POOLED_DATASETS else 1

    def same_run(self, other: dict) -> list[str]:
        """Fields that differ from a saved config and make resuming meaningless."""
        keys = (
            "dataset",
            "model",
            "transform",
            "batch_size",
            "seed",
            "param_budget",
            "downsample",
            "optimizer",
        )
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return [k for k in keys if other.get(k, defaults[k]) != getattr(self, k)]


def load_split(config: TrainConfig, split: str) -> mnist.Digits:
    """The digits of a run's ``split`` ("train" or "test"), from the run's source."""
    return mnist.load_mnist(
        split,
        mnist_dir=config.mnist_dir,
        data_dir=config.data_dir,
        source=config.mnist_source,
    )


def build_model(config: TrainConfig, *, jit_compile: bool = True) -> keras.Model:
    """The run's model, untrained (the same widths every time for a config)."""
    spec = datasets.get_dataset(config.dataset)
    return models.build_model(
        config.model,
        spec.shape,
        spec.num_classes,
        label_shape=spec.label_shape,
        transform=config.transform
        if models.get_model(config.model).transforms
        else None,
        pool=config.pool,
        downsample=config.downsample,
        dropout=config.dropout,
        param_budget=config.param_budget,
        jit_compile=jit_compile,
    )


def restore(
    workdir: str | Path, *, jit_compile: bool = False
) -> tuple[TrainConfig, keras.Model, int]:
    """A run's config and model with the weights of its latest checkpoint.

    Returns ``(config, model, step)``. The sampler runs without XLA by default:
    exports and evaluation tools want the plain graph.
    """
    workdir = Path(workdir)
    path = workdir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{workdir} is not a training run: no config.json in it "
            "(expected the --workdir of python -m stn_tf.train)"
        )
    saved = json.loads(path.read_text())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in names})
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    if latest is None:
        raise FileNotFoundError(
            f"{workdir} has no checkpoint in {workdir / 'checkpoints'}: train it first "
            "(checkpoints are written every --checkpoint_every steps and at the end)"
        )
    model = build_model(config, jit_compile=jit_compile)
    checkpoint = tf.train.Checkpoint(model=model)  # the optimizer's slots stay behind
    checkpoint.restore(latest).expect_partial().assert_existing_objects_matched()
    step = int(latest.rsplit("-", 1)[1])  # checkpoints are numbered by step
    return config, model, step
