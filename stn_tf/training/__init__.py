"""The trainer behind ``python -m stn_tf.train``, in small parts.

- :mod:`~stn_tf.training.loop`: ``train_and_evaluate(config, workdir)``.
- :mod:`~stn_tf.training.step`: the loss and one distributed training step.
- :mod:`~stn_tf.training.optim`: schedule, optimizer, the localisation nets'
  rate, weight decay.
- :mod:`~stn_tf.training.evaluate`: mistakes and test errors.
- :mod:`~stn_tf.training.workdir`: config, checkpoints, metrics, SIGTERM.
- :mod:`~stn_tf.training.summaries`: progress, TensorBoard, pictures, θ stats.
- :mod:`~stn_tf.training.distribute`: strategy, chief, per-replica batches.
"""

from stn_tf.training.loop import train_and_evaluate
from stn_tf.training.workdir import DataError, Preempted

__all__ = ["DataError", "Preempted", "train_and_evaluate"]
