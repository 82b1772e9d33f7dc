"""Keras 3 spatial transformer layers: single, parallel and recurrent (RNN-SPN).

Convention (shared with ``sampler`` and ``transforms``): channels-last inputs,
normalised corner-aligned coordinates with last axis ``(x, y[, z])``, θ maps the
output grid to source points, and every regression head starts at the identity
transform (zero kernel, identity bias), so a fresh transformer returns its input
resampled to the output size.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from stn_tf import sampler, transforms

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "stn_tf layers need the TensorFlow Keras backend. "
        f"Received: KERAS_BACKEND={keras.backend.backend()!r}"
    )

__all__ = [
    "SpatialTransformer",
    "ParallelSpatialTransformer",
    "RecurrentSpatialTransformer",
    "transformers_in",
]


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


class _TransformerBase(keras.layers.Layer):
    """What every transformer shares: a localisation net, a transform, a sampler."""

    def __init__(
        self,
        localization: keras.layers.Layer,
        transform: str = "affine",
        output_size: Sequence[int] | None = None,
        downsample: float | None = None,
        interpolation: str = "bilinear",
        return_theta: bool = False,
        tps_grid_size: int = 4,
        learn_control_points: bool = False,
        fixed_scale: float | None = None,
        jit_compile: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(localization, dict):
            localization = keras.saving.deserialize_keras_object(localization)
        if not isinstance(localization, keras.layers.Layer):
            raise ValueError(
                "localization must be a Keras layer or model. "
                f"Received: localization={localization!r}"
            )
        self.transform = transform
        self._transform = transforms.get_transform(
            transform, tps_grid_size=tps_grid_size
        )
        ndim = self._transform.ndim
        if output_size is not None:
            output_size = transforms.check_output_size(output_size, ndim)
        if downsample is not None and (
            isinstance(downsample, bool)
            or not isinstance(downsample, (int, float, np.integer, np.floating))
            or not downsample > 0
        ):
            raise ValueError(
                f"downsample must be > 0. Received: downsample={downsample!r}"
            )
        if output_size is not None and downsample is not None:
            raise ValueError(
                "Pass output_size or downsample, not both. Received: "
                f"output_size={output_size}, downsample={downsample}"
            )
        if interpolation not in sampler.INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sampler.INTERPOLATIONS}. "
                f"Received: interpolation={interpolation!r}"
            )
        if learn_control_points and transform != "tps":
            raise ValueError(
                "learn_control_points needs transform='tps'. "
                f"Received: transform={transform!r}"
            )
        if fixed_scale is not None:
            if transform != "attention":
                raise ValueError(
                    "fixed_scale needs transform='attention'. "
                    f"Received: transform={transform!r}"
                )
            if isinstance(fixed_scale, bool) or not float(fixed_scale) > 0:
                raise ValueError(
                    f"fixed_scale must be > 0. Received: fixed_scale={fixed_scale!r}"
                )
            fixed_scale = float(fixed_scale)
        self.fixed_scale = fixed_scale
        self.localization = localization
        self.output_size = output_size
        self.downsample = downsample
        self.interpolation = interpolation
        self.return_theta = return_theta
        self.tps_grid_size = tps_grid_size
        self.learn_control_points = learn_control_points
        self.jit_compile = jit_compile
        self.control_points = None

    @property
    def num_params(self) -> int:
        """Length of θ for one transformer."""
        return self._transform.num_params

    @property
    def _identity(self) -> np.ndarray:
        """The starting θ of one transformer: the identity, at the fixed scale."""
        identity = np.asarray(self._transform.identity, np.float64)
        if self.fixed_scale is not None:
            identity[0] = self.fixed_scale
        return identity

    @property
    def _head_params(self) -> int:
        """Entries of θ the head regresses (a fixed scale is not regressed)."""
        return self.num_params - (self.fixed_scale is not None)

    def _regressed(self, params: np.ndarray) -> np.ndarray:
        """``[..., P]`` -> the head's ``[..., P']`` part of it."""
        return params[..., 1:] if self.fixed_scale is not None else params

    def _theta(self, regressed):
        """The head's ``[..., P']`` -> θ ``[..., P]`` (the fixed scale put back)."""
        if self.fixed_scale is None:
            return regressed
        scale = tf.fill(
            tf.concat([tf.shape(regressed)[:-1], [1]], 0),
            tf.constant(self.fixed_scale, regressed.dtype),
        )
        return tf.concat([scale, regressed], axis=-1)

    def _make_head(self, num_outputs, bias):
        # θ is regressed in float32 (or float64) even under a mixed-precision
        # policy: a float16 θ moves the sampling grid by whole pixels.
        dtype = self.dtype_policy.variable_dtype
        return keras.layers.Dense(
            num_outputs,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(np.asarray(bias, np.float64)),
            dtype=dtype,
            name="theta",
        )

    def _check_input_shape(self, input_shape):
        rank = self._transform.ndim + 2
        layout = "[B, H, W, C]" if rank == 4 else "[B, D, H, W, C]"
        name = f"{type(self).__name__} {self.name!r} (transform={self.transform!r})"
        if len(input_shape) != rank or any(s is None for s in input_shape[1:]):
            raise ValueError(
                f"{name} takes inputs {layout} with known spatial size and channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        # A channels-first batch [B, C, H, W] read as channels-last has a tiny first
        # spatial axis and as many "channels" as pixels in a row.
        first, channels = input_shape[1], input_shape[-1]
        if first <= 4 < channels and channels >= min(input_shape[2:-1]):
            fixed = (input_shape[0], *input_shape[2:], first)
            raise ValueError(
                f"{name} takes channels-last inputs {layout}; input_shape="
                f"{tuple(input_shape)} looks channels-first ({first} rows of "
                f"{channels} channels): transpose it to {fixed}"
            )

    def resolved_output_size(self, input_shape) -> tuple[int, ...]:
        """The sampled output's spatial size for an input shape (at least 2 per
        axis: a 1-pixel output has no extent to sample a transform over)."""
        self._check_input_shape(input_shape)
        if self.output_size is not None:
            size = self.output_size
        elif self.downsample is None:
            size = tuple(input_shape[1:-1])
        else:
            size = tuple(int(s // self.downsample) for s in input_shape[1:-1])
        if min(size) < 2:
            how = (
                f"output_size={self.output_size}"
                if self.output_size is not None
                else f"downsample={self.downsample} of spatial size "
                f"{tuple(input_shape[1:-1])}"
            )
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: {how} gives an output of "
                f"{size}; every axis needs at least 2 pixels"
            )
        return size

    def _build_common(self, input_shape):
        self.resolved_output_size(input_shape)  # checks the input and the output
        # Later calls are checked by Keras against the built rank and channels, so a
        # mistake is named by the transformer, not by its localisation net.
        self.input_spec = keras.InputSpec(
            ndim=len(input_shape), axes={-1: int(input_shape[-1])}
        )
        # A symbolic call builds any localisation net, subclassed models included
        # (their build() alone creates no weights, and they may not implement
        # compute_output_shape).
        features = self.localization(
            keras.KerasTensor(input_shape, dtype=self.compute_dtype)
        ).shape
        if self.learn_control_points:
            self.control_points = self.add_weight(
                name="control_points",
                shape=(self.num_params // 2, 2),
                initializer=keras.initializers.Constant(
                    transforms.tps_control_points(self.tps_grid_size)
                ),
                dtype=self.dtype_policy.variable_dtype,
                autocast=False,  # a float16 copy would move the grid by pixels
            )
        return (features[0], int(np.prod(features[1:])))

    def _features(self, inputs, training):
        features = self.localization(inputs, training=training)
        return tf.reshape(features, [tf.shape(features)[0], -1])

    def _warp(self, inputs, theta):
        """Samples ``inputs`` with θ ``[B, P]``, or ``[B, G, P]`` for G heads
        (``[B, G, H', W', C]``, one sampler call under XLA; ``transforms.warp``)."""
        return transforms.warp(
            inputs,
            self.transform,
            theta,
            self.resolved_output_size(inputs.shape),
            interpolation=self.interpolation,
            control_points=None
            if self.control_points is None
            else tf.convert_to_tensor(self.control_points),
            jit_compile=self.jit_compile,
        )

    def compute_output_spec(self, inputs, training=None):
        # Outputs have the compute dtype, θ the variable dtype (float32 under a
        # mixed-precision policy): say so to functional models.
        shapes = self.compute_output_shape(inputs.shape)
        out_shapes, theta_shape = shapes if self.return_theta else (shapes, None)

        def spec(shape):
            return keras.KerasTensor(shape, dtype=self.compute_dtype)

        if isinstance(out_shapes, list):
            outputs = [spec(shape) for shape in out_shapes]
        else:
            outputs = spec(out_shapes)
        if theta_shape is None:
            return outputs
        theta = keras.KerasTensor(theta_shape, dtype=self.dtype_policy.variable_dtype)
        return outputs, theta

    def get_config(self):
        return {
            **super().get_config(),
            "localization": keras.saving.serialize_keras_object(self.localization),
            "transform": self.transform,
            "output_size": self.output_size,
            "downsample": self.downsample,
            "interpolation": self.interpolation,
            "return_theta": self.return_theta,
            "tps_grid_size": self.tps_grid_size,
            "learn_control_points": self.learn_control_points,
            "fixed_scale": self.fixed_scale,
            "jit_compile": self.jit_compile,
        }


@keras.saving.register_keras_serializable(package="stn_tf")
class SpatialTransformer(_TransformerBase):
    """A spatial transformer (STN §3): localisation net -> θ -> grid -> sampler.

    Convention: channels-last; θ maps output to source; coordinates normalised
    and corner-aligned; the head starts at the identity transform.

    Args:
        localization: any Keras layer or model from the input to features; its
            output is flattened and a regression head (``Dense``, zero kernel,
            identity bias) turns it into θ.
        transform: ``affine``, ``attention``, ``projective``, ``tps`` or ``affine3d``
            (``affine3d`` takes volumes ``[B, D, H, W, C]``).
        output_size: ``(H', W')`` (``(D', H', W')``) of the output.
        downsample: the down-sampling factor d of RNN-SPN §3.1: output size is the
            input size divided by d (floored). Default: the input size.
        interpolation: ``bilinear`` (trilinear for volumes) or ``nearest``.
        return_theta: also return θ ``[B, P]``, the pose of the attended region.
        tps_grid_size: TPS control points per side.
        learn_control_points: learn the TPS control points (the paper's B).
        fixed_scale: ``attention`` only: the window's scale s is this constant
            and only the translation is regressed (STN A.6: 0.5); θ still comes
            out as ``(s, tx, ty)``.
        jit_compile: run the sampler through XLA, for the affine-family
            transforms with their grid (switch off to debug).
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call returns:
        ``[B, H', W', C]`` (and θ ``[B, P]`` if ``return_theta``).

    Example:
        ```python
        loc = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(32, "relu")])
        x = SpatialTransformer(loc, "affine", output_size=(28, 28))(images)
        ```
    """

    def build(self, input_shape):
        features = self._build_common(input_shape)
        self.head = self._make_head(self._head_params, self._regressed(self._identity))
        self.head.build(features)

    def call(self, inputs, training=None):
        theta = self._theta(self.head(self._features(inputs, training)))
        outputs = self._warp(inputs, theta)
        return (outputs, theta) if self.return_theta else outputs

    def compute_output_shape(self, input_shape):
        out = (input_shape[0], *self.resolved_output_size(input_shape), input_shape[-1])
        return (out, (input_shape[0], self.num_params)) if self.return_theta else out


@keras.saving.register_keras_serializable(package="stn_tf")
class ParallelSpatialTransformer(_TransformerBase):
    """N spatial transformers sharing one localisation net (STN §3.4, A.1, A.6).

    Args:
        localization: shared localisation net (see ``SpatialTransformer``).
        num_transformers: N.
        transform: the transform of every head (see ``SpatialTransformer``).
        merge: ``concat`` stacks the N outputs on the channel axis
            (``[B, H', W', N*C]``); ``list`` returns a list of N outputs.
        initial_params: ``[N, P]`` starting θ of each head (e.g. attention windows
            tiling the image, STN A.6); default: every head at the identity (at
            ``fixed_scale`` if one is given, which the scales here must equal).
        **kwargs: as ``SpatialTransformer``.

    Call returns:
        The merged outputs (and θ ``[B, N, P]`` if ``return_theta``).
    """

    def __init__(
        self,
        localization,
        num_transformers: int = 2,
        transform: str = "affine",
        merge: str = "concat",
        initial_params=None,
        **kwargs,
    ):
        super().__init__(localization, transform, **kwargs)
        num_transformers = _check_positive_int("num_transformers", num_transformers)
        if merge not in ("concat", "list"):
            raise ValueError(
                f"merge must be 'concat' or 'list'. Received: merge={merge!r}"
            )
        if initial_params is None:
            initial = np.tile(self._identity, (num_transformers, 1))
        else:
            initial = np.asarray(initial_params, np.float64)
            if initial.shape != (num_transformers, self.num_params):
                raise ValueError(
                    f"initial_params must have shape [{num_transformers}, "
                    f"{self.num_params}]. Received: shape {initial.shape}"
                )
            if self.fixed_scale is not None and not np.all(
                initial[:, 0] == self.fixed_scale
            ):
                raise ValueError(
                    f"initial_params must start at the fixed scale {self.fixed_scale}. "
                    f"Received scales {initial[:, 0].tolist()}"
                )
        self.num_transformers = num_transformers
        self.merge = merge
        self.initial_params = initial.tolist()

    def build(self, input_shape):
        features = self._build_common(input_shape)
        self.head = self._make_head(
            self.num_transformers * self._head_params,
            np.ravel(self._regressed(np.asarray(self.initial_params))),
        )
        self.head.build(features)

    def call(self, inputs, training=None):
        theta = self.head(self._features(inputs, training))
        theta = tf.reshape(theta, [-1, self.num_transformers, self._head_params])
        theta = self._theta(theta)
        outputs = tf.unstack(self._warp(inputs, theta), axis=1)
        if self.merge == "concat":
            outputs = tf.concat(outputs, axis=-1)
        return (outputs, theta) if self.return_theta else outputs

    def compute_output_shape(self, input_shape):
        one = (input_shape[0], *self.resolved_output_size(input_shape), input_shape[-1])
        if self.merge == "concat":
            out = (*one[:-1], one[-1] * self.num_transformers)
        else:
            out = [one] * self.num_transformers
        theta = (input_shape[0], self.num_transformers, self.num_params)
        return (out, theta) if self.return_theta else out

    def get_config(self):
        return {
            **super().get_config(),
            "num_transformers": self.num_transformers,
            "merge": self.merge,
            "initial_params": self.initial_params,
        }


@keras.saving.register_keras_serializable(package="stn_tf")
class RecurrentSpatialTransformer(_TransformerBase):
    """Recurrent spatial transformer (RNN-SPN, Sønderby et al. 2015, §3.2).

    ``c = f_conv(I)``; ``h_t = GRU(c, h_{t-1})`` for T steps, with ``c`` as the
    input at every step; ``θ_t = g(h_t)`` by a linear head started at the
    identity; step t samples the input with ``θ_t``.

    Args:
        localization: ``f_conv``, the feature extractor (see ``SpatialTransformer``).
        steps: T, the number of glimpses.
        units: GRU units (256 in the paper).
        initial_params: ``[T, P]`` starting θ of each step, a fixed per-step
            offset added to the head's output; default: every step at the
            identity, as the paper (θ_t a linear function of h_t). At the identity
            all T crops are equal and a shared classifier cannot tell the steps
            apart until the GRU learns to move them: distinct starts (e.g. windows
            left to right) break that symmetry from the first step. Not the
            paper's: an aid.
        learn_offsets: make the per-step offsets a trained weight
            (``step_offsets``, started at ``initial_params``). Not the paper's:
            an aid. Layers saved before this argument existed had it on.
        **kwargs: as ``SpatialTransformer``.

    Call returns:
        ``[B, T, H', W', C]`` crops (and θ ``[B, T, P]`` if ``return_theta``).
    """

    def __init__(
        self,
        localization,
        steps: int = 3,
        units: int = 256,
        initial_params=None,
        learn_offsets: bool = False,
        **kwargs,
    ):
        super().__init__(localization, **kwargs)
        if self.fixed_scale is not None:
            raise ValueError(
                "RecurrentSpatialTransformer learns every parameter: fixed_scale is "
                f"for the single and parallel transformers. Received: {self.fixed_scale}"
            )
        self.steps = _check_positive_int("steps", steps)
        self.units = _check_positive_int("units", units)
        identity = self._transform.identity_params(self.steps, np.float64)
        initial = (
            identity
            if initial_params is None
            else np.asarray(initial_params, np.float64)
        )
        if initial.shape != identity.shape:
            raise ValueError(
                f"initial_params must have shape [{self.steps}, {self.num_params}]. "
                f"Received: shape {initial.shape}"
            )
        self.initial_params = initial.tolist()
        self.learn_offsets = bool(learn_offsets)
        self._offsets = initial - identity

    def build(self, input_shape):
        batch, features = self._build_common(input_shape)
        # T is small and fixed: unrolling avoids TensorList ops, which TFLite
        # only runs through Flex.
        self.rnn = keras.layers.GRU(
            self.units,
            return_sequences=True,
            unroll=True,
            name="gru",
            dtype=self.dtype_policy,
        )
        self.rnn.build((batch, self.steps, features))
        self.head = self._make_head(self.num_params, self._transform.identity)
        self.head.build((batch, self.steps, self.units))
        self.step_offsets = None
        if self.learn_offsets:
            self.step_offsets = self.add_weight(
                name="step_offsets",
                shape=(self.steps, self.num_params),
                initializer=keras.initializers.Constant(self._offsets),
                dtype=self.dtype_policy.variable_dtype,
                autocast=False,
            )

    def call(self, inputs, training=None):
        features = self._features(inputs, training)
        repeated = tf.repeat(
            tf.expand_dims(features, 1), self.steps, axis=1
        )  # [B, T, F]
        theta = self.head(self.rnn(repeated, training=training))  # [B, T, P]
        if self.step_offsets is not None:
            theta = theta + tf.cast(self.step_offsets, theta.dtype)
        elif np.any(self._offsets):
            theta = theta + tf.constant(self._offsets, theta.dtype)
        crops = self._warp(inputs, theta)
        return (crops, theta) if self.return_theta else crops

    def compute_output_shape(self, input_shape):
        size = self.resolved_output_size(input_shape)
        out = (input_shape[0], self.steps, *size, input_shape[-1])
        return (
            (out, (input_shape[0], self.steps, self.num_params))
            if self.return_theta
            else out
        )

    def get_config(self):
        return {
            **super().get_config(),
            "steps": self.steps,
            "units": self.units,
            "initial_params": self.initial_params,
            "learn_offsets": self.learn_offsets,
        }

    @classmethod
    def from_config(cls, config):
        # Configs written before learn_offsets existed had trained offsets.
        return super().from_config({"learn_offsets": True, **config})


def transformers_in(model: keras.Layer, recursive: bool = False) -> list:
    """The spatial transformer layers of ``model``: its own layers, or with
    ``recursive`` every layer nested anywhere inside it (and ``model`` itself)."""
    layers = (
        model._flatten_layers(include_self=True, recursive=True)  # no public API
        if recursive
        else model.layers
    )
    return [layer for layer in layers if isinstance(layer, _TransformerBase)]
