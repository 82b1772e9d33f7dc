"""The distorted-MNIST, addition and 3D models of STN §4.1 and Appendix A.1-A.4.

One class, :class:`STNClassifier`, is a classifier with an optional spatial
transformer at its input; the papers' names are its presets:

- ``FCN``: two hidden fully connected layers, then the classification layer.
- ``CNN``: 9x9 conv, 2x2 max-pool, 7x7 conv, 2x2 max-pool, classification layer.
- ``STFCN`` / ``STCNN``: the same classifiers behind a spatial transformer
  (affine, projective, TPS or attention). Localisation nets: three 32-unit fully
  connected layers (ST-FCN); two 20-filter 5x5 convs on a 2x down-sampled input
  with 2x2 max-pooling between them, then a 20-unit layer (ST-CNN). The
  transformer's output has the input's size; on TC and RTS a 2x2 average pooling
  follows it (``pool=2``, A.4).
- ``STFCN2x``: two parallel transformers (2xST-FCN, A.1), each seeing every
  channel, their outputs concatenated on the channel axis before the FCN.
- ``STCNN3D``: a 3D affine transformer whose output volume is summed over its
  depth into a 2D image for the CNN (A.3); ``CNN3D``: the same CNN on the input
  summed over its depth and 2x average-pooled.

All use ReLUs and no padding. The classifier's width (FCN units, CNN filters) is
chosen, unless given, so that the model has about ``param_budget`` (400k)
parameters, as in the paper: the ST models spend part of the budget on their
localisation nets. One deviation, forced by the sizes: a CNN classifier on an
input smaller than 28x28 (ST-CNN on RTS sees 21x21 after the pooling) pads its
convolutions ("same"), or its 7x7 conv would have nothing left to convolve.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from stn_tf.layers import ParallelSpatialTransformer, SpatialTransformer
from stn_tf.models.base import PaperModel, resolve_width
from stn_tf.models.registry import PARAM_BUDGET, TRANSFORMS_2D, register

__all__ = [
    "CNN",
    "CNN3D",
    "FCN",
    "STCNN",
    "STCNN3D",
    "STFCN",
    "MaxPooling3D",
    "STFCN2x",
    "STNClassifier",
]

CLASSIFIERS = ("fcn", "cnn")


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


# === Layers ===


def fcn_classifier(
    width: int, num_classes: int, name: str = "classifier"
) -> keras.Sequential:
    """Two ``width``-unit ReLU layers, then the logits (A.4's FCN)."""
    return keras.Sequential(
        [
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu", name="fc_0"),
            keras.layers.Dense(width, activation="relu", name="fc_1"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name=name,
    )


def cnn_classifier(
    width: int, num_classes: int, side: int, name: str = "classifier"
) -> keras.Sequential:
    """conv 9x9, pool, conv 7x7, pool, logits (A.4's CNN); "same" padding below
    28 px, where "valid" would leave nothing to convolve."""
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


def fcn_localization() -> keras.Sequential:
    """The ST-FCN localisation net: three 32-unit ReLU layers (A.4)."""
    return keras.Sequential(
        [keras.layers.Flatten()]
        + [keras.layers.Dense(32, activation="relu", name=f"fc_{i}") for i in range(3)],
        name="localization",
    )


def cnn_localization(ndim: int = 2, pooled: bool = False) -> keras.Sequential:
    """The ST-CNN localisation net (A.4), on images or (``ndim=3``) volumes;
    ``pooled`` adds a 2x2(x2) max-pooling before its fully connected layer (3D: on
    60^3 volumes its input shrinks from 9^3 x 20 to 4^3 x 20 features, so the
    layer takes 26k parameters instead of 292k of the 400k budget)."""
    pool, conv = (
        (keras.layers.MaxPooling2D, keras.layers.Conv2D)
        if ndim == 2
        else (MaxPooling3D, keras.layers.Conv3D)
    )
    layers = [
        pool(2, name="downsample"),
        conv(20, 5, activation="relu", name="conv_0"),
        pool(2),
        conv(20, 5, activation="relu", name="conv_1"),
    ]
    if pooled:
        layers.append(pool(2, name="pool_features"))
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(20, activation="relu", name="fc_0"),
    ]
    return keras.Sequential(layers, name="localization")


def _depth_projection(volumes):
    """``[B, D, H, W, C]`` -> ``[B, H, W, C]``: the sum over depth (STN A.3)."""
    return keras.ops.sum(volumes, axis=1)


# === Model ===


@keras.saving.register_keras_serializable(package="stn_tf")
class STNClassifier(PaperModel):
    """A classifier of STN §4.1 with an optional spatial transformer at its input.

    Args:
        input_shape: one example, ``(H, W, C)``, or ``(D, H, W, C)`` for volumes
            (summed over their depth before the 2D classifier).
        num_classes: classes of the softmax.
        classifier: ``fcn`` or ``cnn``; the localisation net is of the same kind.
        transform: the transformer's transform (``affine``, ``projective``,
            ``tps``, ``attention``; ``affine3d`` for volumes), or None for no
            transformer.
        num_transformers: 1, or 2 for two parallel transformers whose outputs
            are concatenated on the channel axis (2xST-FCN).
        shared_localization: the two transformers share one localisation net
            with two heads (as CUB's, A.6); default: each has its own, as A.1's
            "two independent spatial transformers".
        pooled_localization: volumes: the 3D localisation net pools its
            features before its fully connected layer (see ``cnn_localization``),
            which leaves the classifier the budget ``CNN3D`` has.
        pool: average pooling factor after the transformer (2 for TC and RTS;
            for volumes without a transformer, after the depth sum).
        downsample: the 3D transformer's down-sampling factor d.
        width: classifier width (FCN units, CNN filters); None: the width that
            meets ``param_budget`` (resolved once, then in ``get_config``).
        param_budget: the parameter count to match when ``width`` is None.
        jit_compile: run the sampler through XLA (training). Exports switch it
            off: TF Serving and TFLite run the plain graph.
        outputs: ``scores``, ``logits`` or ``all`` (see ``PaperModel``).
        name: the model's name; default: its ``--model`` name.

    Input shape:
        ``[B, *input_shape]`` floats, pixels in [0, 1].

    Output shape:
        ``[B, num_classes]`` (``outputs="all"``: a dict, θ ``[B, P]`` or ``[B, 2,
        P]``, ``transformed`` ``[B, H, W, C]`` or ``[B, 2, H, W, C]``).

    Example:

    >>> model = STNClassifier((42, 42, 1), 10, classifier="cnn", transform="tps",
    ...                       pool=2, width=8)
    >>> model.compile("sgd", "sparse_categorical_crossentropy")
    >>> model(np.zeros((2, 42, 42, 1), "float32")).shape
    TensorShape([2, 10])
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        classifier: str = "cnn",
        transform: str | None = None,
        num_transformers: int = 1,
        shared_localization: bool = False,
        pooled_localization: bool = True,
        pool: int = 1,
        downsample: float | None = None,
        width: int | None = None,
        param_budget: int = PARAM_BUDGET,
        jit_compile: bool = True,
        outputs: str = "scores",
        name: str | None = None,
        **kwargs,
    ):
        input_shape = tuple(input_shape)
        _check_args(input_shape, classifier, transform, num_transformers, pool)
        volumes = len(input_shape) == 4
        args = dict(
            input_shape=input_shape,
            num_classes=num_classes,
            classifier=classifier,
            transform=transform,
            num_transformers=num_transformers,
            shared_localization=shared_localization,
            pooled_localization=pooled_localization,
            pool=pool,
            downsample=downsample,
            param_budget=param_budget,
            jit_compile=jit_compile,
        )
        width = resolve_width(
            width,
            param_budget,
            lambda w: STNClassifier(**args, width=w, outputs="logits"),
        )

        # === Layers ===
        sts = []
        if transform is not None:
            sts = _input_transformers(
                classifier,
                transform,
                num_transformers,
                shared_localization,
                pooled_localization,
                downsample,
                jit_compile,
                volumes,
            )

        # === Functional model ===
        inputs = keras.Input(input_shape)
        x, theta, transformed = _transformed(inputs, sts, num_transformers, volumes)
        if pool > 1:  # after the transformer, or the depth sum
            x = keras.layers.AveragePooling2D(pool, name="pool")(x)
        if classifier == "fcn":
            head = fcn_classifier(width, num_classes)
        else:
            head = cnn_classifier(width, num_classes, min(x.shape[1:3]))
        logits = head(x)
        super().__init__(
            inputs=inputs,
            outputs=self._outputs(outputs, logits, theta, transformed),
            name=name or _name(classifier, transform, num_transformers, volumes),
            **kwargs,
        )

        # === Config ===
        self._remember(locals())
        self.width = width


def _transformed(inputs, sts, num_transformers: int, volumes: bool):
    """The classifier's input, θ and the transformers' output (None, None without
    transformers): one transformer's output; two side by side on the channels (the
    2xST's, ``transformed`` stacked ``[B, 2, H, W, C]``); a volume summed over
    its depth."""
    x, theta, transformed = inputs, None, None
    if len(sts) == 1:
        x, theta = sts[0](x)
    elif sts:  # two independent transformers
        x, thetas = zip(*(st(inputs) for st in sts))
        theta = keras.ops.stack(thetas, axis=1)  # [B, 2, P]
    if num_transformers > 1:  # N x [B, H, W, C]
        transformed = keras.ops.stack(x, axis=1)  # [B, N, H, W, C]
        x = keras.layers.Concatenate(name="concat")(list(x))  # [B, H, W, N*C]
    if volumes:
        x = _depth_projection(x)
    if transformed is None and sts:
        transformed = x
    return x, theta, transformed


def _check_args(input_shape, classifier, transform, num_transformers, pool) -> None:
    volumes = len(input_shape) == 4
    if len(input_shape) not in (3, 4):
        raise ValueError(
            "input_shape must be (H, W, C) or (D, H, W, C). "
            f"Received: input_shape={input_shape}"
        )
    if classifier not in CLASSIFIERS:
        raise ValueError(
            f"classifier must be one of {CLASSIFIERS}. Received: {classifier!r}"
        )
    if num_transformers not in (1, 2):
        raise ValueError(
            f"num_transformers must be 1 or 2. Received: {num_transformers}"
        )
    if pool != 1 and transform is None and not volumes:
        raise ValueError(
            "pool is the average pooling after the transformer: a classifier "
            f"without one takes none. Received: pool={pool}"
        )
    if volumes and (classifier != "cnn" or num_transformers != 1):
        raise ValueError(
            "volumes take the CNN classifier and one transformer. Received: "
            f"classifier={classifier!r}, num_transformers={num_transformers}"
        )


def _input_transformers(
    classifier,
    transform,
    num_transformers,
    shared_localization,
    pooled_localization,
    downsample,
    jit_compile,
    volumes,
) -> list:
    """The transformers at the input, each with a localisation net of the
    classifier's kind (A.4): one, two independent ones (A.1), or two heads on one
    shared net."""

    def localization():
        if volumes:
            return cnn_localization(ndim=3, pooled=pooled_localization)
        return fcn_localization() if classifier == "fcn" else cnn_localization()

    common = {"transform": transform, "return_theta": True, "jit_compile": jit_compile}
    if downsample is not None:
        common["downsample"] = downsample
    if num_transformers == 1:
        return [SpatialTransformer(localization(), name="st", **common)]
    if shared_localization:
        return [
            ParallelSpatialTransformer(
                localization(), num_transformers, merge="list", name="st", **common
            )
        ]
    return [
        SpatialTransformer(localization(), name=f"st_{i}", **common)
        for i in range(num_transformers)
    ]


def _name(classifier, transform, num_transformers, volumes) -> str:
    name = ("st_" if transform else "") + classifier
    return name + ("_2x" if num_transformers > 1 else "") + ("_3d" if volumes else "")


# What the presets fix of STNClassifier's arguments (they stay out of their configs).
_NO_TRANSFORMER = (
    "classifier",
    "transform",
    "num_transformers",
    "shared_localization",
    "pooled_localization",
    "downsample",
    "pool",
)
_ONE_2D_TRANSFORMER = (
    "classifier",
    "num_transformers",
    "shared_localization",
    "pooled_localization",
    "downsample",
)


@register("fcn", description="two hidden fully connected layers")
@keras.saving.register_keras_serializable(package="stn_tf")
class FCN(STNClassifier):
    """The paper's FCN (A.4): two hidden layers; ``STNClassifier`` args."""

    FIXED = _NO_TRANSFORMER

    def __init__(self, input_shape, num_classes, **kwargs):
        kwargs.setdefault("name", "fcn")
        super().__init__(input_shape, num_classes, classifier="fcn", **kwargs)


@register("cnn", description="conv 9x9, pool, conv 7x7, pool")
@keras.saving.register_keras_serializable(package="stn_tf")
class CNN(STNClassifier):
    """The paper's CNN (A.4); ``STNClassifier`` args."""

    FIXED = _NO_TRANSFORMER

    def __init__(self, input_shape, num_classes, **kwargs):
        kwargs.setdefault("name", "cnn")
        super().__init__(input_shape, num_classes, classifier="cnn", **kwargs)


@register("st_fcn", transforms=TRANSFORMS_2D, description="spatial transformer + FCN")
@keras.saving.register_keras_serializable(package="stn_tf")
class STFCN(STNClassifier):
    """ST-FCN (A.4): a transformer, then the FCN; ``STNClassifier`` args."""

    FIXED = _ONE_2D_TRANSFORMER

    def __init__(self, input_shape, num_classes, transform="affine", **kwargs):
        kwargs.setdefault("name", "st_fcn")
        super().__init__(
            input_shape, num_classes, classifier="fcn", transform=transform, **kwargs
        )


@register("st_cnn", transforms=TRANSFORMS_2D, description="spatial transformer + CNN")
@keras.saving.register_keras_serializable(package="stn_tf")
class STCNN(STNClassifier):
    """ST-CNN (A.4): a transformer, then the CNN; ``STNClassifier`` args.

    Example:

    >>> model = STCNN((60, 60, 1), 10, transform="tps", pool=2)
    >>> model.compile("sgd", "sparse_categorical_crossentropy")
    """

    FIXED = _ONE_2D_TRANSFORMER

    def __init__(self, input_shape, num_classes, transform="affine", **kwargs):
        kwargs.setdefault("name", "st_cnn")
        super().__init__(
            input_shape, num_classes, classifier="cnn", transform=transform, **kwargs
        )


@register(
    "st_fcn_2x",
    transforms=TRANSFORMS_2D,
    description="two parallel spatial transformers (2xST-FCN) + FCN",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class STFCN2x(STNClassifier):
    """2xST-FCN (A.1): two independent transformers (``st_0``, ``st_1``, each
    with its own localisation net, each seeing every channel), their outputs
    concatenated, then the FCN; ``shared_localization=True`` gives them one
    shared net with two heads. ``STNClassifier`` args."""

    FIXED = (
        "classifier",
        "num_transformers",
        "pooled_localization",
        "downsample",
    )

    def __init__(self, input_shape, num_classes, transform="affine", **kwargs):
        kwargs.setdefault("name", "st_fcn_2x")
        super().__init__(
            input_shape,
            num_classes,
            classifier="fcn",
            transform=transform,
            num_transformers=2,
            **kwargs,
        )


@register(
    "st_cnn_3d",
    transforms=("affine3d",),
    ndim=3,
    description="3D affine transformer, depth summed to 2D, CNN",
)
@keras.saving.register_keras_serializable(package="stn_tf")
class STCNN3D(STNClassifier):
    """The 3D ST-CNN (A.3): a 3D affine transformer down-sampling by
    ``downsample``, the sum over depth, then the CNN; ``STNClassifier`` args."""

    FIXED = (
        "classifier",
        "transform",
        "num_transformers",
        "shared_localization",
        "pool",
    )

    def __init__(self, input_shape, num_classes, downsample=2.0, **kwargs):
        kwargs.setdefault("name", "st_cnn_3d")
        super().__init__(
            input_shape,
            num_classes,
            classifier="cnn",
            transform="affine3d",
            downsample=downsample,
            **kwargs,
        )


@register(
    "cnn_3d", ndim=3, description="the input summed over its depth, 2x pooling, CNN"
)
@keras.saving.register_keras_serializable(package="stn_tf")
class CNN3D(STNClassifier):
    """The 3D baseline (A.3): the input summed over its depth, 2x average
    pooling, then the CNN; ``STNClassifier`` args.

    With ``match_st_classifier`` (the default) and no ``width``, its classifier
    is ``STCNN3D``'s at the same ``param_budget`` (the same width: the models
    differ by the transformer alone, so it has fewer parameters than the
    budget); otherwise its width meets the budget itself."""

    FIXED = _NO_TRANSFORMER

    def __init__(
        self, input_shape, num_classes, match_st_classifier: bool = True, **kwargs
    ):
        kwargs.setdefault("name", "cnn_3d")
        if kwargs.get("width") is None and match_st_classifier:
            # The 3D ST-CNN's classifier, so that the two differ by the transformer.
            kwargs["width"] = STCNN3D(
                input_shape,
                num_classes,
                param_budget=kwargs.get("param_budget", PARAM_BUDGET),
                jit_compile=False,
                outputs="logits",
            ).width
        super().__init__(input_shape, num_classes, classifier="cnn", pool=2, **kwargs)
        self._init_args["match_st_classifier"] = match_st_classifier
