"""One training step: the loss of a batch (in accumulated parts), its gradients,
the update, and what the loop logs, run on every replica."""

from __future__ import annotations

import keras
import tensorflow as tf

from stn_tf.runs import TrainConfig
from stn_tf.training import optim
from stn_tf.training.evaluate import mistakes

__all__ = ["batch_loss", "make_train_step"]


def batch_loss(config: TrainConfig, logits, labels):
    """Cross-entropy averaged over the *global* batch (``tf.nn.compute_average_loss``),
    every example weighing alike: a sequence's digits are averaged first."""
    per_label = keras.losses.sparse_categorical_crossentropy(
        labels,
        tf.cast(logits, tf.float32),
        from_logits=True,  # bfloat16 under mixed
    )  # [B] or [B, T]
    per_example = tf.reshape(per_label, [tf.shape(per_label)[0], -1])
    per_example = tf.reduce_mean(per_example, axis=1)
    return tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)


def make_train_step(config: TrainConfig, model, optimizer, strategy, distort=None):
    """``train_step(batch) -> (loss, error, sequence_error, finite, theta)``, a
    ``tf.function`` over the replicas' parts of a global batch.

    ``distort`` (``Pipeline.distort``) runs first on the device when
    ``augment_on=device``. θ stays on its replicas (``[B/replicas, P]`` each,
    ``[., 0]`` for models without a transformer): the caller gathers it
    (``strategy.gather``) on the steps that read it. ``finite`` is False when any
    replica's loss or θ is NaN or inf.
    """
    variables = model.trainable_variables
    loc = optim.localization_mask(model)
    decayed = optim.decayed_variables(config, model)

    def gradients(images, labels, first_part):
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = batch_loss(config, out["logits"], labels)
            if decayed and first_part:  # once per step, split over the replicas
                loss += tf.nn.scale_regularization_loss(
                    optim.l2_penalty(decayed, config.weight_decay)
                )
        return tape.gradient(loss, variables), loss, out

    def replica_step(batch):
        if distort is not None:
            batch = distort(batch)
        # Gradient accumulation: the parts' gradients sum to the batch's (the loss
        # of each part is divided by the global batch size).
        parts = [tf.split(batch[k], config.accumulate) for k in ("image", "label")]
        grads, loss, outs = None, 0.0, []
        for i, (images, labels) in enumerate(zip(*parts)):
            part_grads, part_loss, out = gradients(images, labels, i == 0)
            grads = (
                part_grads
                if grads is None
                else [a + b for a, b in zip(grads, part_grads)]
            )
            loss += part_loss
            outs.append(out)
        grads = optim.scale_localization(config, grads, loc, optimizer.iterations)
        optimizer.apply(grads, variables)
        logits = tf.concat([o["logits"] for o in outs], 0)
        wrong, wrong_examples = mistakes(logits, batch["label"])
        theta = (
            tf.concat([o["theta"] for o in outs], 0)
            if "theta" in outs[0]
            else tf.zeros([tf.shape(logits)[0], 0])
        )
        finite = tf.reduce_all(tf.math.is_finite(loss)) & tf.reduce_all(
            tf.math.is_finite(theta)
        )
        counts = tf.cast(
            [tf.size(batch["label"]), tf.shape(batch["label"])[0]], tf.float32
        )
        broken = 1.0 - tf.cast(finite, tf.float32)
        return loss, wrong, wrong_examples, counts, broken, theta

    @tf.function
    def train_step(batch):
        loss, wrong, wrong_examples, counts, broken, theta = strategy.run(
            replica_step, args=(batch,)
        )
        total = strategy.reduce("SUM", loss, axis=None)
        errors = strategy.reduce("SUM", wrong, axis=None)
        sequences = strategy.reduce("SUM", wrong_examples, axis=None)
        labels, examples = tf.unstack(strategy.reduce("SUM", counts, axis=None))
        broken = strategy.reduce("SUM", broken, axis=None)  # replicas with NaN/inf
        return total, errors / labels, sequences / examples, broken == 0, theta

    return train_step
