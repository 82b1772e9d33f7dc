"""Counting mistakes: per label (per digit for sequences) and per example."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["evaluate", "mistakes"]


def mistakes(logits, labels):
    """Wrong labels and wrong examples (any label wrong) in a batch, as float32:
    labels ``[B]`` or ``[B, T]`` (sequences: each digit is one label). A label
    whose logits are not all finite (a diverged model) is wrong, whatever their
    argmax says."""
    finite = tf.reduce_all(tf.math.is_finite(logits), axis=-1)
    right = (tf.argmax(logits, -1, output_type=tf.int32) == labels) & finite
    wrong = 1.0 - tf.cast(right, tf.float32)
    wrong = tf.reshape(wrong, [tf.shape(wrong)[0], -1])  # [B, T]
    return tf.reduce_sum(wrong), tf.reduce_sum(tf.reduce_max(wrong, axis=1))


def evaluate(model, pipeline) -> tuple[float, float, int]:
    """Error per label (per digit for sequences), per example, and examples, of a
    model returning ``{"logits", ...}`` on every batch of ``pipeline``."""
    wrong = wrong_examples = labels = examples = 0
    for batch in pipeline.dataset():
        logits = model(batch["image"], training=False)["logits"]
        w, we = mistakes(logits, batch["label"])
        wrong, wrong_examples = wrong + float(w), wrong_examples + float(we)
        labels += int(np.prod(batch["label"].shape))
        examples += int(batch["label"].shape[0])
    return wrong / labels, wrong_examples / examples, examples
