"""Reproduces Table 4 (left) of the STN paper (MNIST addition) at a CPU budget, and
the 3D transformer of its Appendix A.3; writes their sections of docs/results.md.

    .venv/bin/python -m tools.reproduce_addition
    .venv/bin/python -m tools.reproduce_addition --transforms=affine,projective,tps --no3d

Addition: FCN, CNN, ST-FCN and 2xST-FCN (two parallel transformers, each seeing both
channels), all about 400k parameters, 19-way softmax on the sum. 3D: ``st_cnn_3d``
(3D affine transformer, depth summed to 2D, CNN) next to ``cnn_3d`` (the same CNN on
the input summed over its depth). One workdir per run under ``--root``; finished
runs are read back, interrupted ones resume.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

_REPO = Path(__file__).resolve().parents[1]

from stn_tf import cli, fields, models, runs
from tools import reprolib

# STN paper, Table 4 (left): % error on the sum.
PAPER = {
    ("fcn", None): 47.7,
    ("cnn", None): 14.7,
    ("st_fcn", "affine"): 22.6,
    ("st_fcn", "projective"): 18.5,
    ("st_fcn", "tps"): 19.1,
    ("st_fcn_2x", "affine"): 9.0,
    ("st_fcn_2x", "projective"): 5.9,
    ("st_fcn_2x", "tps"): 5.8,
}
NAMES = {
    "fcn": "FCN",
    "cnn": "CNN",
    "st_fcn": "ST-FCN",
    "st_fcn_2x": "2xST-FCN",
    "st_cnn_3d": "3D ST-CNN",
    "cnn_3d": "CNN on the depth sum",
}
SHORT = {"affine": "Aff", "projective": "Proj", "tps": "TPS", "affine3d": "Aff 3D"}

reprolib.define_flag(
    "list", "models", ["fcn", "cnn", "st_fcn", "st_fcn_2x"], "Addition models."
)
reprolib.define_flag(
    "list", "transforms", ["affine", "tps"], "Transforms of the ST models."
)
reprolib.define_flag("bool", "addition", True, "Train the addition models (A.1).")
# --pool: the training command's own field (default: the dataset's, 1 for addition;
# A.4 pools by 2 on RTS, and the addition digits are RTS digits).
fields.define_flags(runs.TrainConfig, only=("pool",))
reprolib.define_flag(
    "list",
    "seeds",
    [],
    "Seeds of every addition run (mean ± sd in the section); empty: --seed only.",
)
reprolib.define_flag("bool", "3d", True, "Train the 3D models (A.3).")
reprolib.define_flag(
    "integer", "steps_3d", 1000, "Steps of the 3D runs.", lower_bound=1
)
reprolib.define_flag(
    "integer", "batch_size_3d", 32, "Batch size of the 3D runs.", lower_bound=1
)
reprolib.define_flag(
    "integer",
    "points",
    0,
    "Evaluations of each addition run on the whole test set, drawn as its training "
    "curve (--curves_figure); 0: at the end only.",
    lower_bound=0,
)
reprolib.define_flag(
    "string",
    "curves_figure",
    "docs/images/results_addition_curves.png",
    "Figure of the addition runs' test error against the step (with --points).",
)
# The run flags of reprolib (--steps, --optimizer, --lr_boundaries, ... made from
# TrainConfig's declarations) take the CPU-budget defaults of reproduce_mnist.py in
# main: the tests import tools.
reprolib.define_output_flags(
    "reproduce_addition", "docs/images/results_addition.png", "Figure of the 2xST-FCN."
)
reprolib.define_flag(
    "string", "figure_3d", "docs/images/results_3d.png", "Figure of the 3D ST."
)
FLAGS = flags.FLAGS


def grid(names, transforms) -> list[tuple[str, str | None]]:
    runs = []
    for model in names:
        if models.get_model(model).uses_transform:
            runs += [(model, t) for t in transforms]
        else:
            runs.append((model, None))
    return runs


def seeds() -> list[int]:
    return [int(s) for s in FLAGS.seeds] or [FLAGS.seed]


def seed_text() -> str:
    n = seeds()
    return f"seeds {', '.join(map(str, n))} (mean ± sd)" if len(n) > 1 else "one seed"


def pooled(dataset, model) -> bool:
    """Whether ``--pool`` applies to this run (the addition's transformer models)."""
    takes = "pool" in models.get_model(model).cls.accepted_args()
    return bool(FLAGS.pool) and dataset == "mnist_addition" and takes


def workdir(dataset, model, transform, seed=None) -> Path:
    """``<dataset>_<model>[_<transform>][_pool<p>][_s<seed>]``: seed 0's and any
    seed recorded before seeds had folders of their own keep the plain name."""
    seed = FLAGS.seed if seed is None else seed
    name = f"{dataset}_{model}" + (f"_{transform}" if transform else "")
    name += f"_pool{FLAGS.pool}" if pooled(dataset, model) else ""
    plain = Path(FLAGS.root) / name
    if seed == 0 or reprolib.recorded(config(dataset, model, transform, seed), plain):
        return plain
    return Path(FLAGS.root) / f"{name}_s{seed}"


def config(dataset, model, transform, seed=None):
    addition = dataset == "mnist_addition"
    steps = FLAGS.steps if addition else FLAGS.steps_3d
    fields = {
        "dataset": dataset,
        "model": model,
        "transform": transform,
        "batch_size": FLAGS.batch_size if addition else FLAGS.batch_size_3d,
        "optimizer": FLAGS.optimizer,
        "eval_batch_size": 500 if addition else 100,
        "seed": FLAGS.seed if seed is None else seed,
    }
    if pooled(dataset, model):
        fields["pool"] = FLAGS.pool
    if FLAGS.lr_boundaries is not None:  # else the config's: 1/3 and 2/3 of the steps
        fields["lr_boundaries"] = tuple(int(b) for b in FLAGS.lr_boundaries)
    if models.get_model(model).uses_transform:
        fields["loc_hold_steps"] = FLAGS.loc_hold_steps
    if addition and FLAGS.points:
        fields["eval_every"] = max(steps // FLAGS.points, 1)
    return reprolib.run_config(steps, reprolib.recipe(), **fields)


def run_one(dataset, model, transform, seed=None) -> dict:
    run = (dataset, model, transform, seed)
    return reprolib.train_or_read(config(*run), workdir(*run))


def picture(dataset, model, transform, seed=None) -> Path:
    run = (dataset, model, transform, seed)
    return reprolib.picture(config(*run), workdir(*run))


def recipe(steps: int) -> str:
    """The optimizer and learning-rate schedule of runs of ``steps``, in words."""
    optimizer = {"sgd": "SGD", "rmsprop": "RMSprop"}[FLAGS.optimizer] + (
        f" with momentum {FLAGS.momentum}" if FLAGS.momentum else ""
    )
    if FLAGS.lr_boundaries is None:
        schedule = "divided by 10 at 1/3 and 2/3 of the steps"
    else:
        bounds = [int(b) for b in FLAGS.lr_boundaries if int(b) < steps]
        schedule = (
            f"divided by 10 at steps {', '.join(map(str, bounds))}"
            if bounds
            else "constant"
        )
    hold = (
        f", the localisation nets held at the identity for the first "
        f"{FLAGS.loc_hold_steps} steps (`--loc_hold_steps`)"
        if FLAGS.loc_hold_steps
        else ""
    )
    return (
        f"{optimizer}, learning rate {FLAGS.learning_rate} {schedule}, "
        f"{FLAGS.precision} compute{hold}"
    )


def draw_curves(results: dict, out: str | Path) -> Path | None:
    """Each addition run's test error against its step (``results.json``'s curve),
    every seed of a model in its colour."""
    curves = {
        k: [r["curve"] for r in rs if r.get("curve")] for k, rs in results.items()
    }
    curves = {k: c for k, c in curves.items() if c}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for i, ((model, transform), seeds) in enumerate(curves.items()):
        for k, points in enumerate(seeds):
            steps = [p["step"] for p in points]
            errors = [100 * p["test_error"] for p in points]
            name = label(model, transform) + (
                f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""
            )
            ax.plot(
                steps,
                errors,
                "o-",
                color=f"C{i}",
                markersize=3,
                lw=1.2,
                label=name if k == 0 else None,
            )
    ax.axhline(90, color="grey", linestyle=":", label="always answering 9 (90 %)")
    ax.set_xlabel("training step")
    ax.set_ylabel("% test error on the sum (10,000 fixed test pairs)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("MNIST addition: test error along each run")
    fig.tight_layout()
    return reprolib.save_figure(fig, out)


def label(model, transform) -> str:
    return NAMES[model] + (f" {SHORT[transform]}" if transform else "")


def _errors(rs) -> list[float]:
    return [100 * r["test_error"] for r in rs]


def table(results: dict, paper: dict) -> str:
    """One row per model: mean ± sd over its seeds, the paper's, its size and time."""
    rows = []
    for (model, transform), rs in results.items():
        p = paper.get((model, transform))
        rows.append(
            [
                label(model, transform),
                reprolib.mean_sd(_errors(rs)),
                str(len(rs)),
                "–" if p is None else str(p),
                f"{rs[0]['parameters']:,}",
                f"{sum(r['train_wall_time_s'] for r in rs) / len(rs) / 60:.1f}",
            ]
        )
    return reprolib.markdown_table(
        ["model", "error, ours", "seeds", "paper", "params", "min/run"], rows
    )


def verdicts(results: dict) -> list[str]:
    """Does each 2xST-FCN beat the FCN, its single ST-FCN and the CNN (the paper:
    yes, all three)? From the seeds (``reprolib.verdict``)."""
    out = []
    for (model, transform), rs in results.items():
        if model != "st_fcn_2x":
            continue
        for key in [("fcn", None), ("st_fcn", transform), ("cnn", None)]:
            if key in results:
                ours, theirs = _errors(rs), _errors(results[key])
                out.append(
                    f"{reprolib.verdict(ours, theirs)}: {label(model, transform)} "
                    f"{reprolib.mean_sd(ours)} % vs {label(*key)} "
                    f"{reprolib.mean_sd(theirs)} % {reprolib.seed_count(ours, theirs)}"
                )
    return out


def command() -> str:
    return (
        ".venv/bin/python -m tools.reproduce_addition "
        f"--models={','.join(FLAGS.models)} --transforms={','.join(FLAGS.transforms)} "
        f"--steps={FLAGS.steps} --batch_size={FLAGS.batch_size} "
        f"--optimizer={FLAGS.optimizer} "
        f"--learning_rate={FLAGS.learning_rate} --momentum={FLAGS.momentum} "
        + (
            f"--lr_boundaries={','.join(FLAGS.lr_boundaries)} "
            if FLAGS.lr_boundaries is not None
            else ""
        )
        + (f"--points={FLAGS.points} " if FLAGS.points else "")
        + (f"--loc_hold_steps={FLAGS.loc_hold_steps} " if FLAGS.loc_hold_steps else "")
        + f"--precision={FLAGS.precision} "
        + (f"--pool={FLAGS.pool} " if FLAGS.pool else "")
        + (f"--seeds={','.join(FLAGS.seeds)} " if FLAGS.seeds else "")
        + f"--addition={FLAGS.addition} --3d={FLAGS['3d'].value} --steps_3d={FLAGS.steps_3d} "
        f"--batch_size_3d={FLAGS.batch_size_3d} --seed={FLAGS.seed}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )


def addition_section(results, elapsed) -> str:
    runs = [k for k in results if k[0] == "st_fcn_2x"]
    pictures = [picture("mnist_addition", *k, seeds()[0]) for k in runs]
    sheet = reprolib.stack_pictures(pictures, FLAGS.figure)
    curves = draw_curves(results, FLAGS.curves_figure)
    budget = (
        f"{FLAGS.steps} steps at batch {FLAGS.batch_size} per run, "
        f"{recipe(FLAGS.steps)}; {seed_text()}"
    )
    pooling = (
        f"average pooling by {FLAGS.pool} after the transformers (`--pool`; A.4 "
        "pools so on RTS, and the addition digits are RTS digits)"
        if FLAGS.pool
        else "no pooling after the transformers (A.1 names none; A.4 pools by 2 "
        "on RTS: `--pool=2`)"
    )
    return f"""## MNIST addition (STN paper, Table 4 left)

{reprolib.header("reproduce_addition", command(), elapsed, [r for rs in results.values() for r in rs])}
- Budget: {budget} (the paper: 150k steps at batch 256).
- Models: {pooling}.

% test error on the sum (19 classes), ours next to the paper's:

{table(results, PAPER)}

Does 2xST-FCN beat FCN, the single ST-FCN and the CNN?

{chr(10).join(f"- {v}" for v in verdicts(results)) or "- (no pairs in this grid)"}
{reprolib.picture_link(sheet, FLAGS.out, "2xST-FCN on MNIST addition", "Like Table 4 (right) of the STN paper: test inputs (channel 1 magenta, channel 2 green) with the sampling grids of the two transformers (red: ST1, blue: ST2), and each transformer's 2-channel output" + (", one sheet per 2xST-FCN in the table's order." if len(pictures) > 1 else "."))}{reprolib.picture_link(curves, FLAGS.out, "Addition: test error along each run", "Test error on the sum of each run at its evaluations (--points).")}"""


def section_3d(results, elapsed) -> str:
    sheet = reprolib.stack_pictures(
        [picture("mnist_3d", "st_cnn_3d", "affine3d", seeds()[0])], FLAGS.figure_3d
    )
    return f"""## 3D transformer (STN paper, Appendix A.3)

{reprolib.header("reproduce_addition", command(), elapsed, [r for rs in results.values() for r in rs])}
- Budget: {FLAGS.steps_3d} steps at batch {FLAGS.batch_size_3d}, {recipe(FLAGS.steps_3d)};
  {seed_text()}.
  The paper gives no number, only Figure 5.

% test error on 60x60x60 volumes of extruded digits rotated ±45° about each axis:

{table(results, {})}
{reprolib.picture_link(sheet, FLAGS.out, "3D transformer", "Like Figure 5 of the STN paper: test volumes summed over their depth, with the (x, y) of the middle depth slice of the 3D sampling grid, and the 2D projection the transformer learned to make (its output volume summed over depth), which the CNN classifies.")}"""


@cli.preemptible()
def main(argv):
    del argv
    reprolib.set_defaults(**reprolib.SGD_BUDGET)
    start = time.perf_counter()
    out = None
    if FLAGS.addition:
        addition = {}
        for model, transform in grid(FLAGS.models, FLAGS.transforms):
            print(f"addition: {label(model, transform)}", flush=True)
            addition[(model, transform)] = [
                run_one("mnist_addition", model, transform, seed) for seed in seeds()
            ]
        elapsed = time.perf_counter() - start
        out = reprolib.write(
            FLAGS.out, "reproduce_addition", addition_section(addition, elapsed)
        )
        print(table(addition, PAPER))
    if FLAGS["3d"].value:
        volumes = {}
        for model, transform in (("cnn_3d", None), ("st_cnn_3d", "affine3d")):
            print(f"3D: {label(model, transform)}", flush=True)
            volumes[(model, transform)] = [
                run_one("mnist_3d", model, transform, seed) for seed in seeds()
            ]
        elapsed = time.perf_counter() - start
        out = reprolib.write(
            FLAGS.out,
            "reproduce_addition",
            section_3d(volumes, elapsed),
            section="reproduce_3d",
        )
        print(table(volumes, {}))
    print(f"Wrote {out} ({(time.perf_counter() - start) / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
