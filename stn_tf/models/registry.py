"""One registry of model names: a name is a model class and what it is for."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

__all__ = [
    "MODELS",
    "PARAM_BUDGET",
    "TRANSFORMS_2D",
    "ModelSpec",
    "build_model",
    "get_model",
    "models_for",
    "register",
    "width_for_budget",
]

PARAM_BUDGET = 400_000
TRANSFORMS_2D = ("affine", "projective", "tps", "attention")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model name.

    Attributes:
        name: the ``--model`` name.
        cls: the model class (``cls(input_shape, num_classes, **options)``).
        transforms: the transforms it takes, the default first (empty: no
            transformer).
        description: one line for help texts.
        ndim: 2 for images ``(H, W, C)``, 3 for volumes ``(D, H, W, C)``.
        sequence: predicts a sequence of labels (``num_outputs`` of them).
        family: the datasets it is for: ``mnist`` (every MNIST-based set whose
            examples and labels it takes), ``cub`` or ``svhn``.
    """

    name: str
    cls: type
    transforms: tuple[str, ...]
    description: str
    ndim: int = 2
    sequence: bool = False
    family: str = "mnist"

    @property
    def uses_transform(self) -> bool:
        return bool(self.transforms)

    def check_run(self, config, data) -> None:
        """Refuses a training run (``config``: a ``runs.TrainConfig``) this model
        cannot be: examples or labels of ``data`` (a ``DatasetSpec``) it does not
        take, a transform it does not make, a hold of transformers it does not
        have."""
        fitting = models_for(data.shape, data.label_shape, data.family)
        if self.name not in fitting:
            raise ValueError(
                f"model {self.name!r} does not fit dataset {data.name!r} (examples "
                f"{data.shape}, labels {data.label_shape or 'one per example'}); "
                f"models for it: {', '.join(fitting)}"
            )
        allowed = self.transforms or (*TRANSFORMS_2D, "affine3d")
        if config.transform not in allowed:
            raise ValueError(
                f"model {self.name!r} takes transform one of {allowed}. "
                f"Received: transform={config.transform!r}"
            )
        if config.loc_hold_steps and not self.uses_transform:
            raise ValueError(
                "loc_hold_steps holds the localisation nets of a spatial transformer; "
                f"model {self.name!r} has none. Received: loc_hold_steps="
                f"{config.loc_hold_steps}"
            )


MODELS: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    transforms: tuple[str, ...] = (),
    description: str,
    ndim: int = 2,
    sequence: bool = False,
    family: str = "mnist",
):
    """Class decorator: registers a model class under ``name`` (names are unique)."""

    def wrap(cls):
        if name in MODELS:
            raise KeyError(f"model {name!r} is registered twice")
        MODELS[name] = ModelSpec(
            name, cls, tuple(transforms), description, ndim, sequence, family
        )
        return cls

    return wrap


def get_model(name: str) -> ModelSpec:
    """The registry entry of a model name."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}; expected one of {', '.join(MODELS)}"
        ) from None


def models_for(
    input_shape: tuple[int, ...], label_shape: tuple[int, ...], family: str = "mnist"
) -> list[str]:
    """Names of the models of ``family`` that take such examples and predict such
    labels."""
    return [
        name
        for name, spec in MODELS.items()
        if spec.ndim + 1 == len(input_shape)
        and spec.sequence == bool(label_shape)
        and spec.family == family
    ]


MAX_WIDTH = 4096


def width_for_budget(count: Callable[[int], int], budget: int) -> int:
    """The smallest width whose model has at least ``budget`` parameters, or the one
    just below it if closer; ``count(width)`` is the parameter count, which grows
    with the width."""
    counts = {}

    def cached(width):  # each width is built once
        if width not in counts:
            counts[width] = count(width)
        return counts[width]

    # Galloping from below, then bisection: wide probes are the slow builds (a
    # width-2048 ST-CNN has 206M parameters), so none is built past twice the answer.
    low, high = 1, 1
    while high < MAX_WIDTH and cached(high) < budget:
        low, high = high + 1, min(2 * high, MAX_WIDTH)
    while low < high:
        mid = (low + high) // 2
        if cached(mid) < budget:
            low = mid + 1
        else:
            high = mid
    if low > 1 and budget - cached(low - 1) < cached(low) - budget:
        return low - 1
    return low


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    label_shape: tuple[int, ...] = (),
    transform: str | None = None,
    outputs: str = "all",
    **options,
) -> keras.Model:
    """Builds a registered model by name, as the trainer does.

    Args:
        name: a key of ``MODELS``.
        input_shape: one example, ``(H, W, C)`` (``(D, H, W, C)`` for 3D models).
        num_classes: classes of the softmax.
        label_shape: one example's labels: ``()``, or ``(T,)`` for the sequence
            models (T digits, one softmax each).
        transform: the transformers' transform; default: the model's first
            (``affine``, or ``affine3d`` for 3D).
        outputs: what the model returns (see ``PaperModel``); ``all`` here, the
            trainer's dict ``{"logits"[, "theta", "transformed"]}``.
        **options: the class's other arguments (``pool``, ``width``,
            ``param_budget``, ``downsample``, ``dropout``, ``jit_compile``,
            ``num_transformers``, ``crop_size``, ``weights``); those the class
            does not take, and those that are None (the class's default), are left
            out, so one set of options serves every model.

    Returns:
        An instance of the model's class.
    """
    spec = get_model(name)
    layout = "(H, W, C)" if spec.ndim == 2 else "(D, H, W, C)"
    if len(input_shape) != spec.ndim + 1:
        raise ValueError(
            f"model {name!r} takes examples {layout}. Received: input_shape={input_shape}"
        )
    label_shape = tuple(label_shape)
    if spec.sequence != (len(label_shape) == 1) or len(label_shape) > 1:
        wanted = "a sequence (T,)" if spec.sequence else "one label, shape ()"
        fitting = models_for(input_shape, label_shape, spec.family)
        raise ValueError(
            f"model {name!r} predicts {wanted} per example. Received: "
            f"label_shape={label_shape}; models for these labels: {', '.join(fitting)}"
        )
    if transform is not None and spec.transforms:
        if transform not in spec.transforms:
            raise ValueError(
                f"model {name!r} takes transform one of {spec.transforms}. "
                f"Received: transform={transform!r}"
            )
        options["transform"] = transform
    if spec.sequence:
        options["num_outputs"] = label_shape[0]
    taken = spec.cls.accepted_args()
    # None is "the class's default" (the budget's width, the paper's fixed width).
    options = {k: v for k, v in options.items() if k in taken and v is not None}
    return spec.cls(tuple(input_shape), num_classes, outputs=outputs, **options)
