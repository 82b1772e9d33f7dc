"""Reproduces Table 1 (left) of the STN paper at a CPU budget; writes docs/results.md.

    .venv/bin/python -m tools.reproduce_mnist                      # the whole grid
    .venv/bin/python -m tools.reproduce_mnist --models=cnn,st_cnn --transforms=affine

Trains every model x distortion (R, RTS, P read per axis and as a distance, E; TC
with the affine transformer) with
``stn_tf.train.train_and_evaluate``, one workdir per run under ``--root``. A run
whose ``results.json`` already has the requested steps is not trained again, and an
interrupted run resumes from its checkpoint: rerun the same command to finish a grid.
Then it writes the table of test errors next to the paper's, and a figure of what
each ST-CNN's transformer learned, to ``--out`` and ``--figure``.
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from pathlib import Path

from absl import app, flags

_REPO = Path(__file__).resolve().parents[1]

from stn_tf import cli, models
from tools import benchlib, reprolib

DISTORTIONS = {
    "mnist_r": "R",
    "mnist_rts": "RTS",
    "mnist_p": "P",
    "mnist_p_distance": "P dist",
    "mnist_e": "E",
    "mnist_tc": "TC",
}
# The paper's column of each of ours: both readings of P are the paper's P.
PAPER_COLUMN = {"P dist": "P"}
# STN paper, Table 1 (left) and §4.1 (TC), % test error.
PAPER = {
    ("fcn", None): {"R": 2.1, "RTS": 5.2, "P": 3.1, "E": 3.2, "TC": 13.2},
    ("cnn", None): {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 1.4, "TC": 3.5},
    ("st_fcn", "affine"): {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 2.7, "TC": 2.0},
    ("st_fcn", "projective"): {"R": 1.3, "RTS": 0.9, "P": 1.4, "E": 2.6},
    ("st_fcn", "tps"): {"R": 1.1, "RTS": 0.8, "P": 1.4, "E": 2.4},
    ("st_cnn", "affine"): {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.2, "TC": 1.7},
    ("st_cnn", "projective"): {"R": 0.8, "RTS": 0.6, "P": 0.8, "E": 1.3},
    ("st_cnn", "tps"): {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.1},
}
# The Columbia replication (seed 002_154f14aec6bcded2.txt, Table 3, the test
# errors): affine transformers only, 50k training digits, "vanilla gradient
# descent" for 40k iterations at batch 256 and learning rate 0.01, one run each.
COLUMBIA = {
    ("fcn", None): {"R": 7.850, "RTS": 20.58, "P": 10.94},
    ("cnn", None): {"R": 4.41, "RTS": 8.11, "P": 6.99},
    ("st_fcn", "affine"): {"R": 5.38, "RTS": 6.90, "P": 8.27},
    ("st_cnn", "affine"): {"R": 3.37, "RTS": 6.33, "P": 6.44},
}

reprolib.define_flag(
    "list", "models", ["fcn", "cnn", "st_fcn", "st_cnn"], "Models to train."
)
reprolib.define_flag(
    "list",
    "transforms",
    ["affine", "projective", "tps"],
    "Transforms of the ST models.",
)
reprolib.define_flag("list", "datasets", list(DISTORTIONS), "Distortions to train on.")
reprolib.define_flag(
    "list",
    "seeds",
    ["0"],
    "Seeds of every run on --seeded_datasets (every other run trains once, at --seed).",
)
reprolib.define_flag(
    "list",
    "seeded_datasets",
    list(DISTORTIONS),
    "Where --seeds apply.",
)
reprolib.define_flag(
    "string", "section", "reproduce_mnist", "Name of the section (one per budget, say)."
)
reprolib.define_flag(
    "bool",
    "recorded_only",
    False,
    "Train nothing: write the tables from the runs already finished (in --root or "
    "recorded), leaving the other cells empty.",
)
reprolib.define_flag(
    "string",
    "readme",
    "",
    "Markdown file whose summary table (section reproduce_mnist_summary) to rewrite "
    "with the main section (--section=reproduce_mnist), e.g. README.md; empty: none.",
)
# reprolib's run flags (--steps, --batch_size, --learning_rate, --momentum,
# --seed, --mnist_dir, ...), with this tool's CPU-budget defaults.
reprolib.define_output_flags(
    "reproduce_mnist",
    "docs/images/results_mnist.png",
    "Figure of the ST-CNN transformers.",
)
FLAGS = flags.FLAGS


def grid() -> list[tuple[str, str | None, str, int]]:
    """(model, transform or None, dataset, seed) of every run asked for."""
    runs = []
    for dataset in FLAGS.datasets:
        for model in FLAGS.models:
            if not models.get_model(model).uses_transform:
                pairs = [(model, None)]
            else:
                names = ["affine"] if dataset == "mnist_tc" else FLAGS.transforms
                pairs = [(model, t) for t in names]
            seeded = dataset in FLAGS.seeded_datasets
            seeds = [int(s) for s in FLAGS.seeds] if seeded else [FLAGS.seed]
            runs.extend((*pair, dataset, seed) for pair in pairs for seed in seeds)
    return runs


def workdir(model, transform, dataset, seed) -> Path:
    name = f"{dataset}_{model}" + (f"_{transform}" if transform else "")
    return Path(FLAGS.root) / (name + (f"_s{seed}" if seed else ""))


def config(model, transform, dataset, seed):
    return reprolib.run_config(
        FLAGS.steps,
        reprolib.recipe(),
        dataset=dataset,
        model=model,
        transform=transform or "affine",
        seed=seed,
    )


def run_one(model, transform, dataset, seed) -> dict:
    run = (model, transform, dataset, seed)
    return reprolib.train_or_read(config(*run), workdir(*run))


_SHORT = {"affine": "Aff", "projective": "Proj", "tps": "TPS"}


def _label(model, transform):
    return model.upper().replace("_", "-") + (
        f" {_SHORT[transform]}" if transform else ""
    )


def errors(results: dict, model, transform, dataset) -> list[float]:
    """% test errors of every seed of one cell."""
    return [
        100 * r["test_error"]
        for (m, t, d, _), r in results.items()
        if (m, t, d) == (model, transform, dataset)
    ]


def _paper(paper_errors: dict, col: str) -> float | None:
    return paper_errors.get(PAPER_COLUMN.get(col, col))


def _cell(values: list[float], paper: float | None) -> str:
    if not values:
        return "–"
    text = reprolib.mean_sd(values)
    if paper:
        text += f" ({statistics.fmean(values) / paper:.1f}x)"
    return text


def table(results: dict) -> str:
    cols = [DISTORTIONS[d] for d in FLAGS.datasets]
    header = ["model"]
    for c in cols:
        header += [f"{c} ours", f"{c} paper"]
    rows = []
    for key, paper_errors in PAPER.items():
        model, transform = key
        if model not in FLAGS.models or (
            transform and transform not in FLAGS.transforms
        ):
            continue
        cells, params, minutes = [], set(), []
        for dataset, col in zip(FLAGS.datasets, cols):
            paper = _paper(paper_errors, col)
            cells += [
                _cell(errors(results, model, transform, dataset), paper),
                "–" if paper is None else f"{paper}",
            ]
        for (m, t, _, _), r in results.items():
            if (m, t) == key:
                params.add(r["parameters"])
                minutes.append(r["train_wall_time_s"] / 60)
        span = f"{min(params):,}–{max(params):,}" if params else "–"
        mins = f"{sum(minutes) / len(minutes):.1f}" if minutes else "–"
        rows.append([_label(model, transform), *cells, span, mins])
    return reprolib.markdown_table(header + ["params", "min/run"], rows)


def columbia_table(results: dict) -> str:
    """The paper, the Columbia replication and ours, side by side, on the cells
    Columbia reports (ours: mean ± sd over the seeds, and how many)."""
    cols = [
        (d, DISTORTIONS[d])
        for d in FLAGS.datasets
        if PAPER_COLUMN.get(DISTORTIONS[d], DISTORTIONS[d]) in "R RTS P".split()
    ]
    header = ["model"]
    for _, col in cols:
        header += [f"{col} paper", f"{col} Columbia", f"{col} ours"]
    rows = []
    for key, columbia in COLUMBIA.items():
        cells = []
        for dataset, col in cols:
            ours = errors(results, *key, dataset)
            seeds = f" ({len(ours)} seeds)" if len(ours) > 1 else " (1 seed)"
            cells += [
                f"{_paper(PAPER[key], col)}",
                f"{_paper(columbia, col)}",
                _cell(ours, None) + seeds if ours else "–",
            ]
        rows.append([_label(*key), *cells])
    return reprolib.markdown_table(header, rows)


def summary(results: dict) -> str:
    """The README's table: ours (mean ± sd over seeds) and the paper's, per cell."""
    cols = [DISTORTIONS[d] for d in FLAGS.datasets]
    rows = []
    for (model, transform), paper_errors in PAPER.items():
        cells = []
        for dataset, col in zip(FLAGS.datasets, cols):
            values = errors(results, model, transform, dataset)
            paper = _paper(paper_errors, col)
            if not values:
                cells.append("")
                continue
            cell = reprolib.mean_sd(values)
            cells.append(cell + (f" ({paper})" if paper is not None else ""))
        if any(cells):
            rows.append([_label(model, transform), *cells])
    return reprolib.markdown_table(["% test error, ours (paper)", *cols], rows)


def verdicts(results: dict) -> list[str]:
    """Does each ST model beat its base model? Claimed only where every seed of
    the ST model errs less than every seed of the base (with one seed each, said
    to be one seed)."""
    out = []
    for base, st in (("cnn", "st_cnn"), ("fcn", "st_fcn")):
        for dataset in FLAGS.datasets:
            b = errors(results, base, None, dataset)
            for transform in ("affine", "projective", "tps"):
                s = errors(results, st, transform, dataset)
                if not (b and s):
                    continue
                out.append(
                    f"{reprolib.verdict(s, b)}: {_label(st, transform)} "
                    f"{_cell(s, None)} % vs {_label(base, None)} {_cell(b, None)} % "
                    f"on {DISTORTIONS[dataset]} {reprolib.seed_count(s, b)}"
                )
    return out


def figure(results: dict) -> Path | None:
    """The ST-CNN (affine) transformer pictures of each distortion, stacked (none
    with ``--figure=``)."""
    if not FLAGS.figure:
        return None
    runs = [("st_cnn", "affine", d, FLAGS.seed) for d in FLAGS.datasets]
    return reprolib.stack_pictures(
        [reprolib.picture(config(*run), workdir(*run)) for run in runs], FLAGS.figure
    )


@cli.preemptible()
def main(argv):
    del argv
    # The CPU budget's defaults, here and not at import: the tests import tools.
    reprolib.set_defaults(**reprolib.SGD_BUDGET)
    runs = grid()
    print(
        f"{len(runs)} runs of {FLAGS.steps} steps at batch {FLAGS.batch_size} under {FLAGS.root}"
    )
    start = time.perf_counter()
    results = {}
    for i, run in enumerate(runs):
        model, transform, dataset, seed = run
        print(
            f"[{i + 1}/{len(runs)}] {_label(model, transform)} on {dataset}, seed {seed}",
            flush=True,
        )
        if FLAGS.recorded_only:
            done = reprolib.read(config(*run), workdir(*run))
            if done is None:
                print("  not finished: left out (--recorded_only)")
                continue
            results[run] = done
        else:
            results[run] = run_one(*run)
    elapsed = time.perf_counter() - start
    picture = figure(results)
    command = (
        ".venv/bin/python -m tools.reproduce_mnist "
        f"--models={','.join(FLAGS.models)} --transforms={','.join(FLAGS.transforms)} "
        f"--datasets={','.join(FLAGS.datasets)} --steps={FLAGS.steps} --batch_size={FLAGS.batch_size} "
        f"--learning_rate={FLAGS.learning_rate} --momentum={FLAGS.momentum} --seed={FLAGS.seed} "
        f"--seeds={','.join(FLAGS.seeds)} --seeded_datasets={','.join(FLAGS.seeded_datasets)} "
        f"--precision={FLAGS.precision}"
        + (f" --section={FLAGS.section}" if FLAGS.section != "reproduce_mnist" else "")
        + (f" --readme={FLAGS.readme}" if FLAGS.readme else "")
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    seeded = [DISTORTIONS[d] for d in FLAGS.datasets if d in FLAGS.seeded_datasets]
    seeds = (
        f"seeds {', '.join(FLAGS.seeds)} on {', '.join(seeded)} (mean ± sd over "
        "the seeds recorded, their number in the verdicts)"
        + (
            f", seed {FLAGS.seed} elsewhere"
            if len(seeded) < len(FLAGS.datasets)
            else ""
        )
        if len(FLAGS.seeds) > 1 and seeded
        else "one seed"
    )
    optimizer = f"SGD with momentum {FLAGS.momentum}" if FLAGS.momentum else "plain SGD"
    digits = reprolib.data_origin(next(iter(results.values()))) if results else {}
    title = "" if FLAGS.section == "reproduce_mnist" else f": {FLAGS.section}"
    text = f"""## Distorted MNIST (STN paper, Table 1 left){title}

Generated by `tools/reproduce_mnist.py`; rerun it to regenerate this section.

- Date: {datetime.date.today().isoformat()}; CPU: {benchlib.cpu_model()}, {benchlib.cores()} cores
- Command: `{command}`
- Budget: {FLAGS.steps} steps at batch {FLAGS.batch_size} per run (the paper: 150k at 256),
  {FLAGS.precision} compute, {optimizer}, learning rate {FLAGS.learning_rate} divided by 10 at 1/3
  and 2/3 of the steps; {seeds} (the paper averages three). Wall time of this invocation
  {elapsed / 60:.0f} min (finished runs are read back, from `{FLAGS.root}` or from their
  records in `{FLAGS.records}`, not retrained).
- Data: {digits.get("train", "?")}; tested on {digits.get("test", "?")}.

% test error, ours next to the paper's, with ours / paper in brackets:

{table(results)}

Does each spatial transformer network beat its base network?

{chr(10).join(f"- {v}" for v in verdicts(results)) or "- (no pairs in this grid)"}
"""
    if FLAGS.section == "reproduce_mnist":
        text += f"""
Beside the Columbia replication (seed `002_154f14aec6bcded2.txt`, Table 3, test
errors), which trained each model once with affine transformers only, on 50k training
digits, with "vanilla gradient descent for 40,000 epochs" (40k iterations, its §5.2) at
batch 256 and learning rate 0.01; it reads P as "stretching the corners of the digit by
an amount sampled from a normal distribution zero mean and five-pixel standard
deviation", with no more detail, and does not say which reading it ran. Ours: this
section's runs, P read per axis (`mnist_p`) and as a distance (`mnist_p_distance`),
% test error.

{columbia_table(results)}
"""
    if picture:
        text += f"""
![What each ST-CNN (affine) learned, one row block per distortion]({os.path.relpath(picture, Path(FLAGS.out).parent)})

*Test inputs of each distortion with the sampling grid of the trained ST-CNN's affine
transformer drawn on them, and the transformer's outputs (`transformer.png` of each run).*
"""
    out = reprolib.write(FLAGS.out, "reproduce_mnist", text, section=FLAGS.section)
    if FLAGS.readme and FLAGS.section == "reproduce_mnist":
        reprolib.write(
            FLAGS.readme,
            "reproduce_mnist",
            f"{summary(results)}\n\n*{FLAGS.steps:,} steps at batch "
            f"{FLAGS.batch_size}, {FLAGS.precision}; "
            f"{digits.get('train', '?')}; ± : the sd over seeds "
            f"{', '.join(FLAGS.seeds)}. P: each corner moved N(0, 5 px) along each "
            "axis, the reading of A.4's words; P dist: moved a distance N(0, 5 px) "
            "in a random direction, the other reading (docs/deviations.md). "
            "Generated by `tools/reproduce_mnist.py` with docs/results.md.*",
            section="reproduce_mnist_summary",
        )
    print(table(results))
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
