"""A training run's definition: its config, its data, its model, its latest weights.

``TrainConfig`` is what ``python -m stn_tf.train`` writes to ``config.json``; the
functions here rebuild a run's data and model from it, for training and for
everything that reads a finished run (exports, benchmarks). No flags: tools can
import this without inheriting the trainer's command line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from stn_tf import models
from stn_tf.pipelines import datasets, mnist

__all__ = [
    "ALL_DATASETS",
    "COLOCALISATION_DATASETS",
    "IMAGE_DATASETS",
    "MNIST_DATASETS",
    "OPTIMIZERS",
    "PRECISIONS",
    "RECIPES",
    "TRAIN_DATASETS",
    "TRANSFORMS_2D",
    "TrainConfig",
    "build_model",
    "dataset_spec",
    "decoder",
    "encoded_examples",
    "config_from_saved",
    "read_config",
    "load_split",
    "make_pipeline",
    "restore",
]

# Datasets the training command trains on (co-localisation has its own command,
# python -m stn_tf.colocalise: it learns without labels).
ALL_DATASETS = datasets.ALL_DATASETS
TRAIN_DATASETS = tuple(n for n, d in ALL_DATASETS.items() if d.labelled)
MNIST_DATASETS = tuple(n for n in TRAIN_DATASETS if ALL_DATASETS[n].family == "mnist")
IMAGE_DATASETS = tuple(datasets.IMAGE_DATASETS)  # cub, svhn
COLOCALISATION_DATASETS = tuple(n for n, d in ALL_DATASETS.items() if not d.labelled)
TRANSFORMS_2D = models.TRANSFORMS_2D
OPTIMIZERS = ("sgd", "rmsprop")
WEIGHTS = ("imagenet", "none")

# The papers' recipes where they differ from A.4's (SGD, batch 256, lr 0.01 / 10
# at 1/3 and 2/3): the training command starts from these for every flag not
# given. Momentum 0.9 is ours: the papers do not say.
RECIPES = {
    # RNN-SPN paper §4: RMSprop. It gives no learning rate, batch size, schedule or
    # dropout ("optimized on the validation set"): lr 1e-3 (RMSprop's usual rate)
    # and batch 64 are ours.
    "mnist_sequence": dict(
        optimizer="rmsprop",
        learning_rate=1e-3,
        batch_size=64,
        momentum=0.0,
    ),
    # STN A.6: 30k steps, batch 256, lr 0.1 / 10 after 10k, 20k, 25k; the
    # localisation net at 1e-4 x; weight decay 1e-5; dropout 0.7.
    "cub": dict(
        steps=30_000,
        batch_size=256,
        learning_rate=0.1,
        momentum=0.9,
        lr_boundaries=(10_000, 20_000, 25_000),
        loc_lr_multiplier=1e-4,
        weight_decay=1e-5,
        dropout=0.7,
        eval_batch_size=32,
    ),
    # STN A.5: 400k steps, batch 128, lr 0.01 / 10 every 80k; localisation nets at
    # 0.1 x; weight decay 5e-4; dropout 0.5.
    "svhn": dict(
        steps=400_000,
        batch_size=128,
        learning_rate=0.01,
        momentum=0.9,
        lr_boundaries=(80_000, 160_000, 240_000, 320_000),
        loc_lr_multiplier=0.1,
        weight_decay=5e-4,
        dropout=0.5,
        eval_batch_size=250,
    ),
}


# What the model arguments were in each earlier version of the models, so that
# runs written then restore into the same architecture.
MODEL_VERSIONS = {
    1: dict(
        shared_localization=True,  # st_fcn_2x: one net, two heads
        starts="left_to_right",  # rnn_spn: ...
        learn_offsets=True,  # ... with trained per-step offsets
        pooled_localization=False,  # st_cnn_3d: Dense(14,580 -> 20)
        match_st_classifier=False,  # cnn_3d: its own 400k width
    ),
    2: {},
}
PRECISIONS = ("float32", "mixed_bfloat16")
# Model options that are config fields (and flags): given only to models that
# take them.
MODEL_OPTIONS = ("starts", "learn_offsets", "shared_localization")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; written to ``config.json``."""

    dataset: str = "mnist_rts"
    model: str | None = (
        None  # None: the dataset's (stn_tf.pipelines.datasets, its .model)
    )
    transform: str | None = None  # None: the model's default (affine, affine3d)
    steps: int = 150_000
    batch_size: int = 256
    learning_rate: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    lr_boundaries: tuple[int, ...] = ()
    loc_lr_multiplier: float = 1.0
    # Steps during which the localisation nets are held at their start (identity)
    # while the classifier learns (docs/deviations.md, "Addition recipe").
    loc_hold_steps: int = 0
    seed: int = 0
    augment_on: str = "host"
    param_budget: int = models.PARAM_BUDGET
    width: int | None = None  # None: the width that meets param_budget (then saved)
    # rnn_spn's aids (not the paper's): steps starting left to right, trained offsets
    starts: str = "identity"
    learn_offsets: bool = False
    shared_localization: bool = False  # st_fcn_2x: one localisation net, two heads
    # The models' definitions: 2 since the paper-faithful models (independent
    # 2xST-FCN transformers, the paper's RNN-SPN, the pooled 3D localisation net);
    # a config.json without it was written by version 1 (see MODEL_VERSIONS).
    model_version: int = 2
    downsample: float = 2.0
    dropout: float = 0.0
    weight_decay: float = 0.0
    accumulate: int = 1
    image_size: int | None = None  # cub, svhn: None is the dataset's first size
    num_st: int | None = None  # st_inception: None is 4
    crop_size: int = 224  # st_inception
    weights: str = "imagenet"  # st_inception: imagenet or none
    mnist_dir: str | None = None
    data_dir: str | None = None
    manual_dir: str | None = None
    mnist_source: str = "auto"
    xla_sampler: bool = True
    log_every: int = 50
    checkpoint_every: int = 500
    picture_every: int = 2000
    eval_every: int = 0  # steps between test-set evaluations (0: at the end only)
    # The training step's compute: float32, or mixed_bfloat16 (bfloat16 activations,
    # float32 variables and loss). Checkpoints hold float32 variables either way.
    precision: str = "float32"
    eval_batch_size: int = 500
    deterministic: bool = False

    def __post_init__(self):
        if self.dataset in COLOCALISATION_DATASETS:
            raise ValueError(
                f"dataset {self.dataset!r} is learnt without labels: run "
                "python -m stn_tf.colocalise --dataset=... --digit=K --encoder=RUN"
            )
        if self.dataset not in TRAIN_DATASETS:
            raise ValueError(
                f"Unknown dataset {self.dataset!r}; expected one of {TRAIN_DATASETS}"
            )
        if self.model is None:
            object.__setattr__(self, "model", ALL_DATASETS[self.dataset].model)
        self._check_images()
        spec = models.get_model(self.model)
        data = dataset_spec(self)
        fitting = models.models_for(data.shape, data.label_shape, data.family)
        if self.model not in fitting:
            raise ValueError(
                f"model {self.model!r} does not fit dataset {self.dataset!r} "
                f"(examples {data.shape}, labels {data.label_shape or 'one per example'}); "
                f"models for it: {', '.join(fitting)}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {PRECISIONS}. Received: {self.precision!r}"
            )
        if self.eval_every < 0:
            raise ValueError(
                "eval_every must be 0 (evaluate at the end only) or a positive "
                f"number of steps. Received: {self.eval_every}"
            )
        if self.model_version not in MODEL_VERSIONS:
            raise ValueError(
                f"model_version must be one of {tuple(MODEL_VERSIONS)}. "
                f"Received: {self.model_version}"
            )
        if self.starts not in models.STARTS:
            raise ValueError(
                f"starts must be one of {models.STARTS}. Received: {self.starts!r}"
            )
        defaults = self.defaults()
        for option in MODEL_OPTIONS:
            value = getattr(self, option)
            if value != defaults[option] and option not in spec.cls.accepted_args():
                raise ValueError(
                    f"{option} is an option of "
                    f"{[n for n, m in models.MODELS.items() if option in m.cls.accepted_args()]}; "
                    f"model {self.model!r} does not take it. Received: {option}={value!r}"
                )
        if self.width is not None and "width" not in spec.cls.accepted_args():
            raise ValueError(
                f"model {self.model!r} has the paper's fixed layers, no width. "
                f"Received: width={self.width}"
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
        if self.loc_hold_steps < 0:
            raise ValueError(
                "loc_hold_steps must be 0 (train the localisation nets from the first "
                f"step) or a positive number of steps. Received: {self.loc_hold_steps}"
            )
        if self.loc_hold_steps and not spec.uses_transform:
            raise ValueError(
                f"loc_hold_steps holds the localisation nets of a spatial transformer; "
                f"model {self.model!r} has none. Received: loc_hold_steps="
                f"{self.loc_hold_steps}"
            )
        if not self.downsample > 0:
            raise ValueError(f"downsample must be > 0. Received: {self.downsample}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")
        if not self.weight_decay >= 0.0:
            raise ValueError(
                f"weight_decay must be >= 0. Received: {self.weight_decay}"
            )
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            raise ValueError(
                "accumulate must be a positive divisor of batch_size (each step sums "
                f"the gradients of `accumulate` equal parts). Received: accumulate="
                f"{self.accumulate}, batch_size={self.batch_size}"
            )
        if not self.lr_boundaries:  # the paper's 50k and 100k of 150k steps
            thirds = {self.steps // 3, 2 * self.steps // 3} - {0}
            object.__setattr__(self, "lr_boundaries", tuple(sorted(thirds)))
        bounds = tuple(int(b) for b in self.lr_boundaries)
        if bounds and (list(bounds) != sorted(set(bounds)) or bounds[0] < 1):
            raise ValueError(
                f"lr_boundaries must be strictly increasing positive steps. Received: {bounds}"
            )
        object.__setattr__(self, "lr_boundaries", bounds)

    def _check_images(self):
        """The stored-image fields: given only where they mean something."""
        data = datasets.get_dataset(self.dataset)
        if data.family == "mnist":
            if self.image_size is not None:
                raise ValueError(
                    f"image_size is for {IMAGE_DATASETS}; {self.dataset!r} has "
                    f"{data.shape[:-1]} images. Received: image_size={self.image_size}"
                )
        else:
            if self.image_size is None:
                object.__setattr__(self, "image_size", data.sizes[0])
            if data.family == "svhn" and self.image_size not in data.sizes:
                raise ValueError(
                    f"svhn comes in {data.sizes} px crops. Received: "
                    f"image_size={self.image_size}"
                )
            if self.augment_on != "host":
                raise ValueError(
                    f"{self.dataset} is augmented on the host. Received: "
                    f"augment_on={self.augment_on!r}"
                )
        if self.model == "st_inception":
            if self.num_st is None:
                object.__setattr__(self, "num_st", 4)
            if self.weights not in WEIGHTS:
                raise ValueError(
                    f"weights must be one of {WEIGHTS}. Received: {self.weights!r}"
                )
            # The model's own checks (backbone size, crops), before any work.
            models.STInception.check_args(
                (self.image_size, self.image_size, 3), self.num_st, self.crop_size
            )
        elif self.num_st is not None:
            raise ValueError(
                "num_st sets the parallel transformers of st_inception (--dataset=cub). "
                f"Received: num_st={self.num_st} with model {self.model!r}"
            )

    @classmethod
    def for_dataset(cls, dataset: str = "mnist_rts", **fields) -> TrainConfig:
        """The config of a run on ``dataset`` with its paper's recipe (``RECIPES``)
        for every field not given, as ``python -m stn_tf.train --dataset=...``
        builds it. Given ``steps`` but not ``lr_boundaries``, the recipe's
        boundaries keep their place relative to the end.

            TrainConfig.for_dataset("mnist_sequence")  # RMSprop, lr 1e-3, batch 64
            TrainConfig.for_dataset("cub", steps=300)  # A.6, boundaries 100, 200, 250
        """
        recipe = dict(RECIPES.get(dataset, {}))
        if "lr_boundaries" in recipe and "steps" in fields:
            scale = fields["steps"] / recipe["steps"]
            bounds = {round(b * scale) for b in recipe.pop("lr_boundaries")} - {0}
            recipe["lr_boundaries"] = tuple(
                sorted(b for b in bounds if b < fields["steps"])
            )
        return cls(dataset=dataset, **{**recipe, **fields})

    @classmethod
    def defaults(cls) -> dict:
        """Every field's default, the one source of them (the flags read it too)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @property
    def pool(self) -> int:
        return ALL_DATASETS[self.dataset].pool

    @property
    def sources(self) -> datasets.Sources:
        return datasets.Sources(
            self.mnist_dir, self.data_dir, self.manual_dir, self.mnist_source
        )

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
            "image_size",
            "num_st",
            "crop_size",
            "precision",  # resumable, but its results would not be this config's
            *MODEL_OPTIONS,
        )
        try:
            saved = config_from_saved(other)
        except (TypeError, ValueError) as e:  # a config this code cannot build
            return [f"(the saved config: {e})"]
        changed = [
            k for k in (*keys, "model_version") if getattr(saved, k) != getattr(self, k)
        ]
        # Runs saved before the width was kept have none: they resolve it again.
        if None not in (saved.width, self.width) and saved.width != self.width:
            changed.append("width")
        return changed


def dataset_spec(config: TrainConfig) -> datasets.DatasetSpec:
    """The run's dataset, its images at the run's ``image_size``."""
    spec = datasets.get_dataset(config.dataset)
    if config.image_size is None:
        return spec
    side = config.image_size
    return dataclasses.replace(spec, shape=(side, side, spec.shape[-1]))


def make_pipeline(config: TrainConfig, split: str, *, batch_size: int, training: bool):
    """The run's ``split`` (train or test) as a ``Pipeline`` (distorted MNIST) or an
    ``ImagePipeline`` (CUB, SVHN; prepared by TFDS on first use)."""
    return dataset_spec(config).make_pipeline(
        split,
        batch_size=batch_size,
        training=training,
        seed=config.seed,
        sources=config.sources,
    )


def decoder(config: TrainConfig) -> Callable | None:
    """``encoded image bytes -> float32 example``, exactly as the run's test pipeline
    prepares a stored image (CUB: resize and centre crop; SVHN: the crop as it is,
    resized if it has another size); None for the generated MNIST sets."""
    return dataset_spec(config).decoder()


def encoded_examples(config: TrainConfig, split: str, num: int) -> list[bytes]:
    """The first ``num`` stored images of a real-image split, encoded (CUB: its
    JPEGs as stored; SVHN: its crops as PNG), for serving requests."""
    return dataset_spec(config).encoded_examples(split, num, sources=config.sources)


def load_split(config, split: str) -> mnist.Digits:
    """The digits of a run's ``split`` ("train" or "test"), from the run's source
    (``config``: a ``TrainConfig`` or anything with the source fields)."""
    return mnist.load_mnist(
        split,
        mnist_dir=config.mnist_dir,
        data_dir=config.data_dir,
        source=config.mnist_source,
    )


def build_model(
    config: TrainConfig, *, jit_compile: bool = True, precision: str | None = None
) -> keras.Model:
    """The run's model, untrained (the same widths every time for a config), its
    layers under ``precision``'s Keras dtype policy (default: the config's)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision or config.precision)
    try:  # the layers take the policy when they are made, here
        return _build_model(config, jit_compile)
    finally:
        keras.config.set_dtype_policy(previous)


def _build_model(config: TrainConfig, jit_compile: bool) -> keras.Model:
    spec = dataset_spec(config)
    return models.build_model(
        config.model,
        spec.shape,
        spec.num_classes,
        label_shape=spec.label_shape,
        transform=config.transform,
        pool=config.pool,
        downsample=config.downsample,
        dropout=config.dropout,
        width=config.width,
        param_budget=config.param_budget,
        jit_compile=jit_compile,
        num_transformers=config.num_st or 0,
        crop_size=config.crop_size,
        weights=None if config.weights == "none" else config.weights,
        **{
            **{option: getattr(config, option) for option in MODEL_OPTIONS},
            **MODEL_VERSIONS[config.model_version],  # a run of an earlier version
        },
    )


def with_width(config: TrainConfig) -> TrainConfig:
    """The config with its model's width resolved (the parameter-budget search
    runs once, and ``config.json`` keeps its answer), for the models that have a
    width to choose."""
    if config.width is not None:
        return config
    if "width" not in models.get_model(config.model).cls.accepted_args():
        return config  # the SVHN and CUB models: the paper's layers, no width
    model = build_model(config, jit_compile=False)
    return dataclasses.replace(config, width=model.get_config()["width"])


def read_config(path: str | Path) -> TrainConfig:
    """A run's ``config.json`` (see ``config_from_saved``)."""
    return config_from_saved(json.loads(Path(path).read_text()))


def config_from_saved(saved: dict, cls=None):
    """A config as a ``config.json`` saved it, read the one way every reader uses
    (resuming, restoring, the reproductions' records): fields added since take
    their defaults, fields dropped since are ignored, and a ``TrainConfig``
    without ``model_version`` was written by version 1's models. ``cls``: the
    config's dataclass (default ``TrainConfig``)."""
    cls = cls or TrainConfig
    names = {f.name for f in dataclasses.fields(cls)}
    versioned = {"model_version": 1} if "model_version" in names else {}
    return cls(**{**versioned, **{k: v for k, v in saved.items() if k in names}})


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
    config = read_config(path)
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    if latest is None:
        raise FileNotFoundError(
            f"{workdir} has no checkpoint in {workdir / 'checkpoints'}: train it first "
            "(checkpoints are written every --checkpoint_every steps and at the end)"
        )
    # float32 whatever the run's precision: the variables are float32 either way,
    # and exports, evaluation tools and converters want the float32 graph.
    model = build_model(config, jit_compile=jit_compile, precision="float32")
    checkpoint = tf.train.Checkpoint(model=model)  # the optimizer's slots stay behind
    checkpoint.restore(latest).expect_partial().assert_existing_objects_matched()
    step = int(latest.rsplit("-", 1)[1])  # checkpoints are numbered by step
    return config, model, step
