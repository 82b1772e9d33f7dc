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
from stn_tf.models import register

__all__ = ["CONV_STACK", "ChainedTheta"]

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


def _transformer(localization, options, name):
    return SpatialTransformer(
        localization,
        "affine",
        return_theta=True,
        jit_compile=options.jit_compile,
        name=name,
    )


def _sequence_cnn(inputs, num_outputs, num_classes, options, transformers=()):
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
            x = keras.layers.Dropout(options.dropout, name=f"dropout_conv_{i}")(x)
    x = keras.layers.Flatten()(x)
    for j in range(3):
        x = keras.layers.Dense(FC_UNITS, activation="relu", name=f"fc_{j}")(x)
        x = keras.layers.Dropout(options.dropout, name=f"dropout_fc_{j}")(x)
    logits = keras.layers.Dense(num_outputs * num_classes, name="heads")(x)
    logits = keras.layers.Reshape((num_outputs, num_classes), name="per_digit")(logits)
    return logits, thetas, first


def _check_size(input_shape, name):
    side = input_shape[0]
    if side % 16 or input_shape[1] != side:
        raise ValueError(
            f"{name} takes square images whose side is a multiple of 16 (four 2x2 "
            f"poolings). Received: input_shape={input_shape}"
        )


@register(
    "svhn_cnn",
    family="svhn",
    sequence=True,
    width=0,
    description="11 hidden layers (8 convs, 3 fc[3072]), five fc[11] classifiers",
)
def _svhn_cnn(input_shape, num_classes, width, options):
    del width
    _check_size(input_shape, "svhn_cnn")
    inputs = keras.Input(input_shape)
    logits, _, _ = _sequence_cnn(inputs, options.num_outputs, num_classes, options)
    return keras.Model(inputs, {"logits": logits}, name="svhn_cnn")


@register(
    "st_cnn_single",
    family="svhn",
    sequence=True,
    transforms=("affine",),
    width=0,
    description="an affine transformer (4-layer conv localisation) + the SVHN CNN",
)
def _st_cnn_single(input_shape, num_classes, width, options):
    del width
    _check_size(input_shape, "st_cnn_single")
    inputs = keras.Input(input_shape)
    st = _transformer(_conv_localization(), options, "st")
    logits, (theta,), image = _sequence_cnn(
        inputs, options.num_outputs, num_classes, options, [st]
    )
    outputs = {"logits": logits, "theta": theta, "transformed": image}
    return keras.Model(inputs, outputs, name="st_cnn_single")


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


@register(
    "st_cnn_multi",
    family="svhn",
    sequence=True,
    transforms=("affine",),
    width=0,
    description="an affine transformer (fc[32]-fc[32] localisation) before each of "
    "the first four convs of the SVHN CNN",
)
def _st_cnn_multi(input_shape, num_classes, width, options):
    del width
    _check_size(input_shape, "st_cnn_multi")
    inputs = keras.Input(input_shape)
    transformers = [
        _transformer(_fc32_localization(f"localization_{i}"), options, f"st_{i}")
        for i in range(MULTI_TRANSFORMERS)
    ]
    logits, thetas, image = _sequence_cnn(
        inputs, options.num_outputs, num_classes, options, transformers
    )
    theta = ChainedTheta(name="chained_theta")(thetas)
    outputs = {"logits": logits, "theta": theta, "transformed": image}
    return keras.Model(inputs, outputs, name="st_cnn_multi")
