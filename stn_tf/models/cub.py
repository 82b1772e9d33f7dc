"""The fine-grained bird classifier of STN §4.3 and Appendix A.6 (CUB-200-2011).

``STInception`` (``st_inception``) with N = ``num_transformers`` (``--num_st``):

- One localisation net shared by the N transformers: the input, down-scaled by a
  fixed average pooling to ``crop_size`` (2x for 448 px input and 224 px crops),
  through an Inception backbone without its pooling and classifier (5x5x2048
  features at 224 px), a 1x1 conv to 128 channels, a 128-unit fully connected
  layer, then the transformers' head with 2N outputs: N translations.
- N attention transformers whose scale is fixed at 0.5 (each sees half the
  image's side) and whose translations start tiling the image (left and right
  halves for N = 2, the four quadrants for N = 4), not all at the centre.
- Each transformer samples a ``crop_size`` crop from the full-resolution input;
  each crop has its own Inception stream (same architecture, own weights) ending
  in global average pooling: a 2048-D descriptor.
- The N descriptors, concatenated, go through dropout (0.7 in the paper) and a
  200-way softmax layer.
- N = 0 is the paper's CNN baseline: one Inception stream on the whole input.

Backbone. The paper's Inception with batch normalisation (Inception-BN, 1024-D
descriptors, 7x7 final features) is not in ``keras.applications``; InceptionV3 is
its closest relative there (2048-D descriptors). ``weights="imagenet"``
downloads its ImageNet weights once (Keras caches them); ``None`` starts from
random weights and runs offline. Inputs are [0, 1] pixels; the model rescales
them to InceptionV3's [-1, 1] after the transformers, so zero padding outside the
image is black.
"""

from __future__ import annotations

import keras
import numpy as np

from stn_tf.layers import ParallelSpatialTransformer
from stn_tf.models.base import PaperModel
from stn_tf.models.registry import register

__all__ = ["BACKBONE_MIN_SIZE", "STInception", "tiling"]

BACKBONE_MIN_SIZE = 75  # the smallest input InceptionV3 takes
ATTENTION_SCALE = 0.5  # A.6: "the scale is fixed to 50% of the image size"


def tiling(num: int, scale: float = ATTENTION_SCALE) -> np.ndarray:
    """``[num, 3]`` attention parameters ``(s, tx, ty)`` of windows that tile the image.

    The windows sit on a grid of ``floor(sqrt(num))`` rows and as many columns as
    needed, in raster order (top-left first), their centres spread evenly
    between -0.5 and 0.5: at scale 0.5 two windows side by side cover the image.
    """
    if num < 1:
        raise ValueError(f"tiling needs at least one window. Received: {num}")
    rows = int(np.floor(np.sqrt(num)))
    cols = -(-num // rows)

    def centres(k):
        return np.linspace(-0.5, 0.5, k) if k > 1 else np.zeros(1)

    ys, xs = np.meshgrid(centres(rows), centres(cols), indexing="ij")
    windows = np.stack([np.full(rows * cols, scale), xs.ravel(), ys.ravel()], -1)
    return windows[:num]


def _backbone(size: int, weights, name: str, pooling):
    if size < BACKBONE_MIN_SIZE:
        raise ValueError(
            f"the Inception backbone takes inputs of at least {BACKBONE_MIN_SIZE} px. "
            f"Received: {size} px ({name})"
        )
    return keras.applications.InceptionV3(
        include_top=False,
        weights=weights,
        input_shape=(size, size, 3),
        pooling=pooling,
        name=name,
    )


def _to_inception(name):
    return keras.layers.Rescaling(2.0, offset=-1.0, name=name)  # [0, 1] -> [-1, 1]


def _localization(image_size: int, crop_size: int, weights) -> keras.Sequential:
    factor = image_size // crop_size
    layers = (
        [keras.layers.AveragePooling2D(factor, name="downscale")] if factor > 1 else []
    )
    layers += [
        _to_inception("to_inception"),
        _backbone(crop_size, weights, "loc_backbone", pooling=None),
        keras.layers.Conv2D(128, 1, activation="relu", name="reduce"),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name="fc"),
    ]
    return keras.Sequential(layers, name="localization")


@register(
    "st_inception",
    family="cub",
    transforms=("attention",),
    description="N parallel attention transformers (scale 0.5), an InceptionV3 "
    "stream per crop, concatenated, 200-way softmax (N = 0: the CNN baseline)",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class STInception(PaperModel):
    """The CUB-200-2011 model of STN A.6 (see the module's docstring).

    Args:
        input_shape: one image, ``(S, S, 3)``, S at least 75.
        num_classes: 200 for CUB.
        num_transformers: N parallel attention transformers (0: the plain
            Inception baseline).
        crop_size: side of each crop (224 in the paper); divides S.
        weights: the backbones' starting weights: ``imagenet`` (downloaded once
            by Keras) or None (random).
        dropout: dropout rate before the softmax layer (0.7 in the paper).
        jit_compile: run the sampler through XLA.
        outputs: ``scores``, ``logits`` or ``all`` (see ``PaperModel``).
        name: the model's name.

    Input shape:
        ``[B, S, S, 3]`` pixels in [0, 1].

    Output shape:
        ``[B, num_classes]`` (``outputs="all"``: θ ``[B, N, 3]``, ``transformed``
        ``[B, N, crop, crop, 3]``).

    Example:

    >>> model = STInception((448, 448, 3), 200, num_transformers=2)
    """

    @staticmethod
    def check_args(input_shape, num_transformers: int, crop_size: int) -> None:
        """Raises ``ValueError`` for images, transformers or crops the model
        cannot take (the trainer asks before it starts)."""
        side = input_shape[0]
        if tuple(input_shape) != (side, side, 3):
            raise ValueError(
                f"st_inception takes square RGB images. Received: input_shape={input_shape}"
            )
        if side < BACKBONE_MIN_SIZE:
            raise ValueError(
                f"st_inception takes images of at least {BACKBONE_MIN_SIZE} px (the "
                f"Inception backbone's smallest input). Received: {side} px"
            )
        if num_transformers < 0:
            raise ValueError(
                f"num_transformers must be >= 0. Received: {num_transformers}"
            )
        if num_transformers and (crop_size < BACKBONE_MIN_SIZE or side % crop_size):
            raise ValueError(
                f"crop_size must be at least {BACKBONE_MIN_SIZE} and divide image_size "
                "(the localisation net sees the image down-scaled to the crop size). "
                f"Received: crop_size={crop_size}, image_size={side}"
            )

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        num_transformers: int = 4,
        crop_size: int = 224,
        weights: str | None = None,
        dropout: float = 0.0,
        jit_compile: bool = True,
        outputs: str = "scores",
        name: str = "st_inception",
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        self.check_args(input_shape, num_transformers, crop_size)
        side, n, crop = input_shape[0], num_transformers, crop_size

        # === Functional model (its layers are made where they are used) ===
        inputs = keras.Input(input_shape)
        theta = transformed = None
        if n == 0:
            stream = _backbone(side, weights, "stream_0", pooling="avg")
            features = stream(_to_inception("to_inception")(inputs))
        else:
            st = ParallelSpatialTransformer(
                _localization(side, crop, weights),
                n,
                "attention",
                output_size=(crop, crop),
                merge="list",
                fixed_scale=ATTENTION_SCALE,
                initial_params=tiling(n),
                return_theta=True,
                jit_compile=jit_compile,
                name="st",
            )
            crops, theta = st(inputs)  # N x [B, crop, crop, 3], [B, N, 3]
            descriptors = [
                _backbone(crop, weights, f"stream_{i}", pooling="avg")(
                    _to_inception(f"to_inception_{i}")(c)
                )
                for i, c in enumerate(crops)
            ]
            features = (
                keras.layers.Concatenate(name="concat")(descriptors)
                if n > 1
                else descriptors[0]
            )
            transformed = keras.ops.stack(crops, axis=1)
        features = keras.layers.Dropout(dropout, name="dropout")(features)
        logits = keras.layers.Dense(num_classes, name="logits")(features)
        super().__init__(
            inputs=inputs,
            outputs=self._outputs(outputs, logits, theta, transformed),
            name=name,
            **kwargs,
        )

        # === Config ===
        self._remember(locals())
