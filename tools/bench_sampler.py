"""Times bilinear_sample (with, without XLA) against an autodiff gather_nd sampler."""

from __future__ import annotations

import dataclasses
import datetime
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
if str(_REPO) not in sys.path:  # run as `python tools/bench_sampler.py`, uninstalled
    sys.path.insert(0, str(_REPO))

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


WORKLOADS = {
    w.name: w
    for w in [
        Workload("W1", "cluttered MNIST, downsample d = 2", 256, (60, 60), 1, (30, 30)),
        Workload("W2", "RTS MNIST", 128, (42, 42), 1, (42, 42)),
        Workload("W3", "CUB, 4 transformers", 16, (448, 448), 3, (224, 224), 4),
        Workload("W4", "RNN-SPN, 3 steps, d = 3", 64, (100, 100), 1, (33, 33), 3),
    ]
}

# name -> (table label, sampler fn, jit_compile of the whole step)
VARIANTS = {
    "ours_xla": (
        "ours, XLA sampler",
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
}
_REFERENCE = "ours_xla"

BEGIN_MARK = "<!-- BEGIN bench_sampler results (generated, do not edit by hand) -->"
END_MARK = "<!-- END bench_sampler results -->"

_FLAGS = flags.FLAGS
flags.DEFINE_list("workloads", list(WORKLOADS), "Workloads to run.")
flags.DEFINE_list("variants", list(VARIANTS), "Variants to time.")
flags.DEFINE_integer("repeats", 30, "Timed calls per measurement (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed calls per function after compiling.")
flags.DEFINE_integer("seed", 0, "Seed for images, θ and the upstream gradient.")
flags.DEFINE_bool("check", True, "Check that all variants agree before timing.")
flags.DEFINE_string("out", "docs/benchmarks.md", "Markdown file whose bench_sampler section to (re)write.")


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


def make_functions(wl: Workload, variant: str) -> dict[str, Callable]:
    """The ``fwd``, ``fwd_bwd`` (timed, scalar results) and ``full`` (check) steps."""
    _, sample_fn, jit_step = VARIANTS[variant]

    def forward(images, theta, upstream):
        coords = transforms.affine_grid(theta, wl.out_hw)  # [B * grids, H', W', 2]
        # Image b is read by grids b*grids .. b*grids + grids - 1, stacked along H'.
        coords = tf.reshape(coords, wl.coords_shape)
        out = sample_fn(images, coords)  # [B, grids * H', W', C]
        return coords, out, tf.reduce_sum(out * upstream)

    def fwd(images, theta, upstream):
        return forward(images, theta, upstream)[2]

    def fwd_bwd(images, theta, upstream):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            _, _, loss = forward(images, theta, upstream)
        grad_images, grad_theta = tape.gradient(loss, [images, theta])
        # Scalars only, so fetching them costs nothing but needs all the work done.
        return loss, tf.reduce_sum(grad_images), tf.reduce_sum(grad_theta)

    def full(images, theta, upstream):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            coords, out, loss = forward(images, theta, upstream)
        grads = tape.gradient(loss, [images, theta, coords])
        return {
            "out": out,
            "grad_images": grads[0],
            "grad_theta": grads[1],
            "grad_coords": grads[2],
            "coords": coords,
        }

    return {
        name: tf.function(fn, jit_compile=jit_step)
        for name, fn in [("fwd", fwd), ("fwd_bwd", fwd_bwd), ("full", full)]
    }


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


def check_agreement(wl: Workload, functions: dict, inputs) -> str:
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
    results = {
        v: {k: t.numpy() for k, t in fns["full"](*inputs).items()}
        for v, fns in functions.items()
    }
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
    functions: dict, inputs, repeats: int, warmup: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Warms up (compiles) and times every variant's steps, interleaved.

    Args:
        functions: ``{variant: make_functions(...)}``.
        inputs: ``(images, theta, upstream)``.
        repeats: timed calls per variant and mode.
        warmup: untimed calls first (at least one, which compiles).

    Returns:
        ``{variant: {"fwd": [ms, ...], "fwd_bwd": [ms, ...]}}`` and the seconds
        each variant spent compiling and warming up.
    """
    compile_s = {}
    for v, fns in functions.items():
        start = time.perf_counter()
        for mode in ("fwd", "fwd_bwd"):
            for _ in range(max(warmup, 1)):
                tf.nest.map_structure(lambda t: t.numpy(), fns[mode](*inputs))
        compile_s[v] = time.perf_counter() - start
    times = {v: {"fwd": [], "fwd_bwd": []} for v in functions}
    # Round-robin over variants so that load from other processes hits all alike.
    for _ in range(repeats):
        for v, fns in functions.items():
            for mode in ("fwd", "fwd_bwd"):
                start = time.perf_counter()
                tf.nest.map_structure(lambda t: t.numpy(), fns[mode](*inputs))
                times[v][mode].append(1e3 * (time.perf_counter() - start))
    return times, compile_s


def results_table(results: dict, workloads: list[Workload]) -> str:
    """Markdown table: one row per workload and variant."""
    lines = [
        "| workload | description | variant | fwd median ms (min) "
        "| fwd+bwd median ms (min) | fwd+bwd / ours XLA | fwd / ours XLA |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for wl in workloads:
        times = results[wl.name]
        med = {
            v: {m: statistics.median(t) for m, t in ts.items()}
            for v, ts in times.items()
        }
        for v, ts in times.items():
            ratio = {}
            for m in ("fwd_bwd", "fwd"):
                ref = med.get(_REFERENCE, {}).get(m)
                ratio[m] = f"{med[v][m] / ref:.2f}x" if ref else "n/a"
            lines.append(
                f"| {wl.name} | {wl.description} | {VARIANTS[v][0]} (`{v}`) "
                f"| {med[v]['fwd']:.1f} ({min(ts['fwd']):.1f}) "
                f"| {med[v]['fwd_bwd']:.1f} ({min(ts['fwd_bwd']):.1f}) "
                f"| {ratio['fwd_bwd']} | {ratio['fwd']} |"
            )
    return "\n".join(lines)


def summary(results: dict, workloads: list[Workload]) -> str:
    """One line per workload: the fastest variant for fwd and for fwd+bwd."""
    lines = []
    for wl in workloads:
        med = {
            v: {m: statistics.median(t) for m, t in ts.items()}
            for v, ts in results[wl.name].items()
        }
        best = {m: min(med, key=lambda v: med[v][m]) for m in ("fwd", "fwd_bwd")}
        lines.append(
            f"- {wl.name}: fwd `{best['fwd']}` ({med[best['fwd']]['fwd']:.1f} ms), "
            f"fwd+bwd `{best['fwd_bwd']}` ({med[best['fwd_bwd']]['fwd_bwd']:.1f} ms)"
        )
    return "\n".join(lines)


def workload_table(workloads: list[Workload]) -> str:
    """Markdown table of shapes and the bytes one sampler forward must move."""
    lines = [
        "| workload | images | coords (grids stacked on H') | output "
        "| input MB | coords MB | output MB | total MB |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for wl in workloads:
        b = wl.sampler_bytes()
        shape_out = (*wl.coords_shape[:-1], wl.channels)
        lines.append(
            f"| {wl.name} | {[wl.batch, *wl.in_hw, wl.channels]} "
            f"| {list(wl.coords_shape)} | {list(shape_out)} "
            f"| {b['input'] / 1e6:.2f} | {b['coords'] / 1e6:.2f} "
            f"| {b['output'] / 1e6:.2f} | {sum(b.values()) / 1e6:.2f} |"
        )
    return "\n".join(lines)


def render(
    results: dict,
    workloads: list[Workload],
    command: str,
    checks: list[str],
    elapsed_s: float,
    version: str,
) -> str:
    """The whole docs/benchmarks.md."""
    cores = benchlib.cores()
    today = datetime.date.today().isoformat()
    check_lines = "\n".join(f"- {c}" for c in checks) or "- (skipped: `--nocheck`)"
    return f"""## Sampler

Generated by `tools/bench_sampler.py`; rerun it to regenerate this section.

- Date: {today}
- TensorFlow: {tf.__version__} (CPU), Python {platform.python_version()}
- CPU: {benchlib.cpu_model()}, {cores} cores visible to the process
- Code: {version}
- Command (from the repository root):
  `{command}`
- Wall time of the run: {elapsed_s / 60:.1f} min (compiling and checks included)

### How to read

Each cell is the median, over `--repeats` calls, of the wall time of one call in
milliseconds (the minimum is in brackets), after compiling and warming up. A call
is one whole `tf.function` step: `affine_grid` (θ → coords), the sampler, and
`loss = reduce_sum(out * upstream)` with a fixed random `upstream`; *fwd+bwd*
adds the gradients of the loss w.r.t. the images **and** θ (through
`affine_grid`). The results are fetched to the host as scalars (`.numpy()` on the
loss and on the sums of the gradients), so the time includes all the work. All
variants were measured side by side in one run, round-robin (variant after
variant in each repeat), so background load hits them alike; the machine was
shared with other jobs, so single numbers are noisy: compare ratios within a
workload rather than absolute times across runs. The ratio columns divide by the
median of "ours, XLA sampler" (`ours_xla`) on the same workload (below 1 =
faster than it).

Variants (`--variants` names in brackets):

- **ours, XLA sampler** (`ours_xla`, the reference of the ratio columns):
  `sampler.bilinear_sample(..., jit_compile=True)` (its forward and hand-written
  backward run as XLA clusters) inside a plain `tf.function` step.
- **ours, no XLA** (`ours`): `bilinear_sample(..., jit_compile=False)` in a plain
  `tf.function`.
- **ours, XLA whole step** (`ours_step_xla`, extra): the `jit_compile=False`
  sampler, with the whole step (grid, sampler, loss, gradients) compiled as one
  `tf.function(jit_compile=True)`, i.e. what a model compiled with XLA gets.
- **autodiff** (`autodiff_xla`, `autodiff`): a straightforward bilinear sampler
  in `tools/bench_sampler.py` (four `tf.gather_nd` reads, same convention:
  corner-aligned, zeros outside), gradients by TF autodiff (no custom gradient),
  with the whole step in `tf.function(jit_compile=True)`, and without XLA.

Before timing, every variant's output and gradients (w.r.t. images, coords and
θ) are checked against the autodiff baseline without XLA: forward max |diff| <
1e-4, gradients within `1e-3 |ref| + 1e-4 max |ref|`; the run aborts if one
disagrees. Bilinear sampling is not differentiable at pixel centres, and
`sampler.py` snaps positions within `2 eps (n + 1)` pixels of a centre onto it
and then takes the right-sided derivative, where the baseline takes the left one
if the position rounded just below the centre. The few points that close to a
centre (counted below) are compared one-sidedly: left out of the coordinate
gradient comparison, and their share of the θ gradient removed before θ is
compared.

### Workloads

Several transformers per image (W3: 4 per image, W4: 3 recurrent steps) are run
as **one sampler call per image batch**: the grids of one image are stacked along
the output-height axis, coords `[B, grids * H', W', 2]` (θ is `[B * grids, 6]`,
`affine_grid` gives `[B * grids, H', W', 2]` and a free reshape stacks them). This
reads each input once instead of tiling the images to batch `B * grids`, which
would copy them. The output `[B, grids * H', W', C]` reshapes (for free) to
`[B, grids, H', W', C]`.

The MB columns are the least memory traffic one sampler **forward** needs
(float32): the input read once, the coords read and the output written. Dividing
by the fwd time gives an effective bandwidth (an underestimate of the real
traffic: the four neighbour reads, grid and loss are not counted).

{workload_table(workloads)}

θ: random affine near the identity (rotation ±30°, isotropic scale 0.8-1.2,
translation ±0.2), fixed `--seed`; images uniform in [0, 1), float32.

### Results

{BEGIN_MARK}

{results_table(results, workloads)}

Fastest per workload (by median):

{summary(results, workloads)}

Agreement checks:

{check_lines}

{END_MARK}
"""


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
    # Each variant traces the same Python step once; that is not accidental retracing.
    tf.get_logger().setLevel("ERROR")
    command = (
        ".venv/bin/python tools/bench_sampler.py "
        f"--workloads={','.join(_FLAGS.workloads)} "
        f"--variants={','.join(_FLAGS.variants)} --repeats={_FLAGS.repeats} "
        f"--warmup={_FLAGS.warmup} --seed={_FLAGS.seed}"
        + ("" if _FLAGS.check else " --nocheck")
        + (f" --out={_FLAGS.out}" if _FLAGS.out != "docs/benchmarks.md" else "")
    )
    print(f"TensorFlow {tf.__version__}, {benchlib.cpu_model()}")
    print(workload_table(workloads), flush=True)
    version = benchlib.code_version("stn_tf/sampler.py", "stn_tf/transforms.py")  # before the run: files may change while it runs
    print(f"Code: {version}")
    start = time.perf_counter()
    results, checks = {}, []
    for wl in workloads:
        b = wl.sampler_bytes()
        print(
            f"{wl.name}: sampler forward moves >= {sum(b.values()) / 1e6:.1f} MB "
            f"(input {b['input'] / 1e6:.1f} + coords {b['coords'] / 1e6:.1f} "
            f"+ output {b['output'] / 1e6:.1f})",
            flush=True,
        )
        inputs = make_inputs(wl, _FLAGS.seed)
        functions = {v: make_functions(wl, v) for v in _FLAGS.variants}
        if _FLAGS.check:
            checks.append(check_agreement(wl, functions, inputs))
            print(checks[-1], flush=True)
        results[wl.name], compile_s = time_workload(
            functions, inputs, _FLAGS.repeats, _FLAGS.warmup
        )
        warm = ", ".join(f"{v} {t:.1f}" for v, t in compile_s.items())
        print(f"{wl.name}: compile + warm-up s: {warm}", flush=True)
        print(results_table({wl.name: results[wl.name]}, [wl]), flush=True)
    elapsed = time.perf_counter() - start
    text = render(results, workloads, command, checks, elapsed, version)
    print("\n" + results_table(results, workloads))
    out = benchlib.write_section(_FLAGS.out, "bench_sampler", text)
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
