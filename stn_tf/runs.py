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

from stn_tf import fields, models
from stn_tf.models import presets
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
    "config_of",
    "is_preset",
    "preset_from_run",
    "today",
    "workdir_data",
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
# Config fields that are model arguments, by the model's name for them: given
# (other than their default) only to models that take them.
MODEL_OPTIONS = {
    "starts": "starts",
    "learn_offsets": "learn_offsets",
    "shared_localization": "shared_localization",
    "width": "width",
    "num_st": "num_transformers",
}
_field = fields.field


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; written to ``config.json``.

    Each field is declared once, with its help and the values it takes; the
    training command's flags are made from these (``fields.define_flags``). Fields
    left at ``None`` resolve when the config is made: the model from the dataset,
    the transform from the model, the image size from the dataset, the
    boundaries from the steps. ``for_dataset`` adds the dataset's recipe.
    """

    dataset: str = _field(datasets.DEFAULT_DATASET, datasets.DATASET_HELP)
    model: str | None = _field(
        None,
        "Model (stn_tf.models); default: the dataset's (st_cnn for distorted MNIST, "
        "rnn_spn, st_fcn_2x, st_cnn_3d, st_inception for cub, st_cnn_multi for svhn).",
        choices=models.MODELS,
    )
    transform: str | None = _field(
        None,
        "Transform of ST models (default: the model's, affine or affine3d).",
        choices=(*TRANSFORMS_2D, "affine3d"),
    )
    steps: int = _field(150_000, "Training steps (the paper: 150k).", lower_bound=1)
    batch_size: int = _field(256, "Global batch size.", lower_bound=1)
    learning_rate: float = _field(0.01, "Base learning rate.", lower_bound=0.0)
    optimizer: str = _field(
        "sgd", "sgd (STN paper) or rmsprop (RNN-SPN paper).", choices=OPTIMIZERS
    )
    momentum: float = _field(
        0.0,
        "Momentum of the optimizer (the STN paper: plain SGD, 0).",
        lower_bound=0.0,
        upper_bound=0.999,
    )
    lr_boundaries: tuple[int, ...] = _field(
        (),
        "Steps at which the learning rate is divided by 10 (default: 1/3 and 2/3 "
        "of --steps).",
    )
    loc_lr_multiplier: float = _field(
        1.0,
        "Learning rate of the localisation net, times the base rate (SGD only).",
        lower_bound=0.0,
    )
    # docs/deviations.md, "Addition recipe".
    loc_hold_steps: int = _field(
        0,
        "Steps during which the localisation nets are not trained (held at the "
        "identity) while the rest of the model is: the classifier learns first.",
        lower_bound=0,
    )
    seed: int = _field(datasets.DEFAULT_SEED, datasets.SEED_HELP)
    augment_on: str = _field(
        "host", "Where distortions run.", choices=datasets.AUGMENT_ON
    )
    param_budget: int = _field(
        models.PARAM_BUDGET, "Parameters every model gets.", lower_bound=1
    )
    width: int | None = _field(
        None,
        "Classifier width (FCN units, CNN filters); default: the width that meets "
        "--param_budget (written to config.json). The sequence, SVHN and CUB models "
        "have the papers' fixed widths.",
        lower_bound=1,
    )
    starts: str = _field(
        "identity",
        "rnn_spn: where the glimpses start: identity (the paper) or left_to_right "
        "(windows of 0.6x the input, left to right; an aid, not the paper's).",
        choices=models.STARTS,
    )
    learn_offsets: bool = _field(
        False,
        "rnn_spn: train the per-step offsets of --starts (an aid, not the paper's).",
    )
    shared_localization: bool = _field(
        False,
        "st_fcn_2x: one localisation net with two heads instead of the paper's two "
        "independent transformers.",
    )
    # 2 since the paper-faithful models (independent 2xST-FCN transformers, the
    # paper's RNN-SPN, the pooled 3D localisation net); a config.json without it
    # was written by version 1 (see MODEL_VERSIONS).
    model_version: int = _field(
        2, "The models' definitions (1: before 2026-11).", choices=MODEL_VERSIONS
    )
    downsample: float = _field(
        2.0,
        "Down-sampling factor d of the transformer (rnn_spn, ffn_spn, st_cnn_3d).",
        lower_bound=0.01,
    )
    pool: int | None = _field(
        None,
        "Average pooling factor after the transformers, before the classifier "
        "(default: the dataset's: 2 on mnist_rts and mnist_tc, A.4; else 1).",
        lower_bound=1,
    )
    dropout: float = _field(
        0.0,
        "Dropout rate of the classifiers (the sequence, SVHN and CUB models).",
        lower_bound=0.0,
        upper_bound=0.99,
    )
    weight_decay: float = _field(
        0.0,
        "Weight decay of the kernels, as the papers mean it: an L2 penalty "
        "wd/2 * sum(w^2) added to the loss, so momentum and --loc_lr_multiplier "
        "apply to it (not Keras's decoupled decay); cub and svhn default to the "
        "paper's.",
        lower_bound=0.0,
    )
    accumulate: int = _field(
        1,
        "Gradient accumulation: each step sums the gradients of this many equal "
        "parts of the batch (for batches that do not fit the accelerator at once).",
        lower_bound=1,
    )
    image_size: int | None = _field(
        None,
        "cub: 448 or 224 (default 448); svhn: 64 or 128 (default 64).",
        lower_bound=1,
    )
    num_st: int | None = _field(
        None,
        "cub: parallel attention transformers (0: the Inception baseline; default 4).",
        lower_bound=0,
    )
    crop_size: int = _field(224, "cub: side of each transformer's crop.", lower_bound=1)
    weights: str = _field(
        "imagenet",
        "cub: the Inception backbones' starting weights (none: random, offline).",
        choices=WEIGHTS,
    )
    mnist_dir: str | None = fields.same_as(datasets.Sources, "mnist_dir")
    data_dir: str | None = fields.same_as(datasets.Sources, "data_dir")
    manual_dir: str | None = fields.same_as(datasets.Sources, "manual_dir")
    mnist_source: str = fields.same_as(datasets.Sources, "mnist_source")
    validation_digits: int = fields.same_as(datasets.Splits, "validation_digits")
    train_examples: int = fields.same_as(datasets.Splits, "train_examples")
    xla_sampler: bool = _field(
        True,
        "Run the transformers' sampler through XLA (--noxla_sampler: the plain graph).",
    )
    log_every: int = _field(
        50, "Steps between progress lines and metrics rows.", lower_bound=1
    )
    checkpoint_every: int = _field(500, "Steps between checkpoints.", lower_bound=1)
    picture_every: int = _field(
        2000, "Steps between TensorBoard pictures.", lower_bound=1
    )
    eval_every: int = _field(
        0,
        "Steps between evaluations on the whole test set (the validation set "
        "where --validation_digits holds one out), written to eval.csv, "
        "TensorBoard and results.json's curve (0: at the end only).",
        lower_bound=0,
    )
    precision: str = _field(
        "float32",
        "The training step's compute: float32, or mixed_bfloat16 (bfloat16 "
        "activations, float32 variables and loss; faster on CPUs with AVX512_BF16 "
        "and on GPUs). Checkpoints and exports are float32 either way.",
        choices=PRECISIONS,
    )
    eval_batch_size: int = _field(500, "Batch size of the evaluations.", lower_bound=1)
    deterministic: bool = _field(
        False,
        "Deterministic ops: a run resumed after a kill ends with the same weights.",
    )

    def __post_init__(self):
        data = datasets.get_dataset(self.dataset)
        data.check_run(self)  # labels to learn, its image sizes, where it augments
        for name, value in _resolved(self, data).items():
            object.__setattr__(self, name, value)
        fields.check(self)  # each field against its declaration
        spec = models.get_model(self.model)
        spec.check_run(self, dataset_spec(self))  # examples, transform, hold
        _check_model_options(self, spec)
        _check_recipe(self)

    @classmethod
    def for_dataset(
        cls, dataset: str = datasets.DEFAULT_DATASET, **given
    ) -> TrainConfig:
        """The config of a run on ``dataset`` with its paper's recipe (``RECIPES``)
        for every field not given, as ``python -m stn_tf.train --dataset=...``
        builds it. Given ``steps`` but not ``lr_boundaries``, the recipe's
        boundaries keep their place relative to the end.

            TrainConfig.for_dataset("mnist_sequence")  # RMSprop, lr 1e-3, batch 64
            TrainConfig.for_dataset("cub", steps=300)  # A.6, boundaries 100, 200, 250
        """
        recipe = dict(RECIPES.get(dataset, {}))
        if "lr_boundaries" in recipe and "steps" in given:
            scale = given["steps"] / recipe["steps"]
            bounds = {round(b * scale) for b in recipe.pop("lr_boundaries")} - {0}
            recipe["lr_boundaries"] = tuple(
                sorted(b for b in bounds if b < given["steps"])
            )
        return cls(dataset=dataset, **{**recipe, **given})

    @property
    def pooling(self) -> int:
        """The pooling after the transformers: ``pool``, else the dataset's."""
        return self.pool or ALL_DATASETS[self.dataset].pool

    @property
    def splits(self) -> datasets.Splits:
        return datasets.Splits(self.validation_digits, self.train_examples)

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
            "pool",
            "optimizer",
            "image_size",
            "num_st",
            "crop_size",
            "precision",  # resumable, but its results would not be this config's
            "starts",
            "learn_offsets",
            "shared_localization",
            "validation_digits",
            "train_examples",
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


def _resolved(config: TrainConfig, data: datasets.DatasetSpec) -> dict:
    """The fields left to resolve, resolved (the one place of these defaults): the
    dataset's model, the model's transform, a stored set's first image size,
    st_inception's 4 transformers, the rate cut at 1/3 and 2/3 of the steps (the
    paper's 50k and 100k of 150k)."""
    model = config.model or data.model
    transforms = models.get_model(model).transforms or ("affine",)
    image_size = config.image_size
    if image_size is None and data.family != "mnist":
        image_size = data.sizes[0]
    num_st = config.num_st
    if num_st is None and model == "st_inception":
        num_st = 4
    bounds = config.lr_boundaries or {config.steps // 3, 2 * config.steps // 3} - {0}
    if not config.lr_boundaries:
        bounds = sorted(bounds)
    return {
        "model": model,
        "transform": config.transform or transforms[0],
        "image_size": image_size,
        "num_st": num_st,
        "lr_boundaries": tuple(int(b) for b in bounds),
    }


def _check_model_options(config: TrainConfig, spec: models.ModelSpec) -> None:
    """A model option given (other than its default) only to a model that takes
    it, and as the model's class accepts it."""
    taken = spec.cls.accepted_args()
    for name, arg in MODEL_OPTIONS.items():
        value = getattr(config, name)
        if value == _DEFAULTS[name] or arg in taken:
            continue
        takers = [n for n, m in models.MODELS.items() if arg in m.cls.accepted_args()]
        raise ValueError(
            f"{name} is an option of {takers}; model {config.model!r} does not take "
            f"it. Received: {name}={value!r}"
        )
    if config.pool is not None and "pool" not in taken:
        takers = [
            n for n, m in models.MODELS.items() if "pool" in m.cls.accepted_args()
        ]
        raise ValueError(
            f"pool is an option of {takers}; model {config.model!r} does not take "
            f"it. Received: pool={config.pool}"
        )
    if config.model == "st_inception":  # backbone size, crops: before any work
        models.STInception.check_args(
            (config.image_size, config.image_size, 3), config.num_st, config.crop_size
        )


def _check_recipe(config: TrainConfig) -> None:
    """The optimisation fields that only make sense together."""
    if config.optimizer != "sgd" and config.loc_lr_multiplier != 1.0:
        raise ValueError(
            "loc_lr_multiplier scales the localisation net's gradients, which is "
            f"its learning rate only under SGD. Received: optimizer={config.optimizer!r}, "
            f"loc_lr_multiplier={config.loc_lr_multiplier}"
        )
    if config.batch_size % config.accumulate:
        raise ValueError(
            "accumulate must be a positive divisor of batch_size (each step sums "
            f"the gradients of `accumulate` equal parts). Received: accumulate="
            f"{config.accumulate}, batch_size={config.batch_size}"
        )
    bounds = config.lr_boundaries
    if bounds and (list(bounds) != sorted(set(bounds)) or bounds[0] < 1):
        raise ValueError(
            f"lr_boundaries must be strictly increasing positive steps. Received: {bounds}"
        )


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run resolved once and handed down: its config, its dataset's
    spec (at the run's image size) and its model's spec. ``Run.of(config)``
    makes it; ``Run.resolved(config)`` solves the model's width too, which is
    what the training loop does, once; the loop's parts and the export take it.

        run = Run.of(TrainConfig.for_dataset("mnist_rts", steps=100))
        model = run.build_model()
        test = run.pipeline("test", batch_size=500, training=False)
    """

    config: TrainConfig
    data: datasets.DatasetSpec
    model: models.ModelSpec

    @classmethod
    def of(cls, config: TrainConfig) -> Run:
        """The run of ``config`` as it is (its width may be unsolved)."""
        return cls(config, dataset_spec(config), models.get_model(config.model))

    @classmethod
    def resolved(cls, config: TrainConfig) -> Run:
        """The run of ``config`` with its model's width solved: the
        parameter-budget search runs once, here, for the models that have a
        width to choose, and ``config.json`` keeps its answer."""
        run = cls.of(config)
        if config.width is not None or "width" not in run.model.cls.accepted_args():
            return run  # given, or the SVHN and CUB models (the paper's layers)
        width = run.build_model(jit_compile=False).get_config()["width"]
        return dataclasses.replace(run, config=dataclasses.replace(config, width=width))

    @property
    def sequences(self) -> bool:
        """Whether each example has several labels (sequences: errors per digit
        and per sequence)."""
        return bool(self.data.label_shape)

    def pipeline(self, split: str, *, batch_size: int, training: bool):
        """The run's ``split`` (train, validation or test) as a ``Pipeline``
        (distorted MNIST, cut by the config's ``splits``) or an ``ImagePipeline``
        (CUB, SVHN; prepared by TFDS on first use)."""
        return self.data.make_pipeline(
            split,
            batch_size=batch_size,
            training=training,
            seed=self.config.seed,
            sources=self.config.sources,
            splits=self.config.splits,
        )

    def decoder(self) -> Callable | None:
        """``encoded image bytes -> float32 example``, exactly as the run's test
        pipeline prepares a stored image (CUB: resize and centre crop; SVHN: the
        crop as it is, resized if it has another size); None for the generated
        MNIST sets."""
        return self.data.decoder()

    def encoded_examples(self, split: str, num: int) -> list[bytes]:
        """The first ``num`` stored images of a real-image split, encoded (CUB:
        its JPEGs as stored; SVHN: its crops as PNG), for serving requests."""
        return self.data.encoded_examples(split, num, sources=self.config.sources)

    def build_model(
        self, *, jit_compile: bool = True, precision: str | None = None
    ) -> keras.Model:
        """The run's model, untrained (the same widths every time for a config),
        its layers under ``precision``'s Keras dtype policy (default: the
        config's)."""
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(precision or self.config.precision)
        try:  # the layers take the policy when they are made, here
            return self._build_model(jit_compile)
        finally:
            keras.config.set_dtype_policy(previous)

    def _build_model(self, jit_compile: bool) -> keras.Model:
        config = self.config
        return models.build_model(
            config.model,
            self.data.shape,
            self.data.num_classes,
            label_shape=self.data.label_shape,
            transform=config.transform,
            pool=config.pooling,
            downsample=config.downsample,
            dropout=config.dropout,
            param_budget=config.param_budget,
            jit_compile=jit_compile,
            crop_size=config.crop_size,
            weights=None if config.weights == "none" else config.weights,
            **{
                **{arg: getattr(config, name) for name, arg in MODEL_OPTIONS.items()},
                **MODEL_VERSIONS[config.model_version],  # a run of an earlier version
            },
        )


def dataset_spec(config: TrainConfig) -> datasets.DatasetSpec:
    """The run's dataset, its images at the run's ``image_size``."""
    spec = datasets.get_dataset(config.dataset)
    if config.image_size is None:
        return spec
    side = config.image_size
    return dataclasses.replace(spec, shape=(side, side, spec.shape[-1]))


def make_pipeline(config: TrainConfig, split: str, *, batch_size: int, training: bool):
    """``Run.of(config).pipeline(...)``: the run's ``split`` as a pipeline."""
    return Run.of(config).pipeline(split, batch_size=batch_size, training=training)


def decoder(config: TrainConfig) -> Callable | None:
    """``Run.of(config).decoder()``: how a stored image is decoded for the run."""
    return Run.of(config).decoder()


def encoded_examples(config: TrainConfig, split: str, num: int) -> list[bytes]:
    """``Run.of(config).encoded_examples(split, num)``."""
    return Run.of(config).encoded_examples(split, num)


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
    """``Run.of(config).build_model(...)``: the run's model, untrained."""
    return Run.of(config).build_model(jit_compile=jit_compile, precision=precision)


def with_width(config: TrainConfig) -> TrainConfig:
    """The config with its model's width solved (``Run.resolved(config).config``)."""
    return Run.resolved(config).config


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
    source: str | Path, *, jit_compile: bool = False, precision: str = "float32"
) -> tuple[TrainConfig, keras.Model, int]:
    """The config and trained model of a run (its workdir: the latest
    checkpoint's weights) or of a preset (a bundled name or a preset directory:
    its weights, and the config of the run that trained them).

    Returns ``(config, model, step)``; the model returns the trainer's dict
    (``outputs="all"``). The sampler runs without XLA by default: exports and
    evaluation tools want the plain graph. ``precision``: the layers' dtype
    policy; float32 whatever the run's, by default (the variables are float32
    either way, and exports and converters want the float32 graph).
    """
    config = config_of(source)
    model = build_model(config, jit_compile=jit_compile, precision=precision)
    if is_preset(source):
        model.load_weights(presets.preset_dir(source) / "model.weights.h5")
        return config, model, int(presets.read_metadata(source).get("steps", 0))
    checkpoints = Path(source) / "checkpoints"
    latest = tf.train.latest_checkpoint(str(checkpoints))
    if latest is None:
        raise FileNotFoundError(
            f"{source} has no checkpoint in {checkpoints}: train it first "
            "(checkpoints are written every --checkpoint_every steps and at the end)"
        )
    checkpoint = tf.train.Checkpoint(model=model)  # the optimizer's slots stay behind
    checkpoint.restore(latest).expect_partial().assert_existing_objects_matched()
    step = int(latest.rsplit("-", 1)[1])  # checkpoints are numbered by step
    return config, model, step


def is_preset(source: str | Path) -> bool:
    """Whether ``source`` is a preset directory (its weights file and metadata
    beside the model's config) or, where no such folder exists, names a bundled
    preset; a run's workdir is neither."""
    path = Path(source)
    if path.is_dir():
        return (path / "model.weights.h5").is_file() and (
            path / "metadata.json"
        ).is_file()
    return str(source) in models.list_presets()


def workdir_data(workdir: str | Path) -> tuple[str, int] | None:
    """``(dataset, revision)`` a run's workdir read: its ``config.json``'s
    ``dataset_revision`` (written since 2026-12-07), else its ``results.json``'s;
    None where neither says (an unfinished run written before)."""
    saved = json.loads((Path(workdir) / "config.json").read_text())
    revision = saved.get("dataset_revision")
    done = Path(workdir) / "results.json"
    if revision is None and done.is_file():
        revision = json.loads(done.read_text()).get("dataset_revision", 1)
    return None if revision is None else (saved["dataset"], int(revision))


def today(dataset: str, revision: int, what: str) -> str:
    """The name today of the data ``what`` read (``dataset`` at ``revision``);
    refused where no dataset draws it any more."""
    now = datasets.named(dataset, revision)
    if now is None:
        raise ValueError(
            f"{what} read revision {revision} of {dataset}, which no dataset draws "
            f"today ({dataset} is at revision {datasets.get_dataset(dataset).revision})"
        )
    return now


def config_of(source: str | Path) -> TrainConfig:
    """The config of a run (its workdir's ``config.json``) or of the run that
    trained a preset (its metadata's ``train_config``, under its dataset's name
    of today, its digits from the default sources). A preset of a dataset
    revision no set draws today is refused."""
    if not is_preset(source):
        path = Path(source) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{source} is not a training run: no config.json in it (expected "
                "the --workdir of python -m stn_tf.train), nor a preset (one of "
                f"{', '.join(models.list_presets()) or 'none bundled'}, or a "
                "directory written by save_to_preset)"
            )
        saved = json.loads(path.read_text())
        data = workdir_data(source)
        if data is not None:  # under its dataset's name of today
            saved["dataset"] = today(*data, what=f"The run in {source}")
        return config_from_saved(saved)
    metadata = presets.read_metadata(source)
    missing = [k for k in ("train_config", "dataset_revision") if k not in metadata]
    if missing:
        raise ValueError(
            f"Preset {str(source)!r} has no {' or '.join(missing)} in its "
            "metadata.json: it was not written from a training run "
            "(runs.preset_from_run writes them); load it with "
            "stn_tf.models.from_preset instead"
        )
    train = metadata["train_config"]
    name = today(train["dataset"], metadata["dataset_revision"], f"Preset {source!r}")
    # Under its dataset's name of today, reading digits from wherever this
    # machine has them (the run's own folder is another machine's).
    sources = dataclasses.asdict(datasets.Sources())
    return config_from_saved({**train, "dataset": name, **sources})


def preset_from_run(
    workdir: str | Path,
    directory: str | Path,
    metadata: dict | None = None,
    weights_dtype: str = "float32",
    restored: tuple | None = None,
) -> Path:
    """Writes a run's latest checkpoint as a preset in ``directory``: its model
    with class scores as the output, and in ``metadata.json`` the run's config
    (``train_config``), its dataset's revision and its steps (what ``restore``,
    ``python -m stn_tf.evaluate`` and the export read), then ``metadata``.
    ``restored``: what ``restore(workdir)`` returned, where the caller holds it."""
    config, model, step = restored or restore(workdir)
    scores = type(model).from_config({**model.get_config(), "outputs": "scores"})
    scores.set_weights(model.get_weights())
    saved = json.loads((Path(workdir) / "config.json").read_text())
    facts = {
        "train_config": {**saved, "dataset": config.dataset},
        "dataset_revision": datasets.get_dataset(config.dataset).revision,
        "steps": step,
        **(metadata or {}),
    }
    return scores.save_to_preset(directory, facts, weights_dtype=weights_dtype)
