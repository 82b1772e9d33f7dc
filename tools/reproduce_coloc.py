"""Reproduces Table 5 (left) of the STN paper (co-localisation, Appendix A.2) at a
CPU budget; writes its section of docs/results.md.

    .venv/bin/python -m tools.reproduce_coloc
    .venv/bin/python -m tools.reproduce_coloc --digits=8 --datasets=mnist_coloc_t

First trains the encoder ``e()`` (a CNN on MNIST, ``python -m stn_tf.train``), then
runs ``stn_tf.colocalise`` once per digit class and dataset (T, TC), each on its own
100 images, and tabulates the percentage of images whose box has IoU > 0.5 with the
digit's frame next to the paper's. One workdir per run under ``--root``; finished
runs are read back.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

_REPO = Path(__file__).resolve().parents[1]

from stn_tf import cli
from stn_tf import colocalise as coloc
from tools import reprolib

# STN paper, Table 5 (left): % of digits correctly co-localised, per class.
PAPER = {
    "mnist_coloc_t": [100] * 10,
    "mnist_coloc_tc": [81, 82, 88, 75, 94, 84, 93, 85, 89, 87],
}
SHORT = {"mnist_coloc_t": "T", "mnist_coloc_tc": "TC"}
DEFAULTS = coloc.CoLocConfig()

reprolib.define_flag("list", "digits", [str(k) for k in range(10)], "Digit classes.")
reprolib.define_flag("list", "datasets", list(PAPER), "Co-localisation datasets.")
reprolib.define_flag(
    "integer", "encoder_steps", 3000, "Training steps of the encoder CNN."
)
reprolib.define_flag(
    "integer", "coloc_steps", DEFAULTS.steps, "Steps of each co-localisation."
)
reprolib.define_flag(
    "float", "coloc_learning_rate", DEFAULTS.learning_rate, "Its learning rate."
)
reprolib.define_flag("integer", "num_images", DEFAULTS.num_images, "Images per set.")
reprolib.define_flag(
    "string", "figure_digit", "8", "Digit whose T run is the figure (Figure 4)."
)
# The encoder's run flags (reprolib's) take the distorted-MNIST budget of reproduce_mnist.py
# (set in main: the tests import tools).
reprolib.define_output_flags(
    "reproduce_coloc", "docs/images/results_coloc.png", "Figure 4 of one run."
)
reprolib.define_flag(
    "bool",
    "learn_scale",
    False,
    "Learn the window's scale too (A.2 learns it; bounded below by --min_scale); "
    "its own workdirs and section.",
)
reprolib.define_flag(
    "float", "min_scale", DEFAULTS.min_scale, "The learned scale's lower bound."
)
reprolib.define_flag(
    "list",
    "variants",
    [],
    "Variants of the method to compare on the same --digits (see VARIANTS: "
    "ours, the paper's as written, and ours less one aid each); their own "
    "workdirs and section. Empty: ours only, as set by --learn_scale.",
)
FLAGS = flags.FLAGS

# The method as A.2 writes it, ours, and ours less one aid at a time: CoLocConfig
# fields over ours (whose learning rate is --coloc_learning_rate). The SGD of the
# paper's variants takes A.4's rate, 0.01 with no momentum (A.2 names SGD only).
_SGD = dict(optimizer="sgd", learning_rate=0.01, momentum=0.0)
VARIANTS = {
    "ours": ("ours: all the aids", {}),
    "paper": (
        "A.2 as written: both windows move, no blur, scale and translation learned "
        "(the window from half the image, s >= 0.01), SGD",
        dict(
            stop_target=False,
            gradient_blur=0.0,
            learn_scale=True,
            scale=0.5,
            min_scale=0.01,
            **_SGD,
        ),
    ),
    "no_stop_target": ("ours, both windows of a pair moving", dict(stop_target=False)),
    "no_blur": ("ours, no blurred gradient", dict(gradient_blur=0.0)),
    "half_window": (
        "ours, the window held at half the image (42 px), not the digit's size",
        dict(scale=0.5),
    ),
    "learned_scale": (
        "ours, the scale learned from 28/84 (s >= 0.01)",
        dict(learn_scale=True, min_scale=0.01),
    ),
    "sgd": ("ours, SGD at 0.01 without momentum instead of Adam", dict(_SGD)),
}


def _suffix() -> str:
    return "_learned_scale" if FLAGS.learn_scale else ""


def _workdir(dataset: str, digit: int) -> Path:
    return Path(FLAGS.root) / f"{dataset}_digit{digit}{_suffix()}"


def train_encoder() -> tuple[dict, Path]:
    workdir = Path(FLAGS.root) / "encoder"
    config = reprolib.run_config(
        FLAGS.encoder_steps, reprolib.recipe(), dataset="mnist", model="cnn"
    )
    return reprolib.train_or_read(config, workdir), workdir


def colocalise_or_read(config: coloc.CoLocConfig, workdir: Path) -> dict:
    """The run's results if it ran with this very config (in ``workdir`` or as a
    committed record); else runs it and records it."""
    return reprolib.train_or_read(
        config, workdir, lambda c, w: coloc.colocalise(c, w, progress=False)
    )


def table(results: dict) -> str:
    datasets = [d for d in PAPER if any(key[0] == d for key in results)]
    header = ["class"]
    for d in datasets:
        header += [f"{SHORT[d]}, ours", f"{SHORT[d]}, paper", f"{SHORT[d]} mean IoU"]
    rows = []
    for digit in sorted({key[1] for key in results}):
        row = [str(digit)]
        for d in datasets:
            r = results.get((d, digit))
            row += (
                [
                    f"{100 * r['localised']:.0f}",
                    str(PAPER[d][digit]),
                    f"{r['mean_iou']:.2f}",
                ]
                if r
                else ["–", str(PAPER[d][digit]), "–"]
            )
        rows.append(row)
    return reprolib.markdown_table(header, rows)


def coloc_config(dataset, digit, encoder_dir, **fields) -> coloc.CoLocConfig:
    """One co-localisation of the tool's command line (``fields`` on top)."""
    return coloc.CoLocConfig(
        **{
            "dataset": dataset,
            "digit": digit,
            "encoder": str(encoder_dir),
            "num_images": FLAGS.num_images,
            "steps": FLAGS.coloc_steps,
            "learning_rate": FLAGS.coloc_learning_rate,
            "seed": FLAGS.seed,
            "mnist_dir": reprolib.sources().mnist_dir,
            "mnist_source": reprolib.sources().mnist_source,
            **fields,
        }
    )


def variants_table(results: dict) -> str:
    """One row per variant: % localised per digit class and dataset, their mean,
    and the mean IoU."""
    digits = [int(k) for k in FLAGS.digits]
    header = ["variant"]
    for d in FLAGS.datasets:
        header += [f"{SHORT[d]} {k}" for k in digits] + [
            f"{SHORT[d]} mean",
            f"{SHORT[d]} IoU",
        ]
    rows = []
    for variant in FLAGS.variants:
        row = [VARIANTS[variant][0]]
        for d in FLAGS.datasets:
            rs = [results[(variant, d, k)] for k in digits]
            row += [f"{100 * r['localised']:.0f}" for r in rs]
            row.append(f"{100 * sum(r['localised'] for r in rs) / len(rs):.0f}")
            row.append(f"{sum(r['mean_iou'] for r in rs) / len(rs):.2f}")
        rows.append(row)
    paper = ["the paper (Table 5)"]
    for d in FLAGS.datasets:
        cells = [PAPER[d][k] for k in digits]
        paper += [str(c) for c in cells] + [f"{sum(cells) / len(cells):.0f}", "–"]
    return reprolib.markdown_table(header, [*rows, paper])


def variants_section(encoder, encoder_dir, start) -> str:
    unknown = set(FLAGS.variants) - set(VARIANTS)
    if unknown:
        raise app.UsageError(
            f"Unknown --variants {sorted(unknown)}; known: {list(VARIANTS)}"
        )
    results = {}
    for variant in FLAGS.variants:
        for dataset in FLAGS.datasets:
            for digit in (int(k) for k in FLAGS.digits):
                config = coloc_config(
                    dataset, digit, encoder_dir, **VARIANTS[variant][1]
                )
                # Ours is the default section's run of the same set (read back).
                workdir = _workdir(dataset, digit)
                if variant != "ours":
                    workdir = workdir.with_name(f"{workdir.name}_{variant}")
                r = colocalise_or_read(config, workdir)
                results[(variant, dataset, digit)] = r
                print(
                    f"{variant} {SHORT[dataset]} digit {digit}: "
                    f"{100 * r['localised']:.0f} % localised, mean IoU "
                    f"{r['mean_iou']:.2f}",
                    flush=True,
                )
    elapsed = time.perf_counter() - start
    command = (
        ".venv/bin/python -m tools.reproduce_coloc "
        f"--variants={','.join(FLAGS.variants)} --digits={','.join(FLAGS.digits)} "
        f"--datasets={','.join(FLAGS.datasets)} --encoder_steps={FLAGS.encoder_steps} "
        f"--coloc_steps={FLAGS.coloc_steps} "
        f"--coloc_learning_rate={FLAGS.coloc_learning_rate} "
        f"--num_images={FLAGS.num_images} --seed={FLAGS.seed} --root={FLAGS.root}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    digits = {"train": encoder["digits"]["train"], "test": encoder["digits"]["test"]}
    some = next(iter(results.values()))
    return f"""## Co-localisation: the paper's method, ours, and each of our aids removed

{reprolib.header("reproduce_coloc", command, elapsed, [{"digits": digits}])}
- Encoder e(): the CNN of `python -m stn_tf.train --dataset=mnist --model=cnn`,
  {FLAGS.encoder_steps} steps, {100 * encoder["test_error"]:.2f} % test error; weights
  SHA-256 `{some["encoder_weights_sha256"][:16]}...` (in every record).
- Every variant runs on the same sets: {FLAGS.num_images} test digits of each class
  {", ".join(FLAGS.digits)}, placed once (seed {FLAGS.seed}), {FLAGS.coloc_steps} steps
  of {DEFAULTS.batch_size} pairs. Ours: each pair's second crop a constant target,
  θ's gradient with a {DEFAULTS.gradient_blur:g} px blurred copy's added, the window
  held at the digit's size (28/84) with R(I_n) of that size, Adam at
  {FLAGS.coloc_learning_rate}. The paper's: A.2's loss with both crops moving, "a
  spatial transformer parameterised for attention (scale and translation)", "We can
  minimise this with stochastic gradient descent"; A.2 gives no rate or starting
  window: SGD at A.4's 0.01, the window from half the image.
- A window of half the image holding the whole digit has IoU 784/1764 = 0.44 with
  its frame: it cannot pass the 0.5 criterion, so its row reads by the mean IoU.

% of each set localised (IoU of the box with the digit's 28x28 frame > 0.5), and
the mean IoU over the classes:

{variants_table(results)}"""


@cli.preemptible()
def main(argv):
    del argv
    reprolib.set_defaults(**reprolib.SGD_BUDGET)
    start = time.perf_counter()
    encoder, encoder_dir = train_encoder()
    print(f"encoder: {100 * encoder['test_error']:.2f} % test error on MNIST")
    if FLAGS.variants:
        if FLAGS.learn_scale:
            raise app.UsageError(
                "--variants compare with ours, the held scale: "
                "drop --learn_scale (the learned_scale variant has it)"
            )
        text = variants_section(encoder, encoder_dir, start)
        out = reprolib.write(
            FLAGS.out, "reproduce_coloc", text, section="coloc_variants"
        )
        print(f"Wrote {out} ({(time.perf_counter() - start) / 60:.1f} min).")
        return
    results, configs = {}, {}
    for dataset in FLAGS.datasets:
        for digit in (int(k) for k in FLAGS.digits):
            config = coloc_config(
                dataset,
                digit,
                encoder_dir,
                learn_scale=FLAGS.learn_scale,
                min_scale=FLAGS.min_scale,
            )
            r = colocalise_or_read(config, _workdir(dataset, digit))
            results[(dataset, digit)] = r
            configs[(dataset, digit)] = config
            print(
                f"{SHORT[dataset]} digit {digit}: {100 * r['localised']:.0f} % localised, "
                f"mean IoU {r['mean_iou']:.2f} ({r['wall_time_s']:.0f} s)",
                flush=True,
            )
    elapsed = time.perf_counter() - start
    shown = (FLAGS.datasets[0], int(FLAGS.figure_digit))
    shown_picture = (
        [reprolib.picture(configs[shown], _workdir(*shown), "colocalisation.png")]
        if shown in configs
        else []
    )
    picture = reprolib.stack_pictures(shown_picture, FLAGS.figure)
    command = (
        ".venv/bin/python -m tools.reproduce_coloc "
        f"--digits={','.join(FLAGS.digits)} --datasets={','.join(FLAGS.datasets)} "
        f"--encoder_steps={FLAGS.encoder_steps} --coloc_steps={FLAGS.coloc_steps} "
        f"--coloc_learning_rate={FLAGS.coloc_learning_rate} "
        f"--num_images={FLAGS.num_images} --seed={FLAGS.seed} --root={FLAGS.root}"
        + (
            f" --learn_scale --min_scale={FLAGS.min_scale:g}"
            if FLAGS.learn_scale
            else ""
        )
        + f" --figure={FLAGS.figure}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    digits = {"train": encoder["digits"]["train"], "test": encoder["digits"]["test"]}
    scale = (
        f"the window's scale learned (from 28/84, bounded below by {FLAGS.min_scale:g})"
        if FLAGS.learn_scale
        else "the window's scale held at 28/84"
    )
    title = ", the scale learned" if FLAGS.learn_scale else ""
    text = f"""## Co-localisation (STN paper, Appendix A.2, Table 5){title}

{reprolib.header("reproduce_coloc", command, elapsed, [{"digits": digits}])}
- Encoder e(): the CNN of `python -m stn_tf.train --dataset=mnist --model=cnn`,
  {FLAGS.encoder_steps} steps, {100 * encoder["test_error"]:.2f} % test error.
- Each set: {FLAGS.num_images} test digits of one class, placed once; {FLAGS.coloc_steps}
  steps of {DEFAULTS.optimizer} at batch {DEFAULTS.batch_size} pairs, learning rate
  {FLAGS.coloc_learning_rate}; {scale}, θ's gradient with a
  {DEFAULTS.gradient_blur:g} px blur added (the recipe and why: `stn_tf/colocalise.py`).
  No labels and no boxes are used in the optimisation; the frames only score it.

% of the set localised (IoU of the box with the digit's 28x28 frame > 0.5):

{table(results)}
{reprolib.picture_link(picture, FLAGS.out, "Co-localisation over the steps", f"Like Figure 4 of the STN paper: three images of the digit-{FLAGS.figure_digit} set with the transformer's box (red) and the digit's frame (green) after the optimisation step named above each column (step 0: the start).")}"""
    section = "reproduce_coloc" + ("_learned_scale" if FLAGS.learn_scale else "")
    out = reprolib.write(FLAGS.out, "reproduce_coloc", text, section=section)
    print(table(results))
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
