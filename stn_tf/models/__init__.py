"""The papers' models, built from the layers; one registry of names.

Distorted MNIST and MNIST addition (STN paper §4.1, Appendix A.1, A.4):

- ``fcn``: two hidden fully connected layers, then the classification layer.
- ``cnn``: 9x9 conv, 2x2 max-pool, 7x7 conv, 2x2 max-pool, classification layer.
- ``st_fcn`` / ``st_cnn``: the same classifiers behind a spatial transformer at the
  input (affine, projective, TPS or attention). Localisation nets: three 32-unit
  fully connected layers (ST-FCN); two 20-filter 5x5 convs on a 2x down-sampled
  input with 2x2 max-pooling between them, then a 20-unit layer (ST-CNN). The
  transformer's output has the input's size; on TC and RTS a 2x2 average pooling
  follows it (A.4).
- ``st_fcn_2x``: two parallel transformers (2xST-FCN, A.1), each seeing every
  channel, their outputs concatenated on the channel axis before the FCN.

All use ReLUs and no padding. The classifier's width (FCN units, CNN filters) is
chosen per model and input so that every model has about ``param_budget`` (400k)
parameters, as in the paper: the ST models spend part of the budget on their
localisation nets. One deviation, forced by the sizes: a CNN classifier on an
input smaller than 28x28 (ST-CNN on RTS sees 21x21 after the pooling) pads its
convolutions ("same"), or its 7x7 conv would have nothing left to convolve.

Cluttered MNIST sequences (RNN-SPN paper, appendix), fixed widths as the paper:

- ``rnn_spn``: localisation convs -> GRU(256) for T steps -> θ_t; each step's crop
  (down-sampled by d) goes through one shared 32-filter classifier.
- ``ffn_spn``: one affine transformer (d = 2), a 96-filter classifier, T heads.
- ``conv_net``: the FFN-SPN's classifier on the raw input ("Conv. net").

3D MNIST (STN A.3): ``st_cnn_3d``, a 3D affine transformer whose output volume
is summed over its depth into a 2D image for the CNN classifier; ``cnn_3d``, the
same CNN on the input summed over its depth (no transformer).

Every model is a functional Keras model whose output is a dict: ``logits``
(``[B, classes]``, or ``[B, T, classes]`` for sequences) always; for models with
transformers ``theta`` (``[B, P]``, or ``[B, K, P]`` for K transformers) and
``transformed`` (the transformer's output before pooling: ``[B, H', W', C]``, or
``[B, K, H', W', C]``; the depth projection for 3D), for pictures and statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from stn_tf.layers import (
    ParallelSpatialTransformer,
    RecurrentSpatialTransformer,
    SpatialTransformer,
)

__all__ = [
    "MODELS",
    "PARAM_BUDGET",
    "BuildOptions",
    "MaxPooling3D",
    "ModelSpec",
    "build_model",
    "get_model",
    "models_for",
    "register",
]

PARAM_BUDGET = 400_000
POOLED_DATASETS = (
    "mnist_rts",
    "mnist_tc",
)  # average pooling after the transformer (A.4)
TRANSFORMS_2D = ("affine", "projective", "tps", "attention")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What a builder needs besides the input shape, classes and width.

    Attributes:
        transform: the transformers' transform.
        pool: average pooling factor after the transformer (2 for TC and RTS).
        downsample: the transformer's down-sampling factor d (RNN-SPN §3.1).
        dropout: dropout rate of the sequence classifiers.
        num_outputs: labels per example (T, the sequence length; 1 otherwise).
        jit_compile: run the sampler through XLA.
        num_transformers: parallel transformers of the CUB model (0: none).
        crop_size: side of the CUB model's crops.
        weights: the CUB backbones' starting weights, ``imagenet`` or None.
    """

    transform: str = "affine"
    pool: int = 1
    downsample: float = 2.0
    dropout: float = 0.0
    num_outputs: int = 1
    jit_compile: bool = True
    num_transformers: int = 0
    crop_size: int = 224
    weights: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model family: ``make(input_shape, num_classes, width, options)``.

    Attributes:
        transforms: the transforms it takes, the default first (empty: no
            transformer).
        ndim: 2 for images ``(H, W, C)``, 3 for volumes ``(D, H, W, C)``.
        sequence: predicts a sequence of labels (``num_outputs`` of them).
        width: the fixed width of a paper's architecture; ``None``: the width that
            meets the parameter budget.
        family: the datasets it is for: ``mnist`` (every MNIST-based set whose
            examples and labels it takes), ``cub`` or ``svhn``.
    """

    name: str
    make: Callable[..., keras.Model]
    transforms: tuple[str, ...]
    description: str
    ndim: int = 2
    sequence: bool = False
    width: int | None = None
    family: str = "mnist"

    @property
    def uses_transform(self) -> bool:
        return bool(self.transforms)


MODELS: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    transforms: tuple[str, ...] = (),
    description: str,
    ndim: int = 2,
    sequence: bool = False,
    width: int | None = None,
    family: str = "mnist",
):
    """Adds a model builder to ``MODELS`` under ``name`` (names are unique)."""

    def wrap(make):
        if name in MODELS:
            raise KeyError(f"model {name!r} is registered twice")
        MODELS[name] = ModelSpec(
            name, make, tuple(transforms), description, ndim, sequence, width, family
        )
        return make

    return wrap


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


def _sequence_classifier(width, units, outputs, dropout, name="classifier"):
    """RNN-SPN appendix: three 3x3 convs (max-pooling after the first two), dropout
    after each, a hidden fully connected layer, then ``outputs`` logits (or, with
    ``outputs=None``, the hidden layer's features, for separate heads)."""
    layers = []
    for i in range(3):
        layers.append(
            keras.layers.Conv2D(width, 3, activation="relu", name=f"conv_{i}")
        )
        if i < 2:
            layers.append(keras.layers.MaxPooling2D(2))
        layers.append(keras.layers.Dropout(dropout))
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(units, activation="relu", name="fc_0"),
    ]
    if outputs is not None:
        layers.append(keras.layers.Dense(outputs, name="logits"))
    return keras.Sequential(layers, name=name)


def _fcn_localization() -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Flatten()]
        + [keras.layers.Dense(32, activation="relu", name=f"fc_{i}") for i in range(3)],
        name="localization",
    )


@keras.saving.register_keras_serializable(package="stn_tf")
class MaxPooling3D(keras.layers.Layer):
    """2x2x2 max pooling of volumes ``[B, D, H, W, C]`` ("valid", stride 2).

    The same numbers as ``keras.layers.MaxPooling3D(2)``, computed as a 2D max
    pooling of every slice and a max over pairs of slices: TFLite has no 3D
    pooling among its builtins (the converter asks for the Flex delegate), and
    these ops it has.

    Args:
        pool_size: 2, the only size (that of the STN models).
    """

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        if pool_size not in (2, (2, 2, 2)):
            raise ValueError(f"pool_size must be 2. Received: pool_size={pool_size!r}")
        self.pool_size = 2

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}

    def call(self, volumes):
        depth, height, width, channels = volumes.shape[1:]
        pairs = depth // 2
        slices = tf.reshape(volumes[:, : 2 * pairs], [-1, height, width, channels])
        pooled = tf.nn.max_pool2d(slices, 2, 2, "VALID")  # [B * 2 * pairs, h, w, C]
        h, w = pooled.shape[1:3]
        flat = tf.reshape(pooled, [-1, pairs, 2, h * w * channels])
        return tf.reshape(tf.reduce_max(flat, axis=2), [-1, pairs, h, w, channels])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *(s // 2 for s in input_shape[1:4]), input_shape[4])


def _cnn_localization(ndim: int = 2) -> keras.Sequential:
    """The ST-CNN localisation net (A.4), on images or (``ndim=3``) volumes."""
    pool, conv = (
        (keras.layers.MaxPooling2D, keras.layers.Conv2D)
        if ndim == 2
        else (MaxPooling3D, keras.layers.Conv3D)
    )
    return keras.Sequential(
        [
            pool(2, name="downsample"),
            conv(20, 5, activation="relu", name="conv_0"),
            pool(2),
            conv(20, 5, activation="relu", name="conv_1"),
            keras.layers.Flatten(),
            keras.layers.Dense(20, activation="relu", name="fc_0"),
        ],
        name="localization",
    )


def _sequence_localization(hidden: int | None = None) -> keras.Sequential:
    """RNN-SPN appendix: three rounds of 2x2 max-pool and 20-filter 3x3 conv (then a
    ``hidden``-unit layer for the FFN-SPN; the RNN-SPN's GRU reads the features)."""
    layers = []
    for i in range(3):
        layers.append(keras.layers.MaxPooling2D(2))
        layers.append(keras.layers.Conv2D(20, 3, activation="relu", name=f"conv_{i}"))
    layers.append(keras.layers.Flatten())
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu", name="fc_0"))
    return keras.Sequential(layers, name="localization")


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


def _transformer(localization, options, cls=SpatialTransformer, **kwargs):
    return cls(
        localization,
        transform=options.transform,
        return_theta=True,
        jit_compile=options.jit_compile,
        name="st",
        **kwargs,
    )


def _depth_projection(volumes):
    """``[B, D, H, W, C]`` -> ``[B, H, W, C]``: the sum over depth (STN A.3)."""
    return keras.ops.sum(volumes, axis=1)


@register("fcn", description="two hidden fully connected layers")
def _fcn(input_shape, num_classes, width, options):
    del options
    return _classifier_model(
        keras.Input(input_shape), _fcn_classifier(width, num_classes), "fcn"
    )


@register("cnn", description="conv 9x9, pool, conv 7x7, pool")
def _cnn(input_shape, num_classes, width, options):
    del options
    classifier = _cnn_classifier(width, num_classes, min(input_shape[:2]))
    return _classifier_model(keras.Input(input_shape), classifier, "cnn")


@register("st_fcn", transforms=TRANSFORMS_2D, description="spatial transformer + FCN")
def _st_fcn(input_shape, num_classes, width, options):
    st = _transformer(_fcn_localization(), options)
    classifier = _fcn_classifier(width, num_classes)
    return _classifier_model(
        keras.Input(input_shape), classifier, "st_fcn", st, options.pool
    )


@register("st_cnn", transforms=TRANSFORMS_2D, description="spatial transformer + CNN")
def _st_cnn(input_shape, num_classes, width, options):
    st = _transformer(_cnn_localization(), options)
    side = min(input_shape[:2]) // options.pool
    classifier = _cnn_classifier(width, num_classes, side)
    return _classifier_model(
        keras.Input(input_shape), classifier, "st_cnn", st, options.pool
    )


@register(
    "st_fcn_2x",
    transforms=TRANSFORMS_2D,
    description="two parallel spatial transformers (2xST-FCN) + FCN",
)
def _st_fcn_2x(input_shape, num_classes, width, options):
    inputs = keras.Input(input_shape)
    st = _transformer(
        _fcn_localization(), options, ParallelSpatialTransformer, merge="list"
    )
    crops, theta = st(inputs)  # 2 x [B, H, W, C], [B, 2, P]
    x = keras.layers.Concatenate(name="concat")(crops)  # [B, H, W, 2C]
    if options.pool > 1:
        x = keras.layers.AveragePooling2D(options.pool, name="pool")(x)
    outputs = {
        "theta": theta,
        "transformed": keras.ops.stack(crops, axis=1),  # [B, 2, H, W, C]
        "logits": _fcn_classifier(width, num_classes)(x),
    }
    return keras.Model(inputs, outputs, name="st_fcn_2x")


@register(
    "rnn_spn",
    transforms=TRANSFORMS_2D,
    sequence=True,
    width=32,
    description="recurrent transformer (GRU 256), one crop per digit, shared classifier",
)
def _rnn_spn(input_shape, num_classes, width, options):
    inputs = keras.Input(input_shape)
    st = _transformer(
        _sequence_localization(),
        options,
        RecurrentSpatialTransformer,
        steps=options.num_outputs,
        units=256,
        downsample=options.downsample,
        initial_params=_left_to_right(options.transform, options.num_outputs),
    )
    crops, theta = st(inputs)  # [B, T, h, w, C], [B, T, P]
    classifier = _sequence_classifier(width, 256, num_classes, options.dropout)
    logits = keras.layers.TimeDistributed(classifier, name="per_step")(crops)
    outputs = {"theta": theta, "transformed": crops, "logits": logits}
    return keras.Model(inputs, outputs, name="rnn_spn")


def _left_to_right(transform: str, steps: int):
    """Starting windows of the RNN-SPN's steps: ``steps`` windows of 0.6x the input's
    size, centred on a horizontal line from left to right (the digits' order)."""
    if transform not in ("affine", "attention"):
        return None  # projective and TPS start at the identity
    centres = np.linspace(-0.4, 0.4, steps) if steps > 1 else np.zeros(1)
    scale = 0.6
    if transform == "attention":  # (s, tx, ty)
        return [[scale, x, 0.0] for x in centres]
    return [[scale, 0.0, x, 0.0, scale, 0.0] for x in centres]


def _sequence_heads(x, num_outputs, num_classes):
    """``num_outputs`` separate softmax layers: ``[B, F]`` -> ``[B, T, classes]``."""
    x = keras.layers.Dense(num_outputs * num_classes, name="heads")(x)
    return keras.layers.Reshape((num_outputs, num_classes), name="per_digit")(x)


@register(
    "ffn_spn",
    transforms=TRANSFORMS_2D,
    sequence=True,
    width=96,
    description="one transformer (d = 2) + 96-filter classifier with a head per digit",
)
def _ffn_spn(input_shape, num_classes, width, options):
    inputs = keras.Input(input_shape)
    st = _transformer(
        _sequence_localization(hidden=200), options, downsample=options.downsample
    )
    crop, theta = st(inputs)
    features = _sequence_classifier(width, 400, None, options.dropout)(crop)
    outputs = {
        "theta": theta,
        "transformed": crop,
        "logits": _sequence_heads(features, options.num_outputs, num_classes),
    }
    return keras.Model(inputs, outputs, name="ffn_spn")


@register(
    "conv_net",
    sequence=True,
    width=96,
    description="the FFN-SPN's classifier on the raw input (the paper's Conv. net)",
)
def _conv_net(input_shape, num_classes, width, options):
    inputs = keras.Input(input_shape)
    features = _sequence_classifier(width, 400, None, options.dropout)(inputs)
    logits = _sequence_heads(features, options.num_outputs, num_classes)
    return keras.Model(inputs, {"logits": logits}, name="conv_net")


@register(
    "st_cnn_3d",
    transforms=("affine3d",),
    ndim=3,
    description="3D affine transformer, depth summed to 2D, CNN",
)
def _st_cnn_3d(input_shape, num_classes, width, options):
    inputs = keras.Input(input_shape)
    st = _transformer(_cnn_localization(ndim=3), options, downsample=options.downsample)
    volume, theta = st(inputs)  # [B, D', H', W', C]
    projection = _depth_projection(volume)  # [B, H', W', C]
    classifier = _cnn_classifier(width, num_classes, min(projection.shape[1:3]))
    outputs = {
        "theta": theta,
        "transformed": projection,
        "logits": classifier(projection),
    }
    return keras.Model(inputs, outputs, name="st_cnn_3d")


@register(
    "cnn_3d", ndim=3, description="the input summed over its depth, 2x pooling, CNN"
)
def _cnn_3d(input_shape, num_classes, width, options):
    del options
    inputs = keras.Input(input_shape)
    x = keras.layers.AveragePooling2D(2, name="pool")(_depth_projection(inputs))
    classifier = _cnn_classifier(width, num_classes, min(x.shape[1:3]))
    return keras.Model(inputs, {"logits": classifier(x)}, name="cnn_3d")


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
    label_shape: tuple[int, ...] = (),
    transform: str | None = None,
    pool: int = 1,
    downsample: float = 2.0,
    dropout: float = 0.0,
    width: int | None = None,
    param_budget: int = PARAM_BUDGET,
    jit_compile: bool = True,
    num_transformers: int = 0,
    crop_size: int = 224,
    weights: str | None = None,
) -> keras.Model:
    """Builds a registered model.

    Args:
        name: a key of ``MODELS``.
        input_shape: one example, ``(H, W, C)`` (``(D, H, W, C)`` for 3D models).
        num_classes: classes of the softmax.
        label_shape: one example's labels: ``()``, or ``(T,)`` for the sequence
            models (T digits, one softmax each).
        transform: the transformers' transform; default: the model's first
            (``affine``, or ``affine3d`` for 3D).
        pool: average pooling factor after the transformer (2 for TC and RTS).
        downsample: the transformer's down-sampling factor d (``rnn_spn``,
            ``ffn_spn``, ``st_cnn_3d``).
        dropout: dropout rate of the sequence models' classifiers.
        width: classifier width; default: the paper's (sequence models) or the
            width that meets ``param_budget``.
        param_budget: the parameter count to match when ``width`` is None.
        jit_compile: run the transformer's sampler through XLA (training). Exports
            switch it off: TF Serving and TFLite run the plain graph.
        num_transformers: the CUB model's parallel transformers (0: the plain
            Inception baseline).
        crop_size: side of the CUB model's crops (224 in the paper).
        weights: the CUB model's backbone weights: ``imagenet`` (downloaded once
            by Keras) or None (random).

    Returns:
        The model, outputs ``{"logits"[, "theta", "transformed"]}``.
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
    if transform is None:
        transform = spec.transforms[0] if spec.transforms else "affine"
    elif spec.transforms and transform not in spec.transforms:
        raise ValueError(
            f"model {name!r} takes transform one of {spec.transforms}. "
            f"Received: transform={transform!r}"
        )
    options = BuildOptions(
        transform=transform,
        pool=pool,
        downsample=downsample,
        dropout=dropout,
        num_outputs=label_shape[0] if label_shape else 1,
        jit_compile=jit_compile,
        num_transformers=num_transformers,
        crop_size=crop_size,
        weights=weights,
    )
    if width is None and spec.width is not None:
        width = spec.width
    if width is None:
        width = _width_for_budget(
            lambda w: spec.make(input_shape, num_classes, w, options), param_budget
        )
    return spec.make(input_shape, num_classes, width, options)


# The real-image models register themselves on import (they use ``register``).
from stn_tf.models import cub as _cub  # noqa: E402, F401
from stn_tf.models import svhn as _svhn  # noqa: E402, F401
