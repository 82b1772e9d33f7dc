"""The cluttered MNIST sequence models of the RNN-SPN paper (§3, appendix).

- ``RNNSPN``: localisation convs -> GRU(256) for T steps -> θ_t, a linear function
  of the GRU state; each step's crop (down-sampled by d) goes through one shared
  32-filter classifier. Two aids, off by default (not the paper's): steps starting
  left to right, and trained per-step offsets.
- ``SequenceClassifier`` with a transformer, ``FFNSPN``: one affine transformer
  (d = 2), a 96-filter classifier, a softmax head per digit.
- ``SequenceClassifier`` without one, ``ConvNet``: the FFN-SPN's classifier on the
  raw input (the paper's "Conv. net").

Widths are the paper's, fixed (no parameter budget).
"""

from __future__ import annotations

import keras
import numpy as np

from stn_tf.layers import RecurrentSpatialTransformer, SpatialTransformer
from stn_tf.models.base import PaperModel
from stn_tf.models.registry import TRANSFORMS_2D, register

__all__ = [
    "FFNSPN",
    "RNNSPN",
    "STARTS",
    "ConvNet",
    "SequenceClassifier",
    "left_to_right",
]

STARTS = ("identity", "left_to_right")


# === Layers ===


def sequence_classifier(width, units, outputs, dropout, name="classifier"):
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


def sequence_localization(hidden: int | None = None) -> keras.Sequential:
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


def sequence_heads(x, num_outputs, num_classes):
    """``num_outputs`` separate softmax layers: ``[B, F]`` -> ``[B, T, classes]``."""
    x = keras.layers.Dense(num_outputs * num_classes, name="heads")(x)
    return keras.layers.Reshape((num_outputs, num_classes), name="per_digit")(x)


def left_to_right(transform: str, steps: int):
    """Starting windows of the RNN-SPN's steps: ``steps`` windows of 0.6x the input's
    size, centred on a horizontal line from left to right (the digits' order)."""
    if transform not in ("affine", "attention"):
        return None  # projective and TPS start at the identity
    centres = np.linspace(-0.4, 0.4, steps) if steps > 1 else np.zeros(1)
    scale = 0.6
    if transform == "attention":  # (s, tx, ty)
        return [[scale, x, 0.0] for x in centres]
    return [[scale, 0.0, x, 0.0, scale, 0.0] for x in centres]


# === Models ===


@register(
    "rnn_spn",
    transforms=TRANSFORMS_2D,
    sequence=True,
    description="recurrent transformer (GRU 256), one crop per digit, shared classifier",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class RNNSPN(PaperModel):
    """The recurrent spatial transformer network (RNN-SPN paper §3.2, appendix).

    Args:
        input_shape: one example, ``(H, W, C)``.
        num_classes: classes per digit.
        num_outputs: T, the digits of a sequence (one glimpse each).
        transform: the transformer's transform.
        downsample: the crops' down-sampling factor d.
        dropout: dropout rate of the classifier.
        width: the classifier's filters (32 in the paper).
        units: GRU units (256 in the paper).
        starts: ``identity`` (the paper: θ_t is the linear head's output, which
            starts at the identity for every step) or ``left_to_right``: the steps
            start on windows of 0.6x the input from left to right (an aid, not
            the paper's; affine and attention only).
        learn_offsets: train the per-step offsets that ``starts`` adds (an aid,
            not the paper's).
        jit_compile: run the sampler through XLA.
        outputs: ``scores``, ``logits`` or ``all`` (see ``PaperModel``).
        name: the model's name.

    Input shape:
        ``[B, *input_shape]``.

    Output shape:
        ``[B, T, num_classes]`` (``outputs="all"``: θ ``[B, T, P]``,
        ``transformed`` ``[B, T, H/d, W/d, C]``).

    Example:

    >>> model = RNNSPN((100, 100, 1), 10, num_outputs=3)
    >>> model.compile("rmsprop", "sparse_categorical_crossentropy")
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        num_outputs: int = 3,
        transform: str = "affine",
        downsample: float = 2.0,
        dropout: float = 0.0,
        width: int = 32,
        units: int = 256,
        starts: str = "identity",
        learn_offsets: bool = False,
        jit_compile: bool = True,
        outputs: str = "scores",
        name: str = "rnn_spn",
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        if starts not in STARTS:
            raise ValueError(f"starts must be one of {STARTS}. Received: {starts!r}")
        initial = (
            left_to_right(transform, num_outputs) if starts != "identity" else None
        )
        # === Layers ===
        st = RecurrentSpatialTransformer(
            sequence_localization(),
            transform=transform,
            return_theta=True,
            jit_compile=jit_compile,
            name="st",
            steps=num_outputs,
            units=units,
            downsample=downsample,
            initial_params=initial,
            learn_offsets=learn_offsets,
        )
        classifier = sequence_classifier(width, 256, num_classes, dropout)

        # === Functional model ===
        inputs = keras.Input(input_shape)
        crops, theta = st(inputs)  # [B, T, h, w, C], [B, T, P]
        logits = keras.layers.TimeDistributed(classifier, name="per_step")(crops)
        super().__init__(
            inputs=inputs,
            outputs=self._outputs(outputs, logits, theta, crops),
            name=name,
            **kwargs,
        )

        # === Config ===
        self._remember(locals())


@keras.saving.register_keras_serializable(package="stn_tf")
class SequenceClassifier(PaperModel):
    """A classifier with a softmax head per digit, with an optional transformer
    at its input (the RNN-SPN paper's FFN-SPN and Conv. net).

    Args:
        input_shape: one example, ``(H, W, C)``.
        num_classes: classes per digit.
        num_outputs: T, the digits of a sequence (one head each).
        transform: the transformer's transform, or None for none.
        downsample: the transformer's down-sampling factor d.
        dropout: dropout rate of the classifier.
        width: the classifier's filters (96 in the paper).
        units: the hidden layer's units (400 in the paper).
        jit_compile: run the sampler through XLA.
        outputs: ``scores``, ``logits`` or ``all`` (see ``PaperModel``).
        name: the model's name.

    Input shape:
        ``[B, *input_shape]``.

    Output shape:
        ``[B, T, num_classes]`` (``outputs="all"``: θ ``[B, P]``, ``transformed``
        ``[B, H/d, W/d, C]``).

    Example:

    >>> model = FFNSPN((100, 100, 1), 10, num_outputs=3)
    >>> model.compile("rmsprop", "sparse_categorical_crossentropy")
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        num_outputs: int = 3,
        transform: str | None = None,
        downsample: float = 2.0,
        dropout: float = 0.0,
        width: int = 96,
        units: int = 400,
        jit_compile: bool = True,
        outputs: str = "scores",
        name: str | None = None,
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        # === Layers ===
        st = None
        if transform is not None:
            st = SpatialTransformer(
                sequence_localization(hidden=200),
                transform=transform,
                return_theta=True,
                jit_compile=jit_compile,
                name="st",
                downsample=downsample,
            )
        classifier = sequence_classifier(width, units, None, dropout)

        # === Functional model ===
        inputs = keras.Input(input_shape)
        x, theta = (inputs, None) if st is None else st(inputs)
        logits = sequence_heads(classifier(x), num_outputs, num_classes)
        super().__init__(
            inputs=inputs,
            outputs=self._outputs(outputs, logits, theta, x if st else None),
            name=name or ("ffn_spn" if st else "conv_net"),
            **kwargs,
        )

        # === Config ===
        self._remember(locals())


@register(
    "ffn_spn",
    transforms=TRANSFORMS_2D,
    sequence=True,
    description="one transformer (d = 2) + 96-filter classifier with a head per digit",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class FFNSPN(SequenceClassifier):
    """The FFN-SPN: ``SequenceClassifier`` with a transformer (``affine``)."""

    def __init__(self, input_shape, num_classes, transform="affine", **kwargs):
        kwargs.setdefault("name", "ffn_spn")
        super().__init__(input_shape, num_classes, transform=transform, **kwargs)


@register(
    "conv_net",
    sequence=True,
    description="the FFN-SPN's classifier on the raw input (the paper's Conv. net)",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class ConvNet(SequenceClassifier):
    """The paper's Conv. net: ``SequenceClassifier`` without a transformer."""

    FIXED = ("transform", "downsample")

    def __init__(self, input_shape, num_classes, **kwargs):
        kwargs.setdefault("name", "conv_net")
        super().__init__(input_shape, num_classes, **kwargs)
