"""The optimizer of a run: the papers' step schedule, the localisation nets'
learning rate, and weight decay as an L2 penalty."""

from __future__ import annotations

import keras
import tensorflow as tf

from stn_tf.layers import transformers_in
from stn_tf.runs import TrainConfig

__all__ = [
    "l2_penalty",
    "learning_rate_schedule",
    "localization_mask",
    "make_optimizer",
    "scale_localization",
]

# Variables that weight decay leaves alone (substrings of their paths): kernels
# only, as the papers' Caffe-era recipes.
_NOT_DECAYED = ("bias", "beta", "gamma", "step_offsets", "control_points")


def learning_rate_schedule(config: TrainConfig):
    """``learning_rate`` divided by 10 at each of ``lr_boundaries``."""
    # Runs of 1-2 steps have no boundary; Keras needs one: put it past the end.
    boundaries = list(config.lr_boundaries) or [config.steps + 1]
    values = [
        config.learning_rate / 10**i for i in range(len(config.lr_boundaries) + 1)
    ]
    values += values[-1:] * (len(boundaries) + 1 - len(values))
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config: TrainConfig, model: keras.Model):
    """SGD or RMSprop on the schedule, built for ``model``'s variables (inside the
    strategy's scope, so its slots are mirrored). Returns ``(optimizer, schedule)``."""
    schedule = learning_rate_schedule(config)
    cls = (
        keras.optimizers.RMSprop
        if config.optimizer == "rmsprop"
        else keras.optimizers.SGD
    )
    optimizer = cls(schedule, momentum=config.momentum)
    optimizer.build(model.trainable_variables)
    return optimizer, schedule


def localization_mask(model: keras.Model) -> list[bool]:
    """Per trainable variable: whether it belongs to a spatial transformer (its
    localisation net)."""
    loc_ids = {id(v) for st in transformers_in(model) for v in st.trainable_variables}
    return [id(v) in loc_ids for v in model.trainable_variables]


def scale_localization(config: TrainConfig, grads: list, loc: list[bool], step) -> list:
    """``grads`` with the localisation nets' (``loc``: ``localization_mask``) times
    ``loc_lr_multiplier``, and times 0 while ``step`` < ``loc_hold_steps``.

    Under SGD (with or without momentum), which is linear in the gradient, scaling a
    variable's gradient scales its learning rate. A zero gradient moves no variable
    under SGD or RMSprop (their slots start at zero and stay there), so held nets
    keep their start exactly."""
    scale = config.loc_lr_multiplier
    if config.loc_hold_steps:
        scale = scale * tf.cast(step >= config.loc_hold_steps, tf.float32)
    elif scale == 1.0:
        return grads
    return [
        g * tf.cast(scale, g.dtype) if is_loc else g for g, is_loc in zip(grads, loc)
    ]


def decayed_variables(config: TrainConfig, model: keras.Model) -> list:
    """The variables weight decay acts on (none when it is 0)."""
    if not config.weight_decay:
        return []
    return [
        v
        for v in model.trainable_variables
        if not any(name in v.path for name in _NOT_DECAYED)
    ]


def l2_penalty(variables, weight_decay: float):
    """``wd / 2 * sum(w^2)``: its gradient is ``wd * w`` (Caffe's weight decay),
    which momentum and each variable's learning rate then act on."""
    return (
        0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
    )
