"""Times bilinear_sample (with, without XLA) against autodiff and PyTorch samplers.

The `torch` variant (PyTorch's ``F.affine_grid`` + ``F.grid_sample``, the reference
of issue 9) needs PyTorch, which is a benchmark dependency only, never one of the
package. It lives in its own environment, next to TensorFlow in one process; set it
up once from the repository root (the pin takes the CPU build; without it pip pulls
GBs of CUDA packages)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e ".[cpu]" torch==2.13.0

and run ``.venv-bench/bin/python -m tools.bench_sampler``. With ``.venv`` pass
``--variants`` without ``torch``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable

from absl import app, flags
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep the C++ start-up banner out
import tensorflow as tf  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parents[1]

from stn_tf import sampler, transforms  # noqa: E402
from tools import benchlib  # noqa: E402


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
    """

    name: str
    description: str
    batch: int
    in_hw: tuple[int, int]
    channels: int
    out_hw: tuple[int, int]
    grids: int = 1

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
        """Least bytes the sampler itself moves in one ``fwd`` and one ``fwd_bwd``.

        fwd: ``sampler_bytes`` (images and coords read once, output written once).
        fwd+bwd adds a backward pass that reads the upstream gradient (output-sized),
        reads the images and coords again and writes the gradients w.r.t. the
        images (image-sized) and the coords (coords-sized). Not counted: the
        neighbour reads beyond the first (assumed to hit the cache), ``affine_grid``,
        the loss and the θ gradient, so this is an underestimate of any real step.
        """
        f = self.sampler_bytes()
        backward = f["output"] + 2 * (f["input"] + f["coords"])
        return {"fwd": sum(f.values()), "fwd_bwd": sum(f.values()) + backward}


WORKLOADS = {
    w.name: w
    for w in [
        Workload("W1", "cluttered MNIST, downsample d = 2", 256, (60, 60), 1, (30, 30)),
        Workload("W2", "RTS MNIST", 128, (42, 42), 1, (42, 42)),
        Workload("W3", "CUB, 4 transformers", 16, (448, 448), 3, (224, 224), 4),
        Workload("W4", "RNN-SPN, 3 steps, d = 3", 64, (100, 100), 1, (33, 33), 3),
    ]
}

# name -> (table label, sampler fn, jit_compile of the whole step). The sampler fn
# takes (images, coords [B, grids * H', W', 2]), or for the variants in _FUSED,
# which make the grid themselves, (images, θ as matrices [B, grids, 2, 3], (H', W'));
# it returns [B, grids * H', W', C].
VARIANTS = {
    "ours_xla": (
        "ours, XLA grid + sampler",
        lambda images, matrix, size: _stacked(
            sampler.sample_affine(images, matrix, size, jit_compile=True)
        ),
        False,
    ),
    "ours_xla_unfused": (
        "ours, XLA sampler, grid outside",
        lambda images, coords: sampler.bilinear_sample(
            images, coords, jit_compile=True
        ),
        False,
    ),
    "ours": (
        "ours, no XLA",
        lambda images, coords: sampler.bilinear_sample(images, coords),
        False,
    ),
    "ours_step_xla": (
        "ours, XLA whole step",
        lambda images, coords: sampler.bilinear_sample(images, coords),
        True,
    ),
    "autodiff_xla": (
        "autodiff, XLA whole step",
        lambda images, coords: autodiff_bilinear_sample(images, coords),
        True,
    ),
    "autodiff": (
        "autodiff, no XLA",
        lambda images, coords: autodiff_bilinear_sample(images, coords),
        False,
    ),
    # Not a TF sampler: make_torch_functions builds its steps.
    "torch": ("PyTorch affine_grid + grid_sample", None, False),
}
_FUSED = {"ours_xla"}
_REFERENCE = "ours_xla"
_TORCH = "torch"
_VENV_BENCH = (
    "python3 -m venv .venv-bench && "
    '.venv-bench/bin/pip install -e ".[cpu]" torch==2.13.0'
)

BEGIN_MARK = "<!-- BEGIN bench_sampler results (generated, do not edit by hand) -->"
END_MARK = "<!-- END bench_sampler results -->"

_FLAGS = flags.FLAGS
flags.DEFINE_list("workloads", list(WORKLOADS), "Workloads to run.")
flags.DEFINE_list("variants", list(VARIANTS), "Variants to time.")
flags.DEFINE_integer("repeats", 30, "Timed calls per measurement (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed calls per function after compiling.")
flags.DEFINE_bool(
    "settle",
    True,
    "Make one untimed call of the same step right before each timed call, so that "
    "it follows its own framework's work as in a training loop: PyTorch's OpenMP "
    "threads spin-wait after each call and would take a core from the next variant.",
)
flags.DEFINE_integer("seed", 0, "Seed for images, θ and the upstream gradient.")
flags.DEFINE_bool("check", True, "Check that all variants agree before timing.")
flags.DEFINE_string(
    "out",
    "docs/benchmarks.md",
    "Markdown file whose bench_sampler section to (re)write.",
)


def autodiff_bilinear_sample(images: tf.Tensor, coords: tf.Tensor) -> tf.Tensor:
    """Plain bilinear sampler, four ``gather_nd`` reads, gradients by autodiff.

    Convention: as ``sampler.bilinear_sample``: coordinates in [-1, 1], last axis
    ``(x, y)``, corner-aligned (``align_corners=True``), zeros outside the image,
    channels-last; θ-independent (coordinates are already source points).

    Args:
        images: ``[B, H, W, C]`` float32 images.
        coords: ``[B, H', W', 2]`` float32 source coordinates.

    Returns:
        ``[B, H', W', C]`` samples.
    """
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    x = (coords[..., 0] + 1.0) * (tf.cast(w, coords.dtype) - 1.0) / 2.0  # [B, H', W']
    y = (coords[..., 1] + 1.0) * (tf.cast(h, coords.dtype) - 1.0) / 2.0
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = x - x0, y - y0  # floor has no gradient: d fx / d x = 1
    # Clip before the int cast only so that far-away points cannot overflow.
    x0 = tf.cast(tf.clip_by_value(x0, -2.0, tf.cast(w, x0.dtype) + 1.0), tf.int32)
    y0 = tf.cast(tf.clip_by_value(y0, -2.0, tf.cast(h, y0.dtype) + 1.0), tf.int32)
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            index = tf.stack(
                [tf.clip_by_value(yi, 0, h - 1), tf.clip_by_value(xi, 0, w - 1)], -1
            )  # [B, H', W', 2] (row, col)
            values = tf.gather_nd(images, index, batch_dims=1)  # [B, H', W', C]
            weight = wx * wy * tf.cast(inside, wx.dtype)
            out = out + weight[..., None] * values
    return out


def _stacked(out: tf.Tensor) -> tf.Tensor:
    """``[B, grids, H', W', C]`` -> ``[B, grids * H', W', C]`` (free)."""
    shape = tf.shape(out)
    return tf.reshape(out, [shape[0], -1, shape[3], shape[4]])


# The grid of the fused variant (sampler.sample_affine), as its XLA backward makes it.
_xla_affine_grid = tf.function(sampler.affine_coords, jit_compile=True, autograph=False)


def stacked_affine_grid(matrix: tf.Tensor, output_size) -> tf.Tensor:
    """``transforms.affine_grid`` of ``grids`` θ per image, stacked along H'.

    Args:
        matrix: ``[B, grids, 2, 3]``: the θ of each image's grids.
        output_size: ``(H', W')`` of one grid.

    Returns:
        ``[B, grids * H', W', 2]`` coordinates (``Workload.coords_shape``).
    """
    coords = transforms.affine_grid(tf.reshape(matrix, [-1, 6]), output_size)
    return tf.reshape(coords, [tf.shape(matrix)[0], -1, output_size[1], 2])


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


def make_inputs(wl: Workload, seed: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random images ``[B, H, W, C]``, θ ``[B * grids, 6]`` and upstream gradient."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(wl.batch, *wl.in_hw, wl.channels)).astype(np.float32)
    theta = random_theta(rng, wl.batch * wl.grids)
    upstream = rng.standard_normal((*wl.coords_shape[:-1], wl.channels))
    return (
        tf.constant(images),
        tf.constant(theta),
        tf.constant(upstream.astype(np.float32)),
    )


def make_functions(wl: Workload, variant: str, inputs) -> dict[str, Callable]:
    """The ``fwd``, ``fwd_bwd`` (timed, scalar results) and ``full`` (check) steps.

    Args:
        wl: the workload.
        variant: a ``VARIANTS`` name.
        inputs: ``make_inputs(wl, ...)``, bound to the steps.

    Returns:
        ``{"fwd": f, "fwd_bwd": f, "full": f}``, each called without arguments.
    """
    if variant == _TORCH:
        return make_torch_functions(wl, inputs)
    _, sample_fn, jit_step = VARIANTS[variant]
    fused = variant in _FUSED

    def forward(images, theta, upstream):
        # Image b is read by grids b*grids .. b*grids + grids - 1, stacked along H'.
        matrix = tf.reshape(theta, [wl.batch, wl.grids, 2, 3])
        if fused:
            out = sample_fn(images, matrix, wl.out_hw)
        else:
            coords = stacked_affine_grid(matrix, wl.out_hw)  # [B, grids * H', W', 2]
            out = sample_fn(images, coords)
        return out, tf.reduce_sum(out * upstream)  # out: [B, grids * H', W', C]

    def fwd(images, theta, upstream):
        return forward(images, theta, upstream)[1]

    def fwd_bwd(images, theta, upstream):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            _, loss = forward(images, theta, upstream)
        grad_images, grad_theta = tape.gradient(loss, [images, theta])
        # Scalars only, so fetching them costs nothing but needs all the work done.
        return loss, tf.reduce_sum(grad_images), tf.reduce_sum(grad_theta)

    def full(images, theta, upstream):
        matrix = tf.reshape(theta, [wl.batch, wl.grids, 2, 3])
        coords = stacked_affine_grid(matrix, wl.out_hw)
        # The grid whose coordinate gradient is returned. The fused variants never
        # expose theirs: take the gradient of the XLA kernels they call, on the
        # grid they make (XLA fuses a x + b y into an FMA, so a coordinate may be
        # 1 ulp off affine_grid's, which can flip a knot point's one-sided
        # derivative). It only corrects the knot points' share of their θ
        # gradient (check_agreement), which is compared in full everywhere else.
        grid = _xla_affine_grid(matrix, wl.out_hw) if fused else coords
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([images, theta, grid])
            out, loss = forward(images, theta, upstream)
            if fused:
                out_grid = sampler.bilinear_sample(images, grid, jit_compile=True)
            else:
                out_grid = sample_fn(images, grid)
            loss_grid = tf.reduce_sum(out_grid * upstream)
        grad_images, grad_theta = tape.gradient(loss, [images, theta])
        return {
            "out": out,
            "grad_images": grad_images,
            "grad_theta": grad_theta,
            "grad_coords": tape.gradient(loss_grid, grid),
            "coords": coords,
        }

    return {
        name: functools.partial(tf.function(fn, jit_compile=jit_step), *inputs)
        for name, fn in [("fwd", fwd), ("fwd_bwd", fwd_bwd), ("full", full)]
    }


def import_torch():
    """Imports PyTorch (only for the ``torch`` variant) and sizes its thread pool.

    Raises:
        SystemExit: when PyTorch is not installed in this environment.
    """
    try:
        import torch  # a benchmark-only dependency: imported on demand
    except ImportError as e:
        raise SystemExit(
            f"The `{_TORCH}` variant needs PyTorch, which is not installed in "
            f"{sys.prefix}. Run the benchmark with .venv-bench/bin/python (set it up "
            f"from the repository root with: {_VENV_BENCH}), or leave the variant "
            f"out with --variants={','.join(v for v in VARIANTS if v != _TORCH)}."
        ) from e
    torch.set_num_threads(benchlib.cores())
    return torch


def make_torch_functions(wl: Workload, inputs) -> dict[str, Callable]:
    """The ``torch`` variant's steps: ``F.affine_grid`` then ``F.grid_sample``.

    Convention: bilinear, zeros outside, ``align_corners=True`` (as ours). The
    inputs are converted once, here: images and upstream NHWC -> NCHW
    (contiguous), θ ``[B * grids, 6]`` -> ``[B * grids, 2, 3]``. As in
    ``make_functions``, the ``B * grids`` grids ``[B * grids, H', W', 2]`` are
    reshaped (a view) to ``[B, grids * H', W', 2]``, so both sample the same
    points from the same ``B`` images.

    Returns:
        ``{"fwd": f, "fwd_bwd": f, "full": f}`` as ``make_functions``; ``full``
        gives NHWC arrays and θ gradients ``[B * grids, 6]``.
    """
    torch = import_torch()
    fn = torch.nn.functional
    images_np, theta_np, upstream_np = (np.array(t) for t in inputs)  # copies
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous()
    theta = torch.from_numpy(theta_np).reshape(-1, 2, 3)  # [B * grids, 2, 3]
    upstream = torch.from_numpy(upstream_np).permute(0, 3, 1, 2).contiguous()
    grid_size = (wl.batch * wl.grids, wl.channels, *wl.out_hw)  # N, C, H', W'

    def forward(images, theta):
        grid = fn.affine_grid(theta, grid_size, align_corners=True)
        grid = grid.reshape(wl.coords_shape)  # [B, grids * H', W', 2]
        out = fn.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )  # [B, C, grids * H', W']
        return grid, out, torch.sum(out * upstream)

    def fwd():
        with torch.no_grad():
            return forward(images, theta)[2].item()

    def fwd_bwd():
        x, t = images.detach().requires_grad_(), theta.detach().requires_grad_()
        loss = forward(x, t)[2]
        grad_images, grad_theta = torch.autograd.grad(loss, [x, t])
        return loss.item(), grad_images.sum().item(), grad_theta.sum().item()

    def full():
        x, t = images.detach().requires_grad_(), theta.detach().requires_grad_()
        grid, out, loss = forward(x, t)
        grads = torch.autograd.grad(loss, [x, t, grid])
        return {
            "out": out.detach().permute(0, 2, 3, 1).numpy(),
            "grad_images": grads[0].permute(0, 2, 3, 1).numpy(),
            "grad_theta": grads[1].reshape(-1, 6).numpy(),
            "grad_coords": grads[2].numpy(),
            "coords": grid.detach().numpy(),
        }

    return {"fwd": fwd, "fwd_bwd": fwd_bwd, "full": full}


def _fetch(result):
    """Host values of a step's results (TF tensors; PyTorch steps give floats)."""
    return tf.nest.map_structure(
        lambda t: t.numpy() if hasattr(t, "numpy") else t, result
    )


def copy_bandwidth(mib: int = 256, repeats: int = 9) -> float:
    """Memory bandwidth in bytes/s: ``np.copyto`` of ``mib`` MiB of float32.

    Counts the bytes read plus the bytes written, over the median time of
    ``repeats`` copies (after one that faults the pages in).
    """
    src = np.ones(mib * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times)


def _knot_mask(coords: np.ndarray, in_hw: tuple[int, int]) -> np.ndarray:
    """Points that ``sampler`` may snap onto a pixel centre, ``[B, H', W']``.

    ``sampler._taps`` snaps positions within ``2 eps (n + 1)`` pixels of a knot;
    there the coordinate gradient is the right-sided derivative, where a plain
    sampler takes the left one if the position rounded below the knot. Both are
    valid (bilinear is not differentiable at knots), so such points are compared
    separately. The mask is 4x wider than the snapping window.
    """
    mask = np.zeros(coords.shape[:-1], bool)
    for axis, n in ((0, in_hw[1]), (1, in_hw[0])):  # x runs along W, y along H
        pos = (coords[..., axis].astype(np.float64) + 1.0) * (n - 1) / 2.0
        mask |= np.abs(pos - np.round(pos)) <= 4 * 2.0 * 2.0**-23 * (n + 1)
    return mask


def _theta_grad_from_coords(wl: Workload, grad_coords: np.ndarray) -> np.ndarray:
    """Back-propagates ``[B, grids * H', W', 2]`` coordinate gradients to θ."""
    h, w = wl.out_hw
    target = transforms.regular_grid(wl.out_hw, tf.float64).numpy()  # [H', W', 2]
    g = grad_coords.astype(np.float64).reshape(wl.batch * wl.grids, h, w, 2)
    x, y = target[..., 0], target[..., 1]
    gx, gy = g[..., 0], g[..., 1]
    cols = [gx * x, gx * y, gx, gy * x, gy * y, gy]  # d(a x + b y + c, d x + e y + f)
    return np.stack([c.sum(axis=(1, 2)) for c in cols], axis=-1)  # [B * grids, 6]


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-3) -> tuple[bool, float]:
    """Elementwise ``|a - b| <= rtol |b| + 0.1 rtol max|b|``; also the worst ratio."""
    bound = rtol * np.abs(b) + 0.1 * rtol * float(np.max(np.abs(b)))
    ratio = np.abs(a - b) / np.maximum(bound, 1e-30)
    return bool(np.all(ratio <= 1.0)), float(np.max(ratio, initial=0.0))


def check_agreement(wl: Workload, functions: dict) -> str:
    """Compares every variant's output and gradients with ``autodiff`` (or the first).

    Tolerances: forward max |diff| < 1e-4; gradients w.r.t. the images, the
    coordinates and θ within ``1e-3 |ref| + 1e-4 max |ref|``. Coordinate
    gradients at points next to a pixel centre (``_knot_mask``) may legitimately
    differ (one-sided derivatives); they are left out of the coordinate
    comparison, and their difference is propagated to θ and subtracted before θ
    is compared, so every other point is still checked at full precision.

    Returns:
        A one-line summary of the check.

    Raises:
        SystemExit: when a variant disagrees.
    """
    results = {v: _fetch(fns["full"]()) for v, fns in functions.items()}
    ref_name = "autodiff" if "autodiff" in results else next(iter(results))
    ref = results[ref_name]
    knots = _knot_mask(ref["coords"], wl.in_hw)  # [B, H', W']
    worst = {"grad_images": 0.0, "grad_coords": 0.0, "grad_theta": 0.0}
    worst_out = 0.0

    def fail(variant, key, a, b, extra=""):
        diff = np.abs(a.astype(np.float64) - b)
        i = np.unravel_index(np.argmax(diff), diff.shape)
        raise SystemExit(
            f"{wl.name}: {variant} disagrees with {ref_name} on {key}: max |diff| "
            f"{diff.max():.3g} at {tuple(int(j) for j in i)} ({a[i]!r} vs {b[i]!r}), "
            f"max |{ref_name}| {np.max(np.abs(b)):.3g}{extra}. "
            "Not timing a wrong sampler."
        )

    for variant, got in results.items():
        for key, value in got.items():
            if not np.all(np.isfinite(value)):
                raise SystemExit(f"{wl.name}: {variant} gives non-finite {key}.")
        diff_out = np.abs(got["out"] - ref["out"])
        # Snapping moves a knot point by <= 2 eps (n + 1) px, so its value by as much.
        diff_out[knots] = 0.0
        worst_out = max(worst_out, float(diff_out.max()))
        if diff_out.max() >= 1e-4:
            fail(variant, "out", got["out"], ref["out"])
        ok, worst_ratio = _close(got["grad_images"], ref["grad_images"])
        worst["grad_images"] = max(worst["grad_images"], worst_ratio)
        if not ok:
            fail(variant, "grad_images", got["grad_images"], ref["grad_images"])
        gc, gc_ref = got["grad_coords"], ref["grad_coords"]
        ok, worst_ratio = _close(gc[~knots], gc_ref[~knots])
        worst["grad_coords"] = max(worst["grad_coords"], worst_ratio)
        if not ok:
            fail(variant, "grad_coords", np.where(knots[..., None], gc_ref, gc), gc_ref)
        knot_diff = np.where(knots[..., None], gc - gc_ref, 0.0)
        knot_part = _theta_grad_from_coords(wl, knot_diff)
        ok, worst_ratio = _close(got["grad_theta"] - knot_part, ref["grad_theta"])
        worst["grad_theta"] = max(worst["grad_theta"], worst_ratio)
        if not ok:
            fail(
                variant,
                "grad_theta",
                got["grad_theta"] - knot_part,
                ref["grad_theta"],
                " (after removing the knot points' share)",
            )
    return (
        f"{wl.name}: {', '.join(results)} agree with {ref_name}: forward max |diff| "
        f"{worst_out:.1e}; gradients use at most {worst['grad_images']:.0%} (images), "
        f"{worst['grad_coords']:.0%} (coords), {worst['grad_theta']:.0%} (θ) of their "
        f"tolerance; {int(knots.sum())} of {knots.size} points lie next to a pixel "
        "centre and were compared one-sidedly"
    )


def time_workload(
    functions: dict, repeats: int, warmup: int, settle: bool = True
) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Warms up (compiles) and times every variant's steps, interleaved.

    Args:
        functions: ``{variant: make_functions(...)}``.
        repeats: timed calls per variant and mode.
        warmup: untimed calls first (at least one, which compiles).
        settle: make one untimed call of the same step before each timed one.

    Returns:
        ``{variant: {"fwd": [ms, ...], "fwd_bwd": [ms, ...]}}`` and the seconds
        each variant spent compiling and warming up.
    """
    compile_s = {}
    for v, fns in functions.items():
        start = time.perf_counter()
        for mode in ("fwd", "fwd_bwd"):
            for _ in range(max(warmup, 1)):
                _fetch(fns[mode]())
        compile_s[v] = time.perf_counter() - start
    times = {v: {"fwd": [], "fwd_bwd": []} for v in functions}
    # Round-robin over variants so that load from other processes hits all alike.
    for _ in range(repeats):
        for v, fns in functions.items():
            for mode in ("fwd", "fwd_bwd"):
                if settle:
                    _fetch(fns[mode]())
                start = time.perf_counter()
                _fetch(fns[mode]())
                times[v][mode].append(1e3 * (time.perf_counter() - start))
    return times, compile_s


def _medians(times: dict) -> dict[str, dict[str, float]]:
    return {
        v: {m: statistics.median(t) for m, t in ts.items()} for v, ts in times.items()
    }


def _floor_ms(wl: Workload, bandwidth: float) -> dict[str, float]:
    return {m: 1e3 * b / bandwidth for m, b in wl.floor_bytes().items()}


def results_table(results: dict, workloads: list[Workload], bandwidth: float) -> str:
    """Markdown table: one row per workload and variant, then the workload's floor."""
    lines = [
        (
            "| workload | variant | fwd median ms (min) | fwd+bwd median ms (min) "
            "| fwd+bwd / torch | fwd / torch | fwd+bwd / ours XLA | fwd / ours XLA |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for wl in workloads:
        times = results[wl.name]
        med = _medians(times)

        def ratios(value, ref_variant, med=med):
            return [
                f"{value[m] / med[ref_variant][m]:.2f}x"
                if ref_variant in med
                else "n/a"
                for m in ("fwd_bwd", "fwd")
            ]

        for v, ts in times.items():
            lines.append(
                f"| {wl.name} | {VARIANTS[v][0]} (`{v}`) "
                f"| {med[v]['fwd']:.1f} ({min(ts['fwd']):.1f}) "
                f"| {med[v]['fwd_bwd']:.1f} ({min(ts['fwd_bwd']):.1f}) "
                f"| {' | '.join(ratios(med[v], _TORCH) + ratios(med[v], _REFERENCE))} |"
            )
        floor = _floor_ms(wl, bandwidth)
        lines.append(
            f"| {wl.name} | *memory-bandwidth floor* | *{floor['fwd']:.2f}* "
            f"| *{floor['fwd_bwd']:.2f}* "
            f"| {' | '.join(ratios(floor, _TORCH) + ratios(floor, _REFERENCE))} |"
        )
    return "\n".join(lines)


def summary(results: dict, workloads: list[Workload], bandwidth: float) -> str:
    """One line per workload: the target (``ours_xla`` fwd+bwd <= torch), the
    floor, and the fastest variant for fwd and for fwd+bwd."""
    lines = []
    for wl in workloads:
        med = _medians(results[wl.name])
        floor = _floor_ms(wl, bandwidth)["fwd_bwd"]
        parts = []
        if _TORCH in med and _REFERENCE in med:
            ratio = med[_REFERENCE]["fwd_bwd"] / med[_TORCH]["fwd_bwd"]
            verdict = "**met**" if ratio <= 1.0 else "**not met**"
            parts.append(
                f"target (`{_REFERENCE}` fwd+bwd <= 1.0x `{_TORCH}`) {verdict}: "
                f"{ratio:.2f}x ({med[_REFERENCE]['fwd_bwd']:.1f} vs "
                f"{med[_TORCH]['fwd_bwd']:.1f} ms)"
            )
            meets = [
                v
                for v in med
                if v != _TORCH and med[v]["fwd_bwd"] <= med[_TORCH]["fwd_bwd"]
            ]
            parts.append(
                "ours at most torch's fwd+bwd: "
                + (", ".join(f"`{v}`" for v in meets) if meets else "none")
            )
        parts.append(
            f"fwd+bwd floor {floor:.2f} ms ("
            + ", ".join(
                f"`{v}` {med[v]['fwd_bwd'] / floor:.0f}x"
                for v in (_REFERENCE, _TORCH)
                if v in med
            )
            + " of it)"
        )
        best = {m: min(med, key=lambda v: med[v][m]) for m in ("fwd", "fwd_bwd")}
        parts.append(
            f"fastest: fwd `{best['fwd']}` ({med[best['fwd']]['fwd']:.1f} ms), "
            f"fwd+bwd `{best['fwd_bwd']}` ({med[best['fwd_bwd']]['fwd_bwd']:.1f} ms)"
        )
        lines.append(f"- {wl.name}: " + "; ".join(parts))
    return "\n".join(lines)


def workload_table(workloads: list[Workload]) -> str:
    """Markdown table of shapes and the bytes one sampler fwd and fwd+bwd move."""
    lines = [
        (
            "| workload | description | images | coords (grids stacked on H') "
            "| output | input MB | coords MB | output MB | fwd MB | fwd+bwd MB |"
        ),
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for wl in workloads:
        b = wl.sampler_bytes()
        floor = wl.floor_bytes()
        shape_out = (*wl.coords_shape[:-1], wl.channels)
        lines.append(
            f"| {wl.name} | {wl.description} | {[wl.batch, *wl.in_hw, wl.channels]} "
            f"| {list(wl.coords_shape)} | {list(shape_out)} "
            f"| {b['input'] / 1e6:.2f} | {b['coords'] / 1e6:.2f} "
            f"| {b['output'] / 1e6:.2f} | {floor['fwd'] / 1e6:.2f} "
            f"| {floor['fwd_bwd'] / 1e6:.2f} |"
        )
    return "\n".join(lines)


def render(
    results: dict,
    workloads: list[Workload],
    command: str,
    checks: list[str],
    elapsed_s: float,
    version: str,
    bandwidth: float,
    torch_version: str | None,
) -> str:
    """The bench_sampler section of docs/benchmarks.md."""
    cores = benchlib.cores()
    today = datetime.date.today().isoformat()
    check_lines = "\n".join(f"- {c}" for c in checks) or "- (skipped: `--nocheck`)"
    torch_line = (
        f"- PyTorch: {torch_version}, `torch.set_num_threads({cores})`"
        if torch_version
        else "- PyTorch: not run (no `torch` variant)"
    )
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    settle = "yes (`--settle`)" if _FLAGS.settle else "no (`--nosettle`)"
    # The method (variants, how to read, checks) is hand-written prose in the docs,
    # above this section.
    return f"""## Sampler

Generated by `tools/bench_sampler.py`; rerun it to regenerate this section. How
it measures is written above it ("Sampler: method").

- Date: {today}
- TensorFlow: {tf.__version__} (CPU), Python {platform.python_version()}, default
  thread pools (`intra_op_parallelism_threads` = {intra}: TF sizes its intra-op
  pool, which XLA:CPU shares, to the {cores} schedulable cores)
{torch_line}
- CPU: {benchlib.cpu_model()}, {cores} cores visible to the process
- Memory bandwidth, measured in this run: {bandwidth / 1e9:.1f} GB/s (`np.copyto` of
  256 MiB of float32, bytes read + written, median of 9; one thread)
- Code: {version}
- Command (from the repository root):
  `{command}`
- An untimed settling call before each timed call: {settle}
- Wall time of the run: {elapsed_s / 60:.1f} min (compiling and checks included)

### Workloads

{workload_table(workloads)}

θ: random affine near the identity (rotation ±30°, isotropic scale 0.8-1.2,
translation ±0.2), fixed `--seed`; images uniform in [0, 1), float32.

### Results

{BEGIN_MARK}

{results_table(results, workloads, bandwidth)}

Per workload: the target, the floor, and the fastest variant (by median):

{summary(results, workloads, bandwidth)}

Agreement checks:

{check_lines}

{END_MARK}
"""


def _interpreter() -> str:
    """This Python, relative to the repository when it lives there."""
    exe = pathlib.Path(sys.executable)
    try:
        return str(exe.relative_to(_REPO))
    except ValueError:
        return "python"


def main(argv):
    del argv
    unknown = (set(_FLAGS.workloads) - set(WORKLOADS)) | (
        set(_FLAGS.variants) - set(VARIANTS)
    )
    if unknown:
        raise app.UsageError(
            f"Unknown workloads/variants {sorted(unknown)}; known: "
            f"{sorted(WORKLOADS)}, {sorted(VARIANTS)}"
        )
    workloads = [WORKLOADS[w] for w in _FLAGS.workloads]
    # Fail before any timing when PyTorch is missing.
    torch_version = import_torch().__version__ if _TORCH in _FLAGS.variants else None
    # Each variant traces the same Python step once; that is not accidental retracing.
    tf.get_logger().setLevel("ERROR")
    command = (
        f"{_interpreter()} tools/bench_sampler.py "
        f"--workloads={','.join(_FLAGS.workloads)} "
        f"--variants={','.join(_FLAGS.variants)} --repeats={_FLAGS.repeats} "
        f"--warmup={_FLAGS.warmup} --seed={_FLAGS.seed}"
        + ("" if _FLAGS.settle else " --nosettle")
        + ("" if _FLAGS.check else " --nocheck")
        + (f" --out={_FLAGS.out}" if _FLAGS.out != "docs/benchmarks.md" else "")
    )
    print(
        f"TensorFlow {tf.__version__}, PyTorch {torch_version or '(not used)'}, "
        f"{benchlib.cpu_model()}, {benchlib.cores()} cores"
    )
    print(workload_table(workloads), flush=True)
    version = benchlib.code_version(
        "stn_tf/sampler.py", "stn_tf/transforms.py"
    )  # before the run: files may change while it runs
    print(f"Code: {version}")
    start = time.perf_counter()
    bandwidth = copy_bandwidth()
    print(f"Memory bandwidth (np.copyto, read + write): {bandwidth / 1e9:.1f} GB/s")
    results, checks = {}, []
    for wl in workloads:
        b = wl.floor_bytes()
        print(
            f"{wl.name}: the sampler moves >= {b['fwd'] / 1e6:.1f} MB (fwd), "
            f"{b['fwd_bwd'] / 1e6:.1f} MB (fwd+bwd)",
            flush=True,
        )
        inputs = make_inputs(wl, _FLAGS.seed)
        functions = {v: make_functions(wl, v, inputs) for v in _FLAGS.variants}
        if _FLAGS.check:
            checks.append(check_agreement(wl, functions))
            print(checks[-1], flush=True)
        results[wl.name], compile_s = time_workload(
            functions, _FLAGS.repeats, _FLAGS.warmup, _FLAGS.settle
        )
        warm = ", ".join(f"{v} {t:.1f}" for v, t in compile_s.items())
        print(f"{wl.name}: compile + warm-up s: {warm}", flush=True)
        print(results_table({wl.name: results[wl.name]}, [wl], bandwidth), flush=True)
    elapsed = time.perf_counter() - start
    text = render(
        results, workloads, command, checks, elapsed, version, bandwidth, torch_version
    )
    print("\n" + results_table(results, workloads, bandwidth))
    print("\n" + summary(results, workloads, bandwidth))
    out = benchlib.write_section(_FLAGS.out, "bench_sampler", text)
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
