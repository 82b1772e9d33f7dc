"""Real-image datasets (CUB-200-2011, SVHN) as batched, resumable ``tf.data`` streams.

An :class:`ImagePipeline` has the interface of ``datasets.Pipeline`` (``dataset``,
``num_examples``, ``steps_per_epoch``, ``spec``) over a finite set of stored
examples instead of distorted MNIST digits:

- A training split is an endless stream of epochs. Epoch ``e`` reads the split
  in blocks of ``SHUFFLE_BUFFER`` examples (the whole split for CUB) and permutes
  each block with the stateless seed ``(seed, e, block)``, so step ``s`` of a run
  always holds the same examples and ``dataset(start_step=s)`` resumes there (it
  skips the examples before ``s`` in their epoch without decoding them). (A
  ``Dataset.shuffle`` seeded per epoch would be simpler, but its seed cannot be a
  tensor once a global seed is set.)
- Each example's augmentation draws from the stateless key ``(seed, epoch,
  index)``, ``index`` being its position in the stored split.
- A test split is one pass in stored order, preprocessed without randomness.

Augmentation runs on the host, in ``tf.data``: these images have their own sizes
until they are cropped, so they cannot be batched before.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from stn_tf.pipelines import distortions

__all__ = ["SHUFFLE_BUFFER", "ImagePipeline", "split_batches"]

SHUFFLE_BUFFER = 10_000  # encoded examples: ~1 GB for CUB's JPEGs at most


def split_batches(ds: tf.data.Dataset, parts, batch_size: int) -> tf.data.Dataset:
    """Cuts every batch into ``count`` equal parts and yields parts ``begin .. end-1``.

    ``parts = (begin, end, count)``: what one input pipeline of a ``tf.distribute``
    strategy feeds its replicas (see ``datasets.Pipeline.dataset``).
    """
    begin, end, count = parts
    if not (0 <= begin < end <= count and batch_size % count == 0):
        raise ValueError(
            f"parts (begin, end, count) must satisfy 0 <= begin < end <= count, "
            f"with count dividing the batch size {batch_size}. "
            f"Received: parts={(begin, end, count)}"
        )
    if count == 1:
        return ds

    def cut(batch):
        pieces = {
            k: tf.reshape(v, [count, -1, *v.shape[1:]])[begin:end]
            for k, v in batch.items()
        }
        return tf.data.Dataset.from_tensor_slices(pieces)

    return ds.flat_map(cut)


class ImagePipeline:
    """One split of a stored image dataset, batched, augmented on the fly.

    Args:
        spec: the dataset's ``datasets.DatasetSpec`` (its ``shape`` is what
            ``preprocess`` returns).
        examples: the stored split, ``{"image", "label"}`` per example, in a fixed
            order (images may still be encoded).
        num_examples: examples in ``examples``.
        preprocess: ``(image, key int32 [3], training) -> float32 image`` of
            ``spec.shape``; ``key`` is the example's (seed, epoch, index).
        batch_size: examples per batch (a test split's last batch may be smaller).
        training: an endless shuffled stream (True) or one pass in order (False).
        seed: the run's seed (training only).
        origin: where the examples come from (for logs and results).
    """

    def __init__(
        self,
        spec,
        examples: tf.data.Dataset,
        num_examples: int,
        preprocess: Callable,
        *,
        batch_size: int,
        training: bool,
        seed: int = 0,
        origin: str = "",
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer. Received: {batch_size!r}"
            )
        if num_examples < 1:
            raise ValueError(f"{spec.name}: the split has no examples")
        if not 0 <= int(seed) < 2**31:
            raise ValueError(f"seed must be in [0, 2**31). Received: seed={seed}")
        self.spec = spec
        self.examples = examples
        self._num_examples = int(num_examples)
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.training = training
        self.seed = int(seed) if training else distortions.TEST_SEED
        self.origin = origin or spec.name

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.batch_size)

    def _epochs(self, first_epoch: int) -> tf.data.Dataset:
        """``(index, epoch, example)`` from ``first_epoch`` on, each epoch shuffled."""
        blocks = self.examples.enumerate().batch(SHUFFLE_BUFFER).enumerate()
        seed = self.seed

        def permute(e, b, block):
            key = tf.random.experimental.stateless_fold_in(
                tf.cast(tf.stack([seed, e]), tf.int32), tf.cast(b, tf.int32)
            )
            order = tf.argsort(tf.random.stateless_uniform(tf.shape(block[0]), key))
            return tf.nest.map_structure(lambda t: tf.gather(t, order), block)

        def epoch(e):
            shuffled = blocks.map(lambda b, block: permute(e, b, block)).unbatch()
            return shuffled.map(lambda i, ex: (i, e, ex))

        return tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)

    def dataset(
        self,
        start_step: int = 0,
        augment_on: str = "host",
        parts: tuple[int, int, int] | None = None,
    ) -> tf.data.Dataset:
        """Batches ``{"image" float32 [B, *shape], "label"}`` from ``start_step`` on."""
        if augment_on != "host":
            raise ValueError(
                f"{self.spec.name} is augmented on the host (its images have their own "
                f"sizes until cropped). Received: augment_on={augment_on!r}"
            )
        n, b = self.num_examples, self.batch_size

        def prepare(i, e, ex):
            key = distortions.example_keys(self.seed, e[None], i[None])[0]
            image = self.preprocess(ex["image"], key, self.training)
            return {"image": image, "label": tf.cast(ex["label"], tf.int32)}

        if self.training:
            first = start_step * b
            ds = self._epochs(first // n).skip(first % n)
            ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
            ds = ds.batch(b, drop_remainder=True)
        else:
            if start_step:
                raise ValueError("a test split is one fixed pass: start_step must be 0")
            ds = self.examples.enumerate().map(
                lambda i, ex: prepare(i, tf.constant(0, tf.int64), ex),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            ds = ds.batch(b)
        if parts is not None:
            ds = split_batches(ds, parts, b)
        return ds.prefetch(tf.data.AUTOTUNE)
