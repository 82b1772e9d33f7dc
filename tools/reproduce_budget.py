"""What the training budget costs: test error against examples seen, for the CNN and
the ST-CNN (affine) on RTS, each from one long run evaluated on the fixed test set
along the way; writes its section of docs/results.md and a figure.

    .venv/bin/python -m tools.reproduce_budget --mnist_dir=../shared/data/mnist-full

Each model trains once for ``--steps`` at ``--batch_size`` (by default 7,500 steps
at 256: 1.92M examples, 10x the 192k of the first CPU reproductions), with the
reproductions' SGD recipe, and is evaluated on the whole test set every
``--steps / --points`` steps (``--eval_every`` of the training command). The paper's
errors (0.8 % and 0.5 %, 150k steps at 256: 38.4M examples) are drawn as lines.

A point inside a run is not what a run of that budget would reach: the learning
rate falls by 10x at 1/3 and 2/3 of the long run, so the early points are measured
at the full rate. The last point is a finished run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from absl import app, flags

from stn_tf import cli
from tools import reprolib

# STN paper, Table 1 (left), RTS, % test error; and its budget in examples.
PAPER = {"cnn": 0.8, "st_cnn": 0.5}
PAPER_EXAMPLES = 150_000 * 256
# The first CPU reproductions' budget (1,500 steps at batch 128), and Table 1's now.
FIRST_EXAMPLES = 1_500 * 128
LABELS = {"cnn": "CNN", "st_cnn": "ST-CNN Aff"}

reprolib.define_flag(
    "list", "models", ["cnn", "st_cnn"], "Models: cnn and/or st_cnn (affine)."
)
reprolib.define_flag(
    "integer", "points", 16, "Evaluations along each run.", lower_bound=1
)
reprolib.define_output_flags(
    "reproduce_budget",
    "docs/images/results_budget.png",
    "Figure of test error against examples seen.",
)
FLAGS = flags.FLAGS


def run(model: str) -> dict:
    config = reprolib.run_config(
        FLAGS.steps,
        reprolib.recipe(),
        dataset=FLAGS.dataset,
        model=model,
        transform="affine",
        eval_every=max(FLAGS.steps // FLAGS.points, 1),
    )
    return reprolib.train_or_read(config, Path(FLAGS.root) / f"{FLAGS.dataset}_{model}")


def curve(results: dict) -> list[tuple[int, float]]:
    """(examples seen, % test error) of one run's evaluations."""
    return [
        (p["step"] * FLAGS.batch_size, 100 * p["test_error"]) for p in results["curve"]
    ]


def draw(curves: dict, out: str | Path) -> Path:
    """Test error against examples seen, both axes logarithmic, with the paper's
    errors as horizontal lines and the budgets as vertical ones."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    colours = {"cnn": "tab:blue", "st_cnn": "tab:red"}
    for model, points in curves.items():
        x, y = zip(*points)
        ax.plot(x, y, "o-", color=colours[model], label=f"{LABELS[model]}, ours")
        ax.axhline(
            PAPER[model],
            color=colours[model],
            linestyle="--",
            label=f"{LABELS[model]}, the paper ({PAPER[model]} %, 38.4M examples)",
        )
    for examples, name in (
        (FIRST_EXAMPLES, "first CPU budget"),
        (2 * FIRST_EXAMPLES, "Table 1 budget"),
        (PAPER_EXAMPLES, "the paper's budget"),
    ):
        ax.axvline(examples, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            name,
            (examples, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="grey",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("% test error (10,000 fixed test examples)")
    ax.set_title(f"{FLAGS.dataset}: test error along one run of {FLAGS.steps:,} steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return reprolib.save_figure(fig, out)


def table(curves: dict) -> str:
    steps = sorted({x for points in curves.values() for x, _ in points})
    rows = []
    for x in steps:
        cells = []
        for points in curves.values():
            error = dict(points).get(x)
            cells.append("–" if error is None else f"{error:.2f}")
        rows.append([f"{x:,}", f"{x / FIRST_EXAMPLES:.1f}x", *cells])
    header = ["examples seen", "/ first budget"] + [
        f"{LABELS[m]} % (paper {PAPER[m]})" for m in curves
    ]
    return reprolib.markdown_table(header, rows)


@cli.preemptible()
def main(argv):
    del argv
    # The curve's defaults, here and not at import: the tests import tools.
    reprolib.set_defaults(
        **{
            **reprolib.SGD_BUDGET,
            "steps": 7_500,
            "batch_size": 256,
            "dataset": "mnist_rts",
        }
    )
    for name in FLAGS.models:
        if name not in PAPER:
            raise app.UsageError(
                f"--models: expected cnn and/or st_cnn. Received: {name!r}"
            )
    began = time.perf_counter()
    results = {model: run(model) for model in FLAGS.models}
    elapsed = time.perf_counter() - began
    curves = {model: curve(r) for model, r in results.items()}
    picture = draw(curves, FLAGS.figure)
    ends = "; ".join(
        f"{LABELS[m]} {points[-1][1]:.2f} % ({points[-1][1] / PAPER[m]:.1f}x the "
        f"paper's {PAPER[m]} %)"
        for m, points in curves.items()
    )
    command = (
        ".venv/bin/python -m tools.reproduce_budget "
        f"--models={','.join(FLAGS.models)} --dataset={FLAGS.dataset} "
        f"--steps={FLAGS.steps} --batch_size={FLAGS.batch_size} --points={FLAGS.points} "
        f"--learning_rate={FLAGS.learning_rate} --momentum={FLAGS.momentum} "
        f"--seed={FLAGS.seed} --precision={FLAGS.precision}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    examples = FLAGS.steps * FLAGS.batch_size
    text = f"""## What the budget costs: test error against examples seen (RTS)

{reprolib.header("reproduce_budget", command, elapsed, results.values())}
- Budget: one run per model of {FLAGS.steps:,} steps at batch {FLAGS.batch_size}
  ({examples:,} examples, {examples / FIRST_EXAMPLES:.0f}x the first CPU budget of
  {FIRST_EXAMPLES:,}; the paper: {PAPER_EXAMPLES:,}), {FLAGS.precision} compute, SGD with momentum
  {FLAGS.momentum}, learning rate {FLAGS.learning_rate} divided by 10 at 1/3 and 2/3
  of the run; evaluated on the whole fixed test set every
  {max(FLAGS.steps // FLAGS.points, 1):,} steps. Mean time per run
  {sum(r["train_wall_time_s"] for r in results.values()) / 60 / len(results):.0f} min.
- Where the curves end: {ends}.
- A point inside the run is measured at that run's learning rate at the time (full
  rate for the first third), so it is above what a run of that budget would reach.

% test error at each evaluation:

{table(curves)}
{reprolib.picture_link(picture, FLAGS.out, "Test error against examples seen", "Test error of one long run per model against the examples it had seen (both axes logarithmic); dashed: the paper's errors after 38.4M examples; dotted: the first CPU budget and Table 1's.")}"""
    out = reprolib.write(FLAGS.out, "reproduce_budget", text)
    print(table(curves))
    print(f"Wrote {out} and {os.path.relpath(picture)} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
