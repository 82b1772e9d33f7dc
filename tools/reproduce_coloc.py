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
FLAGS = flags.FLAGS


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


@cli.preemptible()
def main(argv):
    del argv
    reprolib.set_defaults(**reprolib.SGD_BUDGET)
    start = time.perf_counter()
    encoder, encoder_dir = train_encoder()
    print(f"encoder: {100 * encoder['test_error']:.2f} % test error on MNIST")
    results, configs = {}, {}
    for dataset in FLAGS.datasets:
        for digit in (int(k) for k in FLAGS.digits):
            config = coloc.CoLocConfig(
                dataset=dataset,
                digit=digit,
                encoder=str(encoder_dir),
                num_images=FLAGS.num_images,
                steps=FLAGS.coloc_steps,
                learning_rate=FLAGS.coloc_learning_rate,
                seed=FLAGS.seed,
                mnist_dir=reprolib.sources().mnist_dir,
                mnist_source=reprolib.sources().mnist_source,
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
