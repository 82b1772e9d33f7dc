"""One loop for one device, several, and several machines: the strategy, who
writes the workdir, and how each replica gets its part of a global batch."""

from __future__ import annotations

import json
import os

import tensorflow as tf

__all__ = ["distributed_batches", "is_chief", "make_strategy"]


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several tasks; otherwise
    MirroredStrategy over the local GPUs, or over the logical CPUs if there are none
    (one on a plain CPU machine; tests configure two)."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices(
        "CPU"
    )
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this task writes the workdir (single-machine runs always do)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def distributed_batches(strategy, pipeline, start_step: int, augment_on: str):
    """An iterator over the training stream from ``start_step``: each input
    pipeline feeds its workers' replicas their parts of every global batch."""

    def input_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        replicas = strategy.num_replicas_in_sync
        local = replicas // context.num_input_pipelines
        begin = context.input_pipeline_id * local
        return pipeline.dataset(
            start_step, augment_on, parts=(begin, begin + local, replicas)
        )

    return iter(strategy.distribute_datasets_from_function(input_pipeline))
