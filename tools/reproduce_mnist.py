"""Reproduces Table 1 (left) of the STN paper at a CPU budget; writes docs/results.md.

    .venv/bin/python -m tools.reproduce_mnist                      # the whole grid
    .venv/bin/python -m tools.reproduce_mnist --models=cnn,st_cnn --transforms=affine

Trains every model x distortion (R, RTS, P, E; TC for CNN and ST-CNN) with
``stn_tf.train.train_and_evaluate``, one workdir per run under ``--root``. A run
whose ``results.json`` already has the requested steps is not trained again, and an
interrupted run resumes from its checkpoint: rerun the same command to finish a grid.
Then it writes the table of test errors next to the paper's, and a figure of what
each ST-CNN's transformer learned, to ``--out`` and ``--figure``.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

from absl import app, flags

_REPO = Path(__file__).resolve().parents[1]

from stn_tf import models
from tools import benchlib, reprolib

DISTORTIONS = {
    "mnist_r": "R",
    "mnist_rts": "RTS",
    "mnist_p": "P",
    "mnist_e": "E",
    "mnist_tc": "TC",
}
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
TC_MODELS = (
    "cnn",
    "st_cnn",
)  # the grid trains TC for these (with the affine transformer)

flags.DEFINE_list("models", ["fcn", "cnn", "st_fcn", "st_cnn"], "Models to train.")
flags.DEFINE_list(
    "transforms", ["affine", "projective", "tps"], "Transforms of the ST models."
)
flags.DEFINE_list("datasets", list(DISTORTIONS), "Distortions to train on.")
# The training command's own flags (--steps, --batch_size, --learning_rate, --momentum,
# --seed, --mnist_dir, ...), with this tool's CPU-budget defaults.
reprolib.set_defaults(**reprolib.SGD_BUDGET)
reprolib.define_output_flags(
    "reproduce_mnist",
    "docs/images/results_mnist.png",
    "Figure of the ST-CNN transformers.",
)
FLAGS = flags.FLAGS


def grid() -> list[tuple[str, str | None, str]]:
    """(model, transform or None, dataset) of every run asked for."""
    runs = []
    for dataset in FLAGS.datasets:
        for model in FLAGS.models:
            if dataset == "mnist_tc" and model not in TC_MODELS:
                continue
            if not models.get_model(model).uses_transform:
                runs.append((model, None, dataset))
                continue
            names = ["affine"] if dataset == "mnist_tc" else FLAGS.transforms
            runs.extend((model, t, dataset) for t in names)
    return runs


def run_one(model, transform, dataset) -> dict:
    workdir = Path(FLAGS.root) / (
        f"{dataset}_{model}" + (f"_{transform}" if transform else "")
    )
    config = reprolib.run_config(
        FLAGS.steps, dataset=dataset, model=model, transform=transform or "affine"
    )
    return reprolib.train_or_read(config, workdir)


_SHORT = {"affine": "Aff", "projective": "Proj", "tps": "TPS"}


def _label(model, transform):
    return model.upper().replace("_", "-") + (
        f" {_SHORT[transform]}" if transform else ""
    )


def table(results: dict) -> str:
    cols = [DISTORTIONS[d] for d in FLAGS.datasets]
    lines = [
        "| model | "
        + " | ".join(f"{c} ours | {c} paper" for c in cols)
        + " | params | min/run |",
        "| --- | " + " | ".join("---: | ---:" for _ in cols) + " | ---: | ---: |",
    ]
    for key in PAPER:
        model, transform = key
        if model not in FLAGS.models or (
            transform and transform not in FLAGS.transforms
        ):
            continue
        cells, params, minutes = [], set(), []
        for dataset, col in zip(FLAGS.datasets, cols):
            r = results.get((model, transform, dataset))
            ours = f"{100 * r['test_error']:.2f}" if r else "–"
            paper = PAPER[key].get(col)
            cells.append(f"{ours} | {paper if paper is not None else '–'}")
            if r:
                params.add(r["parameters"])
                minutes.append(r["train_wall_time_s"] / 60)
        span = f"{min(params):,}–{max(params):,}" if params else "–"
        mins = f"{sum(minutes) / len(minutes):.1f}" if minutes else "–"
        lines.append(
            f"| {_label(model, transform)} | "
            + " | ".join(cells)
            + f" | {span} | {mins} |"
        )
    return "\n".join(lines)


def verdicts(results: dict) -> list[str]:
    """Does every ST model beat its base model on every distortion?"""
    out = []
    for base, st in (("cnn", "st_cnn"), ("fcn", "st_fcn")):
        for dataset in FLAGS.datasets:
            b = results.get((base, None, dataset))
            for transform in ("affine", "projective", "tps"):
                s = results.get((st, transform, dataset))
                if b and s:
                    better = s["test_error"] < b["test_error"]
                    out.append(
                        f"{'yes' if better else '**no**'}: {_label(st, transform)} "
                        f"{100 * s['test_error']:.2f} % vs {_label(base, None)} "
                        f"{100 * b['test_error']:.2f} % on {DISTORTIONS[dataset]}"
                    )
    return out


def figure(results: dict) -> Path | None:
    """The ST-CNN (affine) transformer pictures of each distortion, stacked."""
    return reprolib.stack_pictures(
        [
            Path(FLAGS.root) / f"{dataset}_st_cnn_affine" / "transformer.png"
            for dataset in FLAGS.datasets
        ],
        FLAGS.figure,
    )


def main(argv):
    del argv
    runs = grid()
    print(
        f"{len(runs)} runs of {FLAGS.steps} steps at batch {FLAGS.batch_size} under {FLAGS.root}"
    )
    start = time.perf_counter()
    results = {}
    for i, (model, transform, dataset) in enumerate(runs):
        print(
            f"[{i + 1}/{len(runs)}] {_label(model, transform)} on {dataset}", flush=True
        )
        results[(model, transform, dataset)] = run_one(model, transform, dataset)
    elapsed = time.perf_counter() - start
    picture = figure(results)
    command = (
        ".venv/bin/python -m tools.reproduce_mnist "
        f"--models={','.join(FLAGS.models)} --transforms={','.join(FLAGS.transforms)} "
        f"--datasets={','.join(FLAGS.datasets)} --steps={FLAGS.steps} --batch_size={FLAGS.batch_size} "
        f"--learning_rate={FLAGS.learning_rate} --momentum={FLAGS.momentum} --seed={FLAGS.seed}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    digits = next(iter(results.values()))["digits"] if results else {}
    text = f"""## Distorted MNIST (STN paper, Table 1 left)

Generated by `tools/reproduce_mnist.py`; rerun it to regenerate this section.

- Date: {datetime.date.today().isoformat()}; CPU: {benchlib.cpu_model()}, {benchlib.cores()} cores
- Command: `{command}`
- Budget: {FLAGS.steps} steps at batch {FLAGS.batch_size} per run (the paper: 150k at 256),
  SGD with momentum {FLAGS.momentum}, learning rate {FLAGS.learning_rate} divided by 10 at 1/3
  and 2/3 of the steps; one seed (the paper averages three). Wall time of this invocation
  {elapsed / 60:.0f} min (runs already finished are read back, not retrained).
- Data: {digits.get("train", "?")}; tested on {digits.get("test", "?")}.
  Trained on 10k MNIST digits when the train digits are `../shared/data/mnist`, not 60k.

% test error, ours (one run) next to the paper's:

{table(results)}

Does each spatial transformer network beat its base network?

{chr(10).join(f"- {v}" for v in verdicts(results)) or "- (no pairs in this grid)"}
"""
    if picture:
        text += f"""
![What each ST-CNN (affine) learned, one row block per distortion]({os.path.relpath(picture, Path(FLAGS.out).parent)})

*Test inputs of each distortion with the sampling grid of the trained ST-CNN's affine
transformer drawn on them, and the transformer's outputs (`transformer.png` of each run).*
"""
    out = reprolib.write(FLAGS.out, "reproduce_mnist", text)
    print(table(results))
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
