"""The papers' models, built from the layers; one registry of names.

Distorted MNIST (STN paper §4.1, Appendix A.4):

- ``fcn``: two hidden fully connected layers, then the classification layer.
- ``cnn``: 9x9 conv, 2x2 max-pool, 7x7 conv, 2x2 max-pool, classification layer.
- ``st_fcn`` / ``st_cnn``: the same classifiers behind a spatial transformer at the
  input (affine, projective, TPS or attention). Localisation nets: three 32-unit
  fully connected layers (ST-FCN); two 20-filter 5x5 convs on a 2x down-sampled
  input with 2x2 max-pooling between them, then a 20-unit layer (ST-CNN). The
  transformer's output has the input's size; on TC and RTS a 2x2 average pooling
  follows it (A.4).

All use ReLUs and no padding. The classifier's width (FCN units, CNN filters) is
chosen per model and input so that every model has about ``param_budget`` (400k)
parameters, as in the paper: the ST models spend part of the budget on their
localisation nets. One deviation, forced by the sizes: a CNN classifier on an
input smaller than 28x28 (ST-CNN on RTS sees 21x21 after the pooling) pads its
convolutions ("same"), or its 7x7 conv would have nothing left to convolve.

Every model is a functional Keras model whose output is a dict: ``logits``
``[B, classes]`` always; ``theta`` ``[B, P]`` and ``transformed`` (the transformer's
output, before pooling) for ST models, for pictures and θ statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from stn_tf import transforms
from stn_tf.layers import SpatialTransformer

__all__ = [
    "MODELS",
    "PARAM_BUDGET",
    "ModelSpec",
    "build_model",
    "get_model",
    "register",
]

PARAM_BUDGET = 400_000
POOLED_DATASETS = (
    "mnist_rts",
    "mnist_tc",
)  # average pooling after the transformer (A.4)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model family: ``make(input_shape, num_classes, width, transform, pool,
    jit_compile)``."""

    name: str
    make: Callable[..., keras.Model]
    uses_transform: bool
    description: str


MODELS: dict[str, ModelSpec] = {}


def register(name: str, *, uses_transform: bool, description: str):
    """Adds a model builder to ``MODELS`` under ``name`` (names are unique)."""

    def wrap(make):
        if name in MODELS:
            raise KeyError(f"model {name!r} is registered twice")
        MODELS[name] = ModelSpec(name, make, uses_transform, description)
        return make

    return wrap


def get_model(name: str) -> ModelSpec:
    """The registry entry of a model name."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}; expected one of {', '.join(MODELS)}"
        ) from None


# === Layers ===


def _fcn_classifier(
    width: int, num_classes: int, name: str = "classifier"
) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu", name="fc_0"),
            keras.layers.Dense(width, activation="relu", name="fc_1"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def _cnn_classifier(
    width: int, num_classes: int, side: int, name: str = "classifier"
) -> keras.Sequential:
    padding = "valid" if side >= 28 else "same"
    return keras.Sequential(
        [
            keras.layers.Conv2D(
                width, 9, padding=padding, activation="relu", name="conv_0"
            ),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(
                width, 7, padding=padding, activation="relu", name="conv_1"
            ),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def _fcn_localization() -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Flatten()]
        + [keras.layers.Dense(32, activation="relu", name=f"fc_{i}") for i in range(3)],
        name="localization",
    )


def _cnn_localization() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.MaxPooling2D(2, name="downsample"),
            keras.layers.Conv2D(20, 5, activation="relu", name="conv_0"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(20, 5, activation="relu", name="conv_1"),
            keras.layers.Flatten(),
            keras.layers.Dense(20, activation="relu", name="fc_0"),
        ],
        name="localization",
    )


def _classifier_model(
    inputs, classifier, name, transformer=None, pool=1
) -> keras.Model:
    outputs = {}
    x = inputs
    if transformer is not None:
        x, theta = transformer(x)
        outputs.update(theta=theta, transformed=x)
        if pool > 1:
            x = keras.layers.AveragePooling2D(pool, name="pool")(x)
    outputs["logits"] = classifier(x)
    return keras.Model(inputs, outputs, name=name)


def _transformer(localization, transform, jit_compile):
    return SpatialTransformer(
        localization,
        transform=transform,
        return_theta=True,
        jit_compile=jit_compile,
        name="st",
    )


@register("fcn", uses_transform=False, description="two hidden fully connected layers")
def _fcn(input_shape, num_classes, width, transform=None, pool=1, jit_compile=True):
    del transform, pool, jit_compile
    return _classifier_model(
        keras.Input(input_shape), _fcn_classifier(width, num_classes), "fcn"
    )


@register("cnn", uses_transform=False, description="conv 9x9, pool, conv 7x7, pool")
def _cnn(input_shape, num_classes, width, transform=None, pool=1, jit_compile=True):
    del transform, pool, jit_compile
    classifier = _cnn_classifier(width, num_classes, min(input_shape[:2]))
    return _classifier_model(keras.Input(input_shape), classifier, "cnn")


@register("st_fcn", uses_transform=True, description="spatial transformer + FCN")
def _st_fcn(
    input_shape, num_classes, width, transform="affine", pool=1, jit_compile=True
):
    st = _transformer(_fcn_localization(), transform, jit_compile)
    classifier = _fcn_classifier(width, num_classes)
    return _classifier_model(keras.Input(input_shape), classifier, "st_fcn", st, pool)


@register("st_cnn", uses_transform=True, description="spatial transformer + CNN")
def _st_cnn(
    input_shape, num_classes, width, transform="affine", pool=1, jit_compile=True
):
    st = _transformer(_cnn_localization(), transform, jit_compile)
    classifier = _cnn_classifier(width, num_classes, min(input_shape[:2]) // pool)
    return _classifier_model(keras.Input(input_shape), classifier, "st_cnn", st, pool)


# === Config ===


def _width_for_budget(make: Callable[[int], keras.Model], budget: int) -> int:
    """The smallest width whose model has at least ``budget`` parameters, or the one
    just below it if closer (parameter counts grow with the width)."""
    counts = {}

    def count(width):  # each width is built once
        if width not in counts:
            counts[width] = make(width).count_params()
        return counts[width]

    low, high = 1, 4096
    while low < high:
        mid = (low + high) // 2
        if count(mid) < budget:
            low = mid + 1
        else:
            high = mid
    if low > 1 and budget - count(low - 1) < count(low) - budget:
        return low - 1
    return low


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    transform: str = "affine",
    pool: int = 1,
    width: int | None = None,
    param_budget: int = PARAM_BUDGET,
    jit_compile: bool = True,
) -> keras.Model:
    """Builds a registered model.

    Args:
        name: a key of ``MODELS``.
        input_shape: one example, ``(H, W, C)``.
        num_classes: classes of the softmax.
        transform: the transformer's transform (ST models): ``affine``,
            ``projective``, ``tps`` or ``attention``.
        pool: average pooling factor after the transformer (2 for TC and RTS).
        width: classifier width; default: the width that meets ``param_budget``.
        param_budget: the parameter count to match when ``width`` is None.
        jit_compile: run the transformer's sampler through XLA (training). Exports
            switch it off: TF Serving and TFLite run the plain graph.

    Returns:
        The model, outputs ``{"logits"[, "theta", "transformed"]}``.
    """
    spec = get_model(name)
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} takes images (H, W, C). Received: input_shape={input_shape}"
        )
    if spec.uses_transform:
        if transforms.get_transform(transform).ndim != 2:  # unknown names raise here
            raise ValueError(
                f"model {name!r} needs a 2D transform. Received: transform={transform!r}"
            )
    if width is None:
        width = _width_for_budget(
            lambda w: spec.make(input_shape, num_classes, w, transform, pool),
            param_budget,
        )
    return spec.make(input_shape, num_classes, width, transform, pool, jit_compile)
