"""The sampler benchmark's workloads, inputs and timing loop, with no framework in
it: ``tools/bench_sampler.py`` times TensorFlow and PyTorch each in a process of
its own, as users run them, and both sides import this module.

A framework's side gives, per workload and variant, three steps and a check:

- ``fwd``: grid, sampler and ``loss = sum(out * upstream)``;
- ``theta_grad``: the same and the gradient of the loss w.r.t. θ alone (an ST at
  the input of a network: ST-CNN, CUB, RNN-SPN, co-localisation);
- ``full_grad``: the gradients w.r.t. the images **and** θ (an ST inside a
  network, whose input is a feature map: SVHN's ``st_cnn_multi``);
- ``check``: the output and the gradients as arrays, for the agreement check.

Each step returns host scalars, so a call's time includes all of its work.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CASES = {
    "fwd": "forward",
    "theta_grad": "θ-only gradient",
    "full_grad": "image and θ gradients",
}


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark shape: ``grids`` affine grids per image, stacked along H'.

    Attributes:
        name: short id (``W1`` ...).
        description: where the shape comes from.
        batch: B.
        in_hw: input ``(H, W)``.
        channels: C.
        out_hw: output ``(H', W')`` of one grid.
        grids: transformers (or recurrent steps) per image.
        theta: ``affine`` (``random_theta``) or ``attention`` (axis-aligned
            windows, ``random_attention_theta``).
    """

    name: str
    description: str
    batch: int
    in_hw: tuple[int, int]
    channels: int
    out_hw: tuple[int, int]
    grids: int = 1
    theta: str = "affine"

    @property
    def coords_shape(self) -> tuple[int, int, int, int]:
        """``[B, grids * H', W', 2]``: the grids of one image stacked along H'."""
        return (self.batch, self.grids * self.out_hw[0], self.out_hw[1], 2)

    def sampler_bytes(self) -> dict[str, int]:
        """Minimum bytes one sampler forward moves (float32, each tensor once)."""
        b, c = self.batch, self.channels
        points = self.grids * self.out_hw[0] * self.out_hw[1]
        return {
            "input": 4 * b * self.in_hw[0] * self.in_hw[1] * c,
            "coords": 4 * b * points * 2,
            "output": 4 * b * points * c,
        }

    def floor_bytes(self) -> dict[str, int]:
        """Least bytes the sampler itself moves in each case.

        fwd: ``sampler_bytes`` (images and coords read once, output written once).
        theta_grad adds a backward pass that reads the upstream gradient
        (output-sized), the images and coords again, and writes the coords'
        gradient; full_grad also writes the images' gradient (image-sized). Not
        counted: the neighbour reads beyond the first (assumed to hit the cache),
        the grid, the loss and θ's gradient, so this underestimates any real step.
        """
        f = self.sampler_bytes()
        forward = sum(f.values())
        theta = forward + f["output"] + f["input"] + 2 * f["coords"]
        return {"fwd": forward, "theta_grad": theta, "full_grad": theta + f["input"]}


WORKLOADS = {
    w.name: w
    for w in [
        Workload("W1", "cluttered MNIST, downsample d = 2", 256, (60, 60), 1, (30, 30)),
        Workload("W2", "RTS MNIST", 128, (42, 42), 1, (42, 42)),
        Workload("W3", "CUB, 4 transformers", 16, (448, 448), 3, (224, 224), 4),
        Workload("W4", "RNN-SPN, 3 steps, d = 3", 64, (100, 100), 1, (33, 33), 3),
        Workload(
            "A1",
            "co-localisation: attention windows",
            64,
            (84, 84),
            1,
            (28, 28),
            theta="attention",
        ),
        Workload(
            "A3",
            "CUB, 4 attention windows",
            16,
            (448, 448),
            3,
            (224, 224),
            4,
            theta="attention",
        ),
    ]
}


def random_theta(rng: np.random.Generator, n: int) -> np.ndarray:
    """Affine θ near the identity: rotation ±30°, scale 0.8-1.2, shift ±0.2.

    Returns:
        ``[n, 6]`` float32 θ, row-major ``[[a, b, c], [d, e, f]]``.
    """
    angle = np.deg2rad(rng.uniform(-30.0, 30.0, n))
    scale = rng.uniform(0.8, 1.2, n)
    tx, ty = rng.uniform(-0.2, 0.2, (2, n))
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.stack([cos, -sin, tx, sin, cos, ty], axis=-1).astype(np.float32)


def random_attention_theta(rng: np.random.Generator, n: int) -> np.ndarray:
    """Axis-aligned windows (the attention transform, STN eq. 2): scale 0.3-0.9,
    shift ±0.3, as affine θ ``[n, 6]`` float32 ``[[s, 0, tx], [0, s, ty]]``."""
    scale = rng.uniform(0.3, 0.9, n)
    tx, ty = rng.uniform(-0.3, 0.3, (2, n))
    zero = np.zeros(n)
    return np.stack([scale, zero, tx, zero, scale, ty], axis=-1).astype(np.float32)


def make_inputs(wl: Workload, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``[B, H, W, C]`` uniform in [0, 1), θ ``[B * grids, 6]`` and the
    upstream gradient ``[B, grids * H', W', C]``, all float32, NHWC."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(wl.batch, *wl.in_hw, wl.channels)).astype(np.float32)
    draw = random_attention_theta if wl.theta == "attention" else random_theta
    theta = draw(rng, wl.batch * wl.grids)
    upstream = rng.standard_normal((*wl.coords_shape[:-1], wl.channels))
    return images, theta, upstream.astype(np.float32)


def time_cases(
    steps: dict[str, Callable], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], float]:
    """Warms up (compiles) then times the three cases, interleaved call by call.

    Returns:
        ``{case: [ms, ...]}`` and the seconds the warm-up took.
    """
    start = time.perf_counter()
    for case in CASES:
        for _ in range(max(warmup, 1)):
            steps[case]()
    warm_s = time.perf_counter() - start
    times = {case: [] for case in CASES}
    for _ in range(repeats):
        for case in CASES:
            start = time.perf_counter()
            steps[case]()
            times[case].append(1e3 * (time.perf_counter() - start))
    return times, warm_s


def run_side(
    make_steps: Callable[[Workload, str, tuple], dict[str, Callable]],
    *,
    framework: str,
    variants: list[str],
    workloads: list[str],
    repeats: int,
    warmup: int,
    seed: int,
    out: str,
    dump: str = "",
    applies: Callable[[Workload, str], bool] = lambda wl, variant: True,
) -> None:
    """One framework's process: times each workload's variants and writes
    ``{"framework": ..., "times": {workload: {variant: {case: [ms]}}}, ...}`` as
    JSON to ``out``; with ``dump``, also each variant's ``check`` arrays to
    ``<dump>/<workload>-<variant>.npz``. A variant runs on the workloads it
    ``applies`` to."""
    result = {"framework": framework, "python": platform.python_version()}
    result["times"], result["warm_s"] = {}, {}
    for name in workloads:
        wl = WORKLOADS[name]
        inputs = make_inputs(wl, seed)
        result["times"][name], result["warm_s"][name] = {}, {}
        for variant in (v for v in variants if applies(wl, v)):
            steps = make_steps(wl, variant, inputs)
            if dump:
                Path(dump).mkdir(parents=True, exist_ok=True)
                np.savez(Path(dump) / f"{name}-{variant}.npz", **steps["check"]())
            times, warm_s = time_cases(steps, repeats, warmup)
            result["times"][name][variant] = times
            result["warm_s"][name][variant] = warm_s
            medians = ", ".join(f"{c} {np.median(t):.2f}" for c, t in times.items())
            print(f"{framework} {name} {variant}: ms {medians}", flush=True)
    Path(out).write_text(json.dumps(result))
