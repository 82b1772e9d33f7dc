"""What a run shows while it trains: progress lines, ``metrics.csv`` rows,
TensorBoard scalars and pictures, θ statistics."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from stn_tf import pictures, transforms
from stn_tf.runs import TrainConfig

__all__ = ["Progress", "duration", "label_text", "picture", "theta_stats"]


def _grids(config: TrainConfig, theta, size) -> np.ndarray:
    """Sampling grids of θ ``[B, P]`` or ``[B, K, P]``: ``[B(, K), *size, ndim]``."""
    transform = transforms.get_transform(config.transform)
    theta = np.asarray(theta)
    coords = transform.grid(tf.constant(theta.reshape(-1, theta.shape[-1])), size)
    return coords.numpy().reshape(*theta.shape[:-1], *coords.shape[1:])


def theta_stats(config: TrainConfig, theta: np.ndarray, size) -> dict:
    """Mean scale and shift of the transforms, and the fraction of the sampling
    grids that falls outside the input (a transformer zooming out shows here first).

    Scale: half the length of the grid's first row (1 = identity); shift: the
    distance of the grid's centre from the input's."""
    coords = _grids(config, theta, size)
    coords = coords.reshape(-1, *coords.shape[-len(size) - 1 :])  # [N, *size, ndim]
    row = coords.reshape(len(coords), -1, size[-1], coords.shape[-1])[:, 0]
    side = np.linalg.norm(row[:, -1] - row[:, 0], axis=-1) / 2
    centre = coords.reshape(len(coords), -1, coords.shape[-1]).mean(axis=1)
    return {
        "theta_scale": float(side.mean()),
        "theta_shift": float(np.linalg.norm(centre, axis=-1).mean()),
        "grid_outside": float((np.abs(coords) > 1).any(axis=-1).mean()),
    }


def picture(config: TrainConfig, model, batch, step, num=8):
    """Inputs with the sampling grids, and the transformer outputs, of test examples.

    Volumes are shown summed over their depth, with the (x, y) of the grid's
    middle depth slice; the output is the model's depth projection."""
    side = batch["image"].shape[2]
    num = num if side <= 128 else 4  # large RGB images (CUB): fewer, not enlarged
    images = batch["image"][:num]
    out = model(images, training=False)
    size = images.shape[1:-1]
    coords = _grids(config, out["theta"], size)
    shown = images.numpy()
    transformed = out["transformed"].numpy()
    if len(size) == 3:  # [N, D, H, W, C]: the projection the model sees, in [0, 1]
        shown = shown.sum(axis=1)
        shown /= max(float(shown.max()), 1e-6)
        coords = coords[:, size[0] // 2, ..., :2]
        transformed = transformed / max(float(transformed.max()), 1e-6)
    predicted = np.argmax(out["logits"].numpy(), -1)
    labels = np.asarray(batch["label"][:num])
    captions = [
        f"label {label_text(t)} pred {label_text(p)}" for t, p in zip(labels, predicted)
    ]
    title = f"{config.model} {config.transform} on {config.dataset}, step {step}"
    return pictures.transformer_sheet(
        shown, coords, transformed, captions, zoom=max(1, 192 // side), title=title
    )


def label_text(label) -> str:
    """A label as text: digit sequences as their digits (SVHN's "no digit", 10,
    left out)."""
    if not np.ndim(label):
        return str(label)
    return "".join(str(d) for d in np.ravel(label) if d < 10) or "-"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Progress:
    """Sums the steps between two log points; at each, writes a ``metrics.csv``
    row and TensorBoard scalars (and θ's histogram), and prints a progress line.

    Args:
        config: the run's config.
        metrics: the run's ``workdir.Metrics``.
        writer: the TensorBoard writer.
        schedule: the learning-rate schedule.
        image_size: the examples' spatial shape, for θ's statistics (None for
            models without a transformer).
        sequences: whether the examples are sequences (errors per digit, and
            per sequence too).
    """

    def __init__(
        self, config, metrics, writer, schedule, image_size=None, *, sequences=False
    ):
        self.config, self.metrics, self.writer = config, metrics, writer
        self.schedule, self.image_size = schedule, image_size
        self.sequences = sequences
        self._reset(time.perf_counter())

    def _reset(self, now):
        self.start, self.steps, self.loss, self.error = now, 0, 0.0, 0.0
        self.sequence_error = self.wait = 0.0

    def skip(self, seconds: float) -> None:
        """Leaves ``seconds`` spent on something else (an evaluation) out of the rate."""
        self.start += seconds

    def add(self, loss, error, sequence_error, wait: float) -> None:
        """One step's loss and errors, and the seconds it waited for its batch."""
        self.steps += 1
        self.loss += float(loss)
        self.error += float(error)
        self.sequence_error += float(sequence_error)
        self.wait += wait

    def log(self, step: int, theta) -> None:
        config, now = self.config, time.perf_counter()
        rate = self.steps * config.batch_size / (now - self.start)
        row = {
            "step": step,
            "loss": self.loss / self.steps,
            "error": self.error / self.steps,
            "sequence_error": self.sequence_error / self.steps
            if self.sequences
            else "",
            "learning_rate": float(self.schedule(step - 1)),
            "examples_per_s": rate,
            "input_wait": self.wait / (now - self.start),
        }
        if self.image_size is not None:
            row.update(theta_stats(config, theta.numpy(), self.image_size))
        self.metrics.write(row)
        with self.writer.as_default(step=step):
            for key, value in row.items():
                if key != "step" and value != "":
                    tf.summary.scalar(key, value)
            if self.image_size is not None:
                tf.summary.histogram("theta", theta)
        eta = (config.steps - step) * config.batch_size / rate
        print(
            f"step {step}/{config.steps}  loss {row['loss']:.4f}  error {100 * row['error']:.2f}%  "
            f"{rate:,.0f} ex/s  input wait {100 * row['input_wait']:.0f}%  "
            f"ETA {duration(eta)}",
            flush=True,
        )
        self._reset(now)
