"""The multi-digit SVHN models of STN §4.2 and Appendix A.5.

Notation of A.5: conv[N, w, s, p] is N filters of w x w, stride s, p pixels of
padding; max[2] a 2x2 max-pooling; fc[N] a fully connected layer; ReLU after
every weight layer.

- ``svhn_cnn``, the 11-hidden-layer baseline: conv[48,5,1,2]-max[2]-
  conv[64,5,1,2]-conv[128,5,1,2]-max[2]-conv[160,5,1,2]-conv[192,5,1,2]-max[2]-
  conv[192,5,1,2]-conv[192,5,1,2]-max[2]-conv[192,5,1,2]-fc[3072]-fc[3072]-
  fc[3072], then five parallel fc[11] softmax classifiers (a digit or "none"
  per position). Dropout after every hidden layer but the first conv.
- ``st_cnn_single``: an affine transformer at the input, whose localisation net
  is conv[32,5,1,2]-max[2]-conv[32,5,1,2]-fc[32]-fc[32], then the CNN.
- ``st_cnn_multi``: an affine transformer before each of the first four conv
  layers, each with an fc[32]-fc[32] localisation net; the first acts on the
  image, the others on the feature maps they precede. Each keeps its input's
  size.

Localisation nets have no dropout. Outputs: ``logits`` ``[B, 5, 11]``; for the ST
models ``theta`` and ``transformed`` (the first transformer's output, an image).
For ``st_cnn_multi``, ``theta`` is ``[B, 4, 6]`` with entry k the product of the
first k+1 transformations: the region of the input that transformer k's output
covers (as the paper's Table 2 (b) draws them), which holds because every layer
between the transformers keeps normalised coordinates (same-padded convs, 2x2
pooling of even sizes).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from stn_tf import transforms
from stn_tf.layers import SpatialTransformer
from stn_tf.models.base import PaperModel
from stn_tf.models.registry import register

__all__ = [
    "CONV_STACK",
    "SVHNCNN",
    "ChainedTheta",
    "STCNNMulti",
    "STCNNSingle",
    "SVHNClassifier",
]

# (filters, max-pool after it): the eight convs of A.5.
CONV_STACK = (
    (48, True),
    (64, False),
    (128, True),
    (160, False),
    (192, True),
    (192, False),
    (192, True),
    (192, False),
)
FC_UNITS = 3072
MULTI_TRANSFORMERS = 4


def _fc32_localization(name):
    return keras.Sequential(
        [
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="fc_0"),
            keras.layers.Dense(32, activation="relu", name="fc_1"),
        ],
        name=name,
    )


def _conv_localization():
    return keras.Sequential(
        [
            keras.layers.Conv2D(
                32, 5, padding="same", activation="relu", name="conv_0"
            ),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(
                32, 5, padding="same", activation="relu", name="conv_1"
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="fc_0"),
            keras.layers.Dense(32, activation="relu", name="fc_1"),
        ],
        name="localization",
    )


def _transformer(localization, jit_compile, name):
    return SpatialTransformer(
        localization,
        "affine",
        return_theta=True,
        jit_compile=jit_compile,
        name=name,
    )


def _sequence_cnn(inputs, num_outputs, num_classes, dropout, units, transformers=()):
    """The A.5 CNN on ``inputs``; ``transformers[i]`` (if any) runs before conv i."""
    x, thetas, first = inputs, [], None
    for i, (filters, pool) in enumerate(CONV_STACK):
        if i < len(transformers):
            x, theta = transformers[i](x)
            thetas.append(theta)
            first = x if first is None else first
        x = keras.layers.Conv2D(
            filters, 5, padding="same", activation="relu", name=f"conv_{i}"
        )(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
        if i > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_conv_{i}")(x)
    x = keras.layers.Flatten()(x)
    for j in range(3):
        x = keras.layers.Dense(units, activation="relu", name=f"fc_{j}")(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_fc_{j}")(x)
    logits = keras.layers.Dense(num_outputs * num_classes, name="heads")(x)
    logits = keras.layers.Reshape((num_outputs, num_classes), name="per_digit")(logits)
    return logits, thetas, first


@keras.saving.register_keras_serializable(package="stn_tf")
class ChainedTheta(keras.layers.Layer):
    """K affine θ ``[B, 6]`` -> ``[B, K, 6]``: entry k is A_1 ... A_(k+1), the
    region of the input that transformer k's output covers (see above)."""

    def call(self, thetas):
        total, chained = None, []
        for theta in thetas:
            total = (
                theta if total is None else transforms.compose("affine", total, theta)
            )
            chained.append(total)
        return tf.stack(chained, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(input_shape), input_shape[0][-1])


TRANSFORMERS = ("none", "single", "multi")


@keras.saving.register_keras_serializable(package="stn_tf")
class SVHNClassifier(PaperModel):
    """The multi-digit SVHN CNN of A.5, with no, one or four transformers.

    Args:
        input_shape: one image, ``(S, S, 3)``, S a multiple of 16 (64 or 128).
        num_classes: classes per position (11: a digit or "none").
        num_outputs: positions (5).
        transformers: ``none`` (the CNN), ``single`` (one transformer at the
            input with a conv localisation net) or ``multi`` (one before each of
            the first four convs, fc[32]-fc[32] localisation nets).
        units: the three hidden fully connected layers' units (3072 in A.5).
        dropout: dropout rate after every hidden layer but the first conv.
        jit_compile: run the sampler through XLA.
        outputs: ``scores``, ``logits`` or ``all`` (see ``PaperModel``).
        name: the model's name.

    Input shape:
        ``[B, S, S, 3]`` pixels in [0, 1].

    Output shape:
        ``[B, num_outputs, num_classes]`` (``outputs="all"``: θ ``[B, 6]``, or
        ``[B, 4, 6]`` chained for ``multi``; ``transformed``, the first
        transformer's output ``[B, S, S, 3]``).

    Example:

    >>> model = STCNNMulti((64, 64, 3), 11)
    >>> model.compile("sgd", "sparse_categorical_crossentropy")
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int = 11,
        *,
        num_outputs: int = 5,
        transformers: str = "none",
        units: int = FC_UNITS,
        dropout: float = 0.0,
        jit_compile: bool = True,
        outputs: str = "scores",
        name: str | None = None,
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        name = name or {"none": "svhn_cnn"}.get(transformers, f"st_cnn_{transformers}")
        side = input_shape[0]
        if len(input_shape) != 3 or side % 16 or input_shape[1] != side:
            raise ValueError(
                f"{name} takes square images whose side is a multiple of 16 (four 2x2 "
                f"poolings). Received: input_shape={input_shape}"
            )
        if transformers not in TRANSFORMERS:
            raise ValueError(
                f"transformers must be one of {TRANSFORMERS}. Received: {transformers!r}"
            )

        # === Layers ===
        if transformers == "single":
            sts = [_transformer(_conv_localization(), jit_compile, "st")]
        elif transformers == "multi":
            sts = [
                _transformer(
                    _fc32_localization(f"localization_{i}"), jit_compile, f"st_{i}"
                )
                for i in range(MULTI_TRANSFORMERS)
            ]
        else:
            sts = []

        # === Functional model ===
        inputs = keras.Input(input_shape)
        logits, thetas, image = _sequence_cnn(
            inputs, num_outputs, num_classes, dropout, units, sts
        )
        theta = None
        if len(thetas) == 1:
            theta = thetas[0]
        elif thetas:
            theta = ChainedTheta(name="chained_theta")(thetas)
        super().__init__(
            inputs=inputs,
            outputs=self._outputs(outputs, logits, theta, image),
            name=name,
            **kwargs,
        )

        # === Config ===
        self._remember(locals())


@register(
    "svhn_cnn",
    family="svhn",
    sequence=True,
    description="11 hidden layers (8 convs, 3 fc[3072]), five fc[11] classifiers",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class SVHNCNN(SVHNClassifier):
    """The SVHN CNN baseline (A.5): ``SVHNClassifier`` without transformers."""

    FIXED = ("transformers",)

    def __init__(self, input_shape, num_classes=11, **kwargs):
        kwargs.setdefault("name", "svhn_cnn")
        super().__init__(input_shape, num_classes, transformers="none", **kwargs)


@register(
    "st_cnn_single",
    family="svhn",
    sequence=True,
    transforms=("affine",),
    description="an affine transformer (4-layer conv localisation) + the SVHN CNN",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class STCNNSingle(SVHNClassifier):
    """ST-CNN Single (A.5): ``SVHNClassifier`` with one transformer at the input."""

    FIXED = ("transformers",)

    def __init__(self, input_shape, num_classes=11, **kwargs):
        kwargs.setdefault("name", "st_cnn_single")
        super().__init__(input_shape, num_classes, transformers="single", **kwargs)


@register(
    "st_cnn_multi",
    family="svhn",
    sequence=True,
    transforms=("affine",),
    description="an affine transformer (fc[32]-fc[32] localisation) before each of "
    "the first four convs of the SVHN CNN",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class STCNNMulti(SVHNClassifier):
    """ST-CNN Multi (A.5): ``SVHNClassifier`` with a transformer before each of
    the first four convs."""

    FIXED = ("transformers",)

    def __init__(self, input_shape, num_classes=11, **kwargs):
        kwargs.setdefault("name", "st_cnn_multi")
        super().__init__(input_shape, num_classes, transformers="multi", **kwargs)
