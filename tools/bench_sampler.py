"""Times the sampler as users run it: TensorFlow and PyTorch each in a process of
its own, interleaved, on three cases per workload (forward, θ-only gradient, image
and θ gradients). Writes the ``bench_sampler`` section of ``docs/benchmarks.md``.

    .venv/bin/python -m tools.bench_sampler                  # ours against PyTorch
    .venv/bin/python -m tools.bench_sampler --variants=ours_xla,ours,autodiff_xla

The TensorFlow side is this module (``--side=tf``); the PyTorch side is
``tools/bench_sampler_torch.py``, run with the Python of a separate benchmark
environment (``--torch_python``; PyTorch is never a dependency of the package)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e ".[cpu]" "torch==2.13.0+cpu"

Each round starts one process per framework, in turn (A B A B ...), and each
process times every workload it is given; the report gives the median of the
rounds' medians with their min-max. Before timing, the first round's outputs and
gradients of every variant are checked against an autodiff sampler.
"""

from __future__ import annotations

import datetime
import functools
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep the C++ start-up banner out
import tensorflow as tf

_REPO = pathlib.Path(__file__).resolve().parents[1]

from stn_tf import sampler, transforms
from tools import benchlib, sampler_cases
from tools.sampler_cases import CASES, WORKLOADS, Workload

# TensorFlow variants: name -> (label, sampler fn, jit_compile of the whole step).
# The sampler fn takes (images, coords [B, grids * H', W', 2]), or for the variants
# in _FUSED, which make the grid themselves, (images, θ as matrices [B, grids, 2, 3],
# (H', W')); it returns [B, grids * H', W', C].
TF_VARIANTS = {
    "ours_xla": (
        "ours, XLA grid + sampler",
        lambda images, matrix, size: _stacked(
            sampler.sample_affine(images, matrix, size, jit_compile=True)
        ),
        False,
    ),
    "ours_xla_per_grid": (
        "ours, XLA grid + sampler, one call per grid",
        lambda images, matrix, size: _stacked(
            tf.stack(
                [
                    sampler.sample_affine(images, matrix[:, g], size, jit_compile=True)
                    for g in range(matrix.shape[1])
                ],
                1,
            )
        ),
        False,
    ),
    "separable_xla": (
        "separable dense form (attention only), XLA whole step",
        lambda images, matrix, size: _stacked(
            separable_attention_sample(images, matrix, size)
        ),
        True,
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
}
# PyTorch's forms of several grids per image (tools/bench_sampler_torch.py).
TORCH_VARIANTS = {
    "torch": "PyTorch, grids stacked along H'",
    "torch_expand": "PyTorch, images expanded to B * grids",
}
LABELS = {**{k: v[0] for k, v in TF_VARIANTS.items()}, **TORCH_VARIANTS}
_FUSED = {"ours_xla", "ours_xla_per_grid", "separable_xla"}
_ATTENTION_ONLY = {"separable_xla"}
_REFERENCE = "ours_xla"  # what the layers run for affine and attention transforms
BASELINE = "baseline"  # the TF side of --baseline's tree: before / after a change
_VENV_BENCH = (
    'python3 -m venv .venv-bench && .venv-bench/bin/pip install -e ".[cpu]" '
    '"torch==2.13.0+cpu"'
)

FLAGS = flags.FLAGS
benchlib.define_flag(
    "string",
    "device",
    "cpu",
    "PyTorch's device: cpu, or cuda (TensorFlow takes the GPU it sees).",
)
benchlib.define_flag(
    "float",
    "bandwidth_gbs",
    0.0,
    "Memory bandwidth of the floor in GB/s (an accelerator's HBM); 0: measure the "
    "host's (np.copyto).",
)
benchlib.define_flag("list", "workloads", list(WORKLOADS), "Workloads to run.")
benchlib.define_flag(
    "list",
    "variants",
    ["ours_xla", "torch", "torch_expand"],
    f"Variants to time: TensorFlow {list(TF_VARIANTS)}, PyTorch {list(TORCH_VARIANTS)}.",
)
benchlib.define_flag("integer", "rounds", 3, "Rounds: one process per framework each.")
benchlib.define_flag("integer", "repeats", 15, "Timed calls per case in each process.")
benchlib.define_flag("integer", "warmup", 2, "Untimed calls per case after compiling.")
benchlib.define_flag(
    "integer", "seed", 0, "Seed for images, θ and the upstream gradient."
)
benchlib.define_flag(
    "bool", "check", True, "Check that all variants agree (first round)."
)
benchlib.define_flag(
    "string",
    "torch_python",
    ".venv-bench/bin/python",
    "Python of the environment with PyTorch (the PyTorch processes run with it).",
)
benchlib.define_flag(
    "enum",
    "side",
    None,
    ["tf"],
    "Internal: run as the TensorFlow process of one round.",
)
benchlib.define_flag(
    "string",
    "baseline",
    "",
    "Another checkout (e.g. `git worktree add /tmp/before HEAD`) whose TF side runs "
    "in the same rounds, its variants named <variant>@baseline: a change measured "
    "against the code before it.",
)
benchlib.define_flag("string", "side_out", "", "Internal: the side's JSON of times.")
benchlib.define_flag(
    "string", "dump", "", "Internal: the side's folder of check arrays."
)
benchlib.define_flag(
    "string",
    "out",
    "docs/benchmarks.md",
    "Markdown file whose bench_sampler section to write.",
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


def separable_attention_sample(images, matrix, output_size):
    """Bilinear sampling of axis-aligned windows as two matrix products per image
    and window, ``out = Wy · U · Wxᵀ`` (issue 34's idea 2), gradients by autodiff.

    ``Wy [B, G, H', H]`` holds each output row's bilinear weights over the input
    rows (zero outside the image), ``Wx`` the columns'; the same convention as
    ``sampler.bilinear_sample`` (corner-aligned, zeros outside) up to float
    rounding. A measured idea, not the package's sampler: a non-finite pixel
    reaches every output of its rows (0 * inf), and no position is snapped.

    Args:
        images: ``[B, H, W, C]``.
        matrix: ``[B, G, 2, 3]`` axis-aligned maps ``[[sx, 0, tx], [0, sy, ty]]``
            (the off-diagonal entries are not read).
        output_size: ``(H', W')``.

    Returns:
        ``[B, G, H', W', C]``.
    """
    shape = images.shape

    def weights(scale, shift, out_n, in_n):  # [B, G] -> [B, G, out_n, in_n]
        target = tf.linspace(-1.0, 1.0, out_n)
        pos = (scale[..., None] * target + shift[..., None] + 1.0) * (in_n - 1) / 2
        return tf.nn.relu(
            1.0 - tf.abs(pos[..., None] - tf.range(in_n, dtype=pos.dtype))
        )

    wy = weights(matrix[:, :, 1, 1], matrix[:, :, 1, 2], output_size[0], shape[1])
    wx = weights(matrix[:, :, 0, 0], matrix[:, :, 0, 2], output_size[1], shape[2])
    rows = tf.einsum("bgih,bhwc->bgiwc", wy, images)
    return tf.einsum("bgiwc,bgjw->bgijc", rows, wx)


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


def make_functions(wl: Workload, variant: str, inputs) -> dict[str, Callable]:
    """The three timed steps (scalar results) and the check of a TF variant.

    Args:
        wl: the workload.
        variant: a ``TF_VARIANTS`` name.
        inputs: ``sampler_cases.make_inputs(wl, ...)``, bound to the steps.

    Returns:
        ``{"fwd", "theta_grad", "full_grad", "check"}``, each called without
        arguments; ``check`` returns host arrays.
    """
    _, sample_fn, jit_step = TF_VARIANTS[variant]
    fused = variant in _FUSED
    inputs = tuple(tf.constant(a) for a in inputs)

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

    def theta_grad(images, theta, upstream):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            _, loss = forward(images, theta, upstream)
        return loss, tf.reduce_sum(tape.gradient(loss, theta))

    def full_grad(images, theta, upstream):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            _, loss = forward(images, theta, upstream)
        grad_images, grad_theta = tape.gradient(loss, [images, theta])
        # Scalars only, so fetching them costs nothing but needs all the work done.
        return loss, tf.reduce_sum(grad_images), tf.reduce_sum(grad_theta)

    def check(images, theta, upstream):
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

    def host(fn):
        step = functools.partial(tf.function(fn, jit_compile=jit_step), *inputs)
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), step())

    steps = {"fwd": fwd, "theta_grad": theta_grad, "full_grad": full_grad}
    return {name: host(fn) for name, fn in {**steps, "check": check}.items()}


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


def check_agreement(wl: Workload, results: dict[str, dict[str, np.ndarray]]) -> str:
    """Compares every variant's output and gradients (``results``: each variant's
    ``check`` arrays, written by its process) with ``autodiff`` (or the first).

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
        # Attention windows have no off-diagonal entries, so a sampler made for
        # them (separable_xla) gives those no gradient: compare the entries they have.
        entries = [0, 2, 4, 5] if wl.theta == "attention" else slice(None)
        gt = (got["grad_theta"] - knot_part)[:, entries]
        ok, worst_ratio = _close(gt, ref["grad_theta"][:, entries])
        worst["grad_theta"] = max(worst["grad_theta"], worst_ratio)
        if not ok:
            fail(
                variant,
                "grad_theta",
                gt,
                ref["grad_theta"][:, entries],
                " (after removing the knot points' share)",
            )
    return (
        f"{wl.name}: {', '.join(results)} agree with {ref_name}: forward max |diff| "
        f"{worst_out:.1e}; gradients use at most {worst['grad_images']:.0%} (images), "
        f"{worst['grad_coords']:.0%} (coords), {worst['grad_theta']:.0%} (θ) of their "
        f"tolerance; {int(knots.sum())} of {knots.size} points lie next to a pixel "
        "centre and were compared one-sidedly"
    )


def workload_table(workloads: list[Workload]) -> str:
    """Markdown table of shapes and the least bytes the sampler moves per case."""
    lines = [
        (
            "| workload | description | images | coords (grids stacked on H') "
            "| output | input MB | coords MB | output MB | fwd MB | θ-grad MB | full-grad MB |"
        ),
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
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
            f"| {floor['theta_grad'] / 1e6:.2f} | {floor['full_grad'] / 1e6:.2f} |"
        )
    return "\n".join(lines)


# === The rounds: one process per framework, in turn ===


def side_command(framework: str, variants: list[str], out: str, dump: str) -> list[str]:
    """The command of one framework's process of a round."""
    common = [
        f"--variants={','.join(variants)}",
        f"--workloads={','.join(FLAGS.workloads)}",
        f"--repeats={FLAGS.repeats}",
        f"--warmup={FLAGS.warmup}",
        f"--seed={FLAGS.seed}",
        f"--dump={dump}",
    ]
    if framework == "torch":
        common.append(f"--device={FLAGS.device}")
    if framework in ("tf", BASELINE):  # the baseline: the same, from its tree
        return [
            sys.executable,
            "-m",
            "tools.bench_sampler",
            "--side=tf",
            f"--side_out={out}",
            *common,
        ]
    return [
        FLAGS.torch_python,
        "-m",
        "tools.bench_sampler_torch",
        f"--out={out}",
        *common,
    ]


def run_rounds(sides: dict[str, list[str]], folder: pathlib.Path) -> tuple[list, dict]:
    """``FLAGS.rounds`` rounds, each a process per framework in turn (the order
    alternates, A B then B A, so neither always follows the other). Returns each
    round's ``{framework: side JSON}`` and the first round's check arrays
    (``{workload: {variant: arrays}}``, empty with ``--nocheck``)."""

    def command(framework, r, out):
        dump = str(folder / "check" / framework) if (r == 0 and FLAGS.check) else ""
        args = side_command(framework, sides[framework], str(out), dump)
        return args, FLAGS.baseline if framework == BASELINE else _REPO

    rounds = benchlib.run_rounds(list(sides), FLAGS.rounds, folder, command)
    arrays = {}
    if FLAGS.check:
        for name in FLAGS.workloads:
            arrays[name] = {
                path.stem.split("-", 1)[1]
                + (f"@{BASELINE}" if path.parent.name == BASELINE else ""): dict(
                    np.load(path)
                )
                for side in sides
                for path in sorted((folder / "check" / side).glob(f"{name}-*.npz"))
            }
    return rounds, arrays


def aggregate(rounds: list) -> dict:
    """``{workload: {variant: {case: [median of each round]}}}``."""
    medians = {}
    for result in rounds:
        for framework, side in result.items():
            suffix = f"@{BASELINE}" if framework == BASELINE else ""
            for name, variants in side["times"].items():
                for variant, cases in variants.items():
                    slot = medians.setdefault(name, {}).setdefault(variant + suffix, {})
                    for case, times in cases.items():
                        slot.setdefault(case, []).append(statistics.median(times))
    return medians


def best_torch(medians: dict, name: str, case: str) -> str | None:
    """The fastest PyTorch form of a workload's case (median of the rounds)."""
    forms = [v for v in TORCH_VARIANTS if v in medians[name]]
    return min(
        forms, key=lambda v: statistics.median(medians[name][v][case]), default=None
    )


def ratio_table(medians: dict, workloads: list[Workload], bandwidth: float) -> str:
    """Per workload and case: ours (``ours_xla``), PyTorch's best form, the ratio."""
    header = [
        "workload",
        "case",
        f"`{_REFERENCE}` ms",
        "PyTorch ms (best form)",
        "ours / PyTorch",
        "floor ms",
    ]
    rows = []
    for wl in workloads:
        floor = {c: 1e3 * b / bandwidth for c, b in wl.floor_bytes().items()}
        for case, what in CASES.items():
            ours = medians[wl.name].get(_REFERENCE, {}).get(case)
            form = best_torch(medians, wl.name, case)
            theirs = medians[wl.name][form][case] if form else None
            ratio = (
                benchlib.span([a / b for a, b in zip(ours, theirs)], "{:.2f}x")
                if ours and theirs
                else "–"
            )
            rows.append(
                [
                    wl.name,
                    what,
                    benchlib.span(ours) if ours else "–",
                    f"{benchlib.span(theirs)} (`{form}`)" if theirs else "–",
                    ratio,
                    f"{floor[case]:.3g}",
                ]
            )
    return _markdown(header, rows)


def variant_table(medians: dict, workloads: list[Workload]) -> str:
    """Every variant's median ms (min-max over the rounds), one row per variant."""
    header = ["workload", "variant"] + [f"{what} ms" for what in CASES.values()]
    rows = []
    for wl in workloads:
        for variant, cases in medians[wl.name].items():
            rows.append(
                [wl.name, f"{_label(variant)} (`{variant}`)"]
                + [benchlib.span(cases[c]) for c in CASES]
            )
    return _markdown(header, rows)


def _label(variant: str) -> str:
    name, _, tree = variant.partition("@")
    return LABELS[name] + (f", baseline tree `{FLAGS.baseline}`" if tree else "")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 2 + "---:|" * (len(header) - 2),
    ]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render(medians, rounds, workloads, checks, elapsed_s, version, bandwidth) -> str:
    """The bench_sampler section of docs/benchmarks.md."""
    frameworks = {k: v["framework"] for k, v in rounds[0].items()}
    command = (
        f"{_interpreter()} -m tools.bench_sampler --workloads={','.join(FLAGS.workloads)} "
        f"--variants={','.join(FLAGS.variants)} --rounds={FLAGS.rounds} "
        f"--repeats={FLAGS.repeats} --warmup={FLAGS.warmup} --seed={FLAGS.seed}"
        + ("" if FLAGS.check else " --nocheck")
        + (f" --device={FLAGS.device}" if FLAGS.device != "cpu" else "")
        + (f" --baseline={FLAGS.baseline}" if FLAGS.baseline else "")
        + (f" --bandwidth_gbs={FLAGS.bandwidth_gbs:g}" if FLAGS.bandwidth_gbs else "")
    )
    check_lines = "\n".join(f"- {c}" for c in checks) or "- (skipped: `--nocheck`)"
    return f"""## Sampler

Generated by `tools/bench_sampler.py`; rerun it to regenerate this section. How
it measures is written above it ("Sampler: method").

- Date: {datetime.date.today().isoformat()}
- Processes: {", ".join(f"{k}: {v}" for k, v in frameworks.items())}; Python {platform.python_version()}
- CPU: {benchlib.cpu_model()}, {benchlib.cores()} cores visible to each process
- Memory bandwidth of the floor: {bandwidth / 1e9:.1f} GB/s ({"given, `--bandwidth_gbs`" if FLAGS.bandwidth_gbs else "measured in this run: `np.copyto` of 256 MiB of float32, bytes read + written, median of 9; one thread"})
- Code: {version}
- Command (from the repository root): `{command}`
- {FLAGS.rounds} rounds, each one process per framework in turn (the order alternating),
  {FLAGS.repeats} timed calls per case in each; cells: the median of the rounds'
  medians, with their min–max. Wall time {elapsed_s / 60:.1f} min.

### Workloads

{workload_table(workloads)}

θ: random affine near the identity (rotation ±30°, isotropic scale 0.8-1.2,
translation ±0.2); on the A workloads axis-aligned attention windows (scale
0.3-0.9, translation ±0.3); fixed `--seed`; images uniform in [0, 1), float32.

### Results

Ours (`{_REFERENCE}`, the layers' path) against PyTorch's faster form for each case.
The ratio's range is that of the per-round ratios; *floor*: the least bytes the
sampler moves in the case, at the measured bandwidth.

{ratio_table(medians, workloads, bandwidth)}

Every variant:

{variant_table(medians, workloads)}

Agreement checks (first round, each variant's own process):

{check_lines}
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
    unknown = (set(FLAGS.workloads) - set(WORKLOADS)) | (
        set(FLAGS.variants) - set(LABELS)
    )
    if unknown:
        raise app.UsageError(
            f"Unknown workloads/variants {sorted(unknown)}; known: "
            f"{sorted(WORKLOADS)}, {sorted(LABELS)}"
        )
    tf_variants = [v for v in FLAGS.variants if v in TF_VARIANTS]
    if FLAGS.side == "tf":  # one round's TensorFlow process
        tf.get_logger().setLevel("ERROR")
        sampler_cases.run_side(
            make_functions,
            framework=benchlib.tensorflow_version(),
            variants=tf_variants,
            workloads=FLAGS.workloads,
            repeats=FLAGS.repeats,
            warmup=FLAGS.warmup,
            seed=FLAGS.seed,
            out=FLAGS.side_out,
            dump=FLAGS.dump,
            applies=lambda wl, variant: (
                variant not in _ATTENTION_ONLY or wl.theta == "attention"
            ),
        )
        return
    sides = {"tf": tf_variants} if tf_variants else {}
    if FLAGS.baseline:
        if not (pathlib.Path(FLAGS.baseline) / "tools" / "bench_sampler.py").exists():
            raise app.UsageError(
                f"--baseline={FLAGS.baseline} is not a checkout of this repository "
                "(no tools/bench_sampler.py in it)."
            )
        sides[BASELINE] = tf_variants
    torch_variants = [v for v in FLAGS.variants if v in TORCH_VARIANTS]
    if torch_variants:
        if not (_REPO / FLAGS.torch_python).exists():
            raise app.UsageError(
                f"--torch_python={FLAGS.torch_python} does not exist: the PyTorch "
                f"variants {torch_variants} need the benchmark environment (set it "
                f"up from the repository root with: {_VENV_BENCH}), or leave them "
                "out of --variants."
            )
        sides["torch"] = torch_variants
    workloads = [WORKLOADS[w] for w in FLAGS.workloads]
    print(workload_table(workloads), flush=True)
    version = benchlib.code_version("stn_tf/sampler.py", "stn_tf/transforms.py")
    start = time.perf_counter()
    bandwidth = 1e9 * FLAGS.bandwidth_gbs or copy_bandwidth()
    print(f"Memory bandwidth of the floor: {bandwidth / 1e9:.1f} GB/s")
    with tempfile.TemporaryDirectory() as folder:
        rounds, arrays = run_rounds(sides, pathlib.Path(folder))
    checks = [check_agreement(wl, arrays[wl.name]) for wl in workloads if arrays]
    for line in checks:
        print(line)
    medians = aggregate(rounds)
    elapsed = time.perf_counter() - start
    print(ratio_table(medians, workloads, bandwidth))
    text = render(medians, rounds, workloads, checks, elapsed, version, bandwidth)
    out = benchlib.write_section(FLAGS.out, "bench_sampler", text)
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
