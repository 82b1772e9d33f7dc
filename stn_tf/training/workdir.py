"""What a run writes into its workdir: config, checkpoints, metrics, and how it
stops (SIGTERM, a failed save) without losing what is written."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import signal
import threading
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stn_tf import runs
from stn_tf.pipelines import datasets
from stn_tf.runs import TrainConfig

__all__ = [
    "BestWeights",
    "DataError",
    "EvalCurve",
    "Metrics",
    "Preempted",
    "SigtermCatcher",
    "check_writable",
    "checkpointing",
    "fingerprint",
    "save_checkpoint",
    "write_config",
]


class Preempted(Exception):
    """SIGTERM arrived; the run saved a checkpoint at ``step`` and stopped."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(
            f"SIGTERM at step {step}: saved {checkpoint}; run the same command to resume"
        )
        self.step, self.checkpoint = step, checkpoint


class DataError(ValueError):
    """The run's data cannot be read as the config asks (too few digits for the
    validation set, a split the set does not have, ...); nothing was trained."""


class SigtermCatcher:
    """Turns SIGTERM (a preemption notice) into a flag the loop checks every step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def check_writable(workdir: Path) -> None:
    """Fails early, and clearly, on a workdir that cannot be written."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_probe"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise OSError(
            e.errno, f"cannot write to the workdir {workdir}: {e.strerror or e}"
        ) from e


def write_config(config: TrainConfig, workdir: Path) -> None:
    """``config.json``; a workdir holding another run is refused, and so is one
    holding checkpoints without a ``config.json`` (whose run cannot be told)."""
    path = workdir / "config.json"
    if not path.exists() and tf.train.latest_checkpoint(str(workdir / "checkpoints")):
        raise FileExistsError(
            f"{workdir} holds checkpoints but no config.json, so which run they "
            "belong to cannot be checked; pass another --workdir, or remove "
            f"{workdir / 'checkpoints'} to start this run afresh"
        )
    spec = datasets.get_dataset(config.dataset)
    if path.exists():
        saved = json.loads(path.read_text())
        changed = config.same_run(saved)
        if changed:
            raise FileExistsError(
                f"{workdir} holds a run with other {', '.join(changed)} "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); pass another --workdir"
            )
        data = runs.workdir_data(workdir)
        if data is not None and data not in spec.names():
            raise FileExistsError(
                f"{workdir} holds a run on revision {data[1]} of {data[0]}, whose "
                f"examples {config.dataset} (revision {spec.revision}) no longer "
                "draws: its checkpoints were trained on other data; pass another "
                "--workdir"
            )
    # The data's revision beside the config: a resumed run is checked against it.
    saved = {**dataclasses.asdict(config), "dataset_revision": spec.revision}
    path.write_text(json.dumps(saved, indent=2) + "\n")


class Metrics:
    """``metrics.csv``: one row per logged step; rows past a resumed step are dropped."""

    FIELDS = (
        "step",
        "loss",
        "error",
        "sequence_error",
        "learning_rate",
        "examples_per_s",
        "input_wait",
        "theta_scale",
        "theta_shift",
        "grid_outside",
    )

    def __init__(self, path: Path, start_step: int):
        self.path = path
        rows = []
        if path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow(
                {k: row.get(k, "") for k in self.FIELDS}
            )

    def rows(self) -> list[dict]:
        with self.path.open() as f:
            return list(csv.DictReader(f))


class EvalCurve(Metrics):
    """``eval.csv``: the test error every ``--eval_every`` steps (the validation
    error instead where the run holds a validation set out)."""

    FIELDS = (
        "step",
        "examples_seen",
        "test_error",
        "test_sequence_error",
        "validation_error",
        "validation_sequence_error",
    )


class BestWeights(tf.Module):
    """The weights of the lowest validation error so far (early stopping), kept in
    memory and saved in every checkpoint with the training state they belong to,
    so a resumed run picks the same weights an unbroken one would."""

    def __init__(self, model: keras.Model):
        super().__init__(name="best")
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.error = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.weights = [
            tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False)
            for w in model.weights
        ]

    def offer(self, model: keras.Model, step: int, error: float) -> bool:
        """Keeps ``model``'s weights if ``error`` is the lowest so far (ties: the
        earlier step stays); returns whether it did."""
        if error >= float(self.error.numpy()):
            return False
        for kept, w in zip(self.weights, model.weights, strict=True):
            kept.assign(w.value)
        self.step.assign(step)
        self.error.assign(error)
        return True

    def load_into(self, model: keras.Model) -> None:
        """Puts the kept weights into ``model``."""
        if int(self.step.numpy()) < 0:
            raise ValueError("no validation error was offered: no weights are kept")
        for kept, w in zip(self.weights, model.weights, strict=True):
            w.assign(kept)


def checkpointing(model, optimizer, out: Path, workdir: Path, best=None):
    """The run's checkpoint manager (writing to ``out``) and training clock,
    restored from the chief's latest checkpoint in ``workdir`` if there is one;
    ``best``: the run's :class:`BestWeights`, checkpointed and restored with them.

    Returns ``(manager, clock, latest)``: ``clock`` holds the seconds trained over
    every session of a resumed run; ``latest`` is the restored checkpoint or None.
    """
    clock = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    extra = {"best": best} if best is not None else {}
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, clock=clock, **extra
    )
    manager = tf.train.CheckpointManager(
        checkpoint,
        out / "checkpoints",
        max_to_keep=3,
        step_counter=optimizer.iterations,
    )
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    if latest:
        weights = tf.train.Checkpoint(model=model, optimizer=optimizer)
        # expect_partial: the clock, restored next, is not one of these objects.
        weights.restore(latest).assert_existing_objects_matched().expect_partial()
        # Checkpoints written before the clock was kept have none: it stays at 0.
        tf.train.Checkpoint(clock=clock).restore(latest).expect_partial()
        if best is not None:
            tf.train.Checkpoint(best=best).restore(
                latest
            ).assert_existing_objects_matched().expect_partial()
    return manager, clock, latest


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> str:
    """Saves a checkpoint; a failed write names the checkpoint that is still good.

    TensorFlow writes a checkpoint under a temporary name and updates the
    ``checkpoint`` index only when it is complete, so a crash or a full disk
    mid-save leaves the previous checkpoint as the latest.
    """
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or e.strerror or str(e)
        raise OSError(
            getattr(e, "errno", None),
            f"could not save the checkpoint of step {step} in {manager.directory}: "
            f"{message}. The last complete checkpoint, {manager.latest_checkpoint or 'none'}, "
            "is kept; free space or fix permissions and run the same command to resume",
        ) from e


def fingerprint(model: keras.Model) -> str:
    """SHA-256 of every weight's bytes, in order: equal weights, equal fingerprints."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(
            np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes()
        )
    return digest.hexdigest()
