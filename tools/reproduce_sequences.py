"""Reproduces Table 1 of the RNN-SPN paper (cluttered MNIST sequences) at a CPU
budget; writes its section of docs/results.md.

    .venv/bin/python -m tools.reproduce_sequences
    .venv/bin/python -m tools.reproduce_sequences --downsamples=1,2,3,4 --steps=5000

Trains RNN-SPN (one run per down-sampling factor d), FFN-SPN (d = 2, the paper's
best) and the conv net on ``mnist_sequence`` with ``stn_tf.train``, one workdir per
run under ``--root``; finished runs are read back and interrupted ones resume.
Errors are per digit (the paper's measure) and per sequence (all three digits right).
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

_REPO = Path(__file__).resolve().parents[1]

from stn_tf import cli, runs
from tools import reprolib

# RNN-SPN paper, Table 1: % error per digit.
PAPER = {
    ("rnn_spn", 1.0): 1.8,
    ("rnn_spn", 2.0): 1.5,
    ("rnn_spn", 3.0): 1.8,
    ("rnn_spn", 4.0): 2.3,
    ("ffn_spn", 1.0): 4.4,
    ("ffn_spn", 2.0): 2.0,
    ("ffn_spn", 3.0): 2.9,
    ("ffn_spn", 4.0): 5.3,
    ("conv_net", None): 2.9,
}
NAMES = {"rnn_spn": "RNN-SPN", "ffn_spn": "FFN-SPN", "conv_net": "Conv. net"}
# The RNN-SPN's aids (not the paper's): the training command's options of each.
AIDS = {
    "none": {},
    "starts": {"starts": "left_to_right"},
    "offsets": {"starts": "left_to_right", "learn_offsets": True},
}
AID_NAMES = {
    "none": "the paper's",
    "starts": "+ left-to-right starts",
    "offsets": "+ left-to-right starts, trained offsets",
}

reprolib.define_flag(
    "list", "downsamples", ["2"], "Down-sampling factors d of the RNN-SPN runs."
)
reprolib.define_flag(
    "list", "ffn_downsamples", ["2"], "Down-sampling factors d of FFN-SPN runs."
)
reprolib.define_flag("bool", "conv_net", True, "Also train the conv net baseline.")
reprolib.define_flag(
    "list",
    "rnn_aids",
    ["none"],
    "RNN-SPN variants per d: none (the paper's model), starts (--starts="
    "left_to_right: steps start on windows left to right), offsets (those starts "
    "and --learn_offsets: version 1's model).",
)
# reprolib's run flags take, in main, the sequences' recipe (runs.RECIPES: the
# paper's RMSprop; its rate and batch are ours, the paper gives none) at this
# tool's CPU budget of steps.
BUDGET = {**runs.RECIPES["mnist_sequence"], "steps": 1500}
reprolib.define_output_flags(
    "reproduce_sequences",
    "docs/images/results_sequences.png",
    "Figure of the RNN-SPN glimpses.",
)
reprolib.define_flag(
    "string",
    "section",
    "reproduce_sequences",
    "Name of the section (one per budget, say).",
)
FLAGS = flags.FLAGS


def grid() -> list[tuple[str, float | None, str]]:
    unknown = set(FLAGS.rnn_aids) - set(AIDS)
    if unknown:
        raise app.UsageError(
            f"Unknown --rnn_aids {sorted(unknown)}; known: {list(AIDS)}"
        )
    runs = [
        ("rnn_spn", float(d), aid) for d in FLAGS.downsamples for aid in FLAGS.rnn_aids
    ]
    runs += [("ffn_spn", float(d), "none") for d in FLAGS.ffn_downsamples]
    return runs + ([("conv_net", None, "none")] if FLAGS.conv_net else [])


def workdir(model, d, aid="none") -> Path:
    name = model + (f"_d{d:g}" if d else "") + ("" if aid == "none" else f"_{aid}")
    return Path(FLAGS.root) / name


def config(model, d, aid):
    return reprolib.run_config(
        FLAGS.steps,
        reprolib.recipe(),
        dataset="mnist_sequence",
        model=model,
        downsample=d or 2.0,
        optimizer=FLAGS.optimizer,
        lr_boundaries=(2 * FLAGS.steps // 3,),
        dropout=FLAGS.dropout,
        **AIDS[aid],
    )


def run_one(model, d, aid) -> dict:
    return reprolib.train_or_read(config(model, d, aid), workdir(model, d, aid))


def label(model, d, aid) -> str:
    aided = (
        f" ({AID_NAMES[aid]})" if model == "rnn_spn" and len(FLAGS.rnn_aids) > 1 else ""
    )
    return NAMES[model] + aided


def table(results: dict) -> str:
    header = ["model", "d", "per-digit error, ours", "paper", "sequence error, ours"]
    rows = []
    for (model, d, aid), r in results.items():
        paper = PAPER.get((model, d)) if aid == "none" else None
        rows.append(
            [
                label(model, d, aid),
                f"{d:g}" if d else "–",
                f"{100 * r['test_error']:.2f}",
                "–" if paper is None else str(paper),
                f"{100 * r['test_sequence_error']:.2f}",
                f"{r['parameters']:,}",
                f"{r['train_wall_time_s'] / 60:.1f}",
            ]
        )
    return reprolib.markdown_table(header + ["params", "min/run"], rows)


def verdicts(results: dict) -> list[str]:
    out = []
    for (model, d, aid), r in results.items():
        if model != "rnn_spn":
            continue
        for key, other in results.items():
            if key[0] == "rnn_spn":
                continue
            better = r["test_error"] < other["test_error"]
            out.append(
                f"{'yes' if better else '**no**'}: {label(model, d, aid)} d={d:g} "
                f"{100 * r['test_error']:.2f} % vs {NAMES[key[0]]}"
                f"{f' d={key[1]:g}' if key[1] else ''} "
                f"{100 * other['test_error']:.2f} % per digit"
            )
    return out


@cli.preemptible()
def main(argv):
    del argv
    reprolib.set_defaults(**BUDGET)
    runs = grid()
    print(
        f"{len(runs)} runs of {FLAGS.steps} steps at batch {FLAGS.batch_size} under {FLAGS.root}"
    )
    start = time.perf_counter()
    results = {}
    for i, (model, d, aid) in enumerate(runs):
        print(
            f"[{i + 1}/{len(runs)}] {label(model, d, aid)}"
            + (f" d={d:g}" if d else ""),
            flush=True,
        )
        results[(model, d, aid)] = run_one(model, d, aid)
    elapsed = time.perf_counter() - start
    rnn = [
        reprolib.picture(config(*run), workdir(*run))
        for run in runs
        if run[0] == "rnn_spn"
    ]
    picture = reprolib.stack_pictures(rnn, FLAGS.figure)
    command = (
        ".venv/bin/python -m tools.reproduce_sequences "
        f"--downsamples={','.join(FLAGS.downsamples)} --ffn_downsamples={','.join(FLAGS.ffn_downsamples)} "
        f"--conv_net={FLAGS.conv_net} --rnn_aids={','.join(FLAGS.rnn_aids)} "
        f"--steps={FLAGS.steps} --batch_size={FLAGS.batch_size} "
        f"--optimizer={FLAGS.optimizer} --learning_rate={FLAGS.learning_rate} "
        f"--dropout={FLAGS.dropout} --seed={FLAGS.seed} --root={FLAGS.root} "
        f"--section={FLAGS.section} --figure={FLAGS.figure}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    text = f"""## Cluttered MNIST sequences (RNN-SPN paper, Table 1), {FLAGS.steps} steps

{reprolib.header("reproduce_sequences", command, elapsed, results.values())}
- Budget: {FLAGS.steps} steps at batch {FLAGS.batch_size} per run, {FLAGS.optimizer} at
  learning rate {FLAGS.learning_rate} divided by 10 at 2/3 of the steps, dropout
  {FLAGS.dropout}; one seed. The paper gives no training length; it generates 60,000
  training sequences and picks d and dropout on 10,000 validation sequences.

% test error on the fixed test set of 3-digit sequences (ours: one run):

{table(results)}

Does the RNN-SPN beat the feed-forward models per digit?

{chr(10).join(f"- {v}" for v in verdicts(results)) or "- (no pairs in this grid)"}
{reprolib.picture_link(picture, FLAGS.out, "RNN-SPN glimpses", "Like Figure 3 of the RNN-SPN paper: test sequences with the three glimpses of the trained RNN-SPN drawn on them (red, blue, green: steps 1, 2, 3), and the three crops its classifier reads" + (", one sheet per RNN-SPN run, in the table's order." if len(rnn) > 1 else "."))}"""
    out = reprolib.write(FLAGS.out, "reproduce_sequences", text, section=FLAGS.section)
    print(table(results))
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


if __name__ == "__main__":
    app.run(main)
