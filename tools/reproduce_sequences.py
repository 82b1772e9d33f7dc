"""Reproduces Table 1 of the RNN-SPN paper (cluttered MNIST sequences) at a CPU
budget; writes its section of docs/results.md.

    .venv/bin/python -m tools.reproduce_sequences
    .venv/bin/python -m tools.reproduce_sequences --downsamples=1,2,3,4 --steps=5000

Trains RNN-SPN (one run per down-sampling factor d), FFN-SPN (d = 2, the paper's
best) and the conv net on ``mnist_sequence`` with ``stn_tf.train``, one workdir per
run under ``--root``; finished runs are read back and interrupted ones resume.
Errors are per digit (the paper's measure) and per sequence (all three digits right).

With ``--validation_digits`` the runs follow the paper's protocol (§4): a fixed set
of ``--train_examples`` training sequences, a validation set of sequences made of
the last ``--validation_digits`` training digits, the test set of the test digits.
Each model's d and dropout are chosen on the validation set from the grid
(``--downsamples``, ``--ffn_downsamples``, ``--dropouts``; ``--select_steps`` per run,
seed ``--seed``); the chosen settings then train ``--seeds`` at ``--steps``, each
evaluated on the validation set every ``--eval_every`` steps (the curves) and
reported with the test error of its lowest validation error (early stopping)::

    .venv/bin/python -m tools.reproduce_sequences --validation_digits=10000 \
        --train_examples=60000 --downsamples=1,2,3 --ffn_downsamples=1,2,3 \
        --dropouts=0,0.25 --select_steps=940 --seeds=0,1,2 --steps=4700 \
        --eval_every=470 --root=runs/sequences_protocol --section=sequences_protocol
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

_REPO = Path(__file__).resolve().parents[1]

from stn_tf import cli, fields, runs
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
# The paper's protocol (§4): the run fields of its splits, its grid and its seeds.
fields.define_flags(runs.TrainConfig, only=("validation_digits", "train_examples"))
reprolib.define_flag(
    "list",
    "dropouts",
    ["0"],
    "--validation_digits: the classifiers' dropout rates to choose from on the "
    "validation set.",
)
reprolib.define_flag(
    "integer",
    "select_steps",
    940,
    "--validation_digits: steps of each grid run (seed --seed) that d and dropout "
    "are chosen from (940: one pass over 60,000 sequences at batch 64).",
)
reprolib.define_flag(
    "list",
    "seeds",
    ["0", "1", "2"],
    "--validation_digits: seeds of each model at its chosen setting, --steps each.",
)
FLAGS = flags.FLAGS
MODELS = ("rnn_spn", "ffn_spn", "conv_net")
# The paper's ordering (Table 1, per-digit error at each model's best d).
CLAIMS = (("rnn_spn", "ffn_spn"), ("ffn_spn", "conv_net"), ("rnn_spn", "conv_net"))
PAPER_BEST = {m: min(e for (n, _), e in PAPER.items() if n == m) for m in NAMES}


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


# --------------------------------------------------------------------------------------
# The paper's protocol: a validation set, settings chosen on it, seeds, curves


def settings(model) -> list[tuple[float | None, float]]:
    """The grid of ``(d, dropout)`` a model's setting is chosen from."""
    downsamples = {"rnn_spn": FLAGS.downsamples, "ffn_spn": FLAGS.ffn_downsamples}
    ds = [float(d) for d in downsamples[model]] if model in downsamples else [None]
    return [(d, float(p)) for d in ds for p in FLAGS.dropouts]


def protocol_run(model, d, dropout, seed, select: bool) -> dict:
    """One run of the protocol (a grid run, or a seed at the chosen setting)."""
    steps = FLAGS.select_steps if select else FLAGS.steps
    config = reprolib.run_config(
        steps,
        {**reprolib.recipe(), "seed": seed},
        dataset="mnist_sequence",
        model=model,
        downsample=d or 2.0,
        optimizer=FLAGS.optimizer,
        dropout=dropout,
        validation_digits=FLAGS.validation_digits,
        train_examples=FLAGS.train_examples,
        eval_every=FLAGS.eval_every or max(steps // 10, 1),
    )
    name = model + (f"_d{d:g}" if d else "") + f"_drop{dropout:g}"
    workdir = Path(FLAGS.root) / (name + ("_select" if select else f"_s{seed}"))
    return reprolib.train_or_read(config, workdir)


def choose(grid: dict) -> dict:
    """Each model's ``(d, dropout)`` of the lowest validation error per digit
    (early-stopped) among its grid runs; the first of the grid on a tie."""
    chosen = {}
    for (model, d, dropout), r in grid.items():
        error = r["early_stopping"]["validation_error"]
        if model not in chosen or error < chosen[model][1]:
            chosen[model] = ((d, dropout), error)
    return {model: setting for model, (setting, _) in chosen.items()}


def _setting(d, dropout) -> list[str]:
    return ["–" if d is None else f"{d:g}", f"{dropout:g}"]


def selection_table(grid: dict, chosen: dict) -> str:
    rows = []
    for (model, d, dropout), r in grid.items():
        best = r["early_stopping"]
        mark = " **(chosen)**" if chosen.get(model) == (d, dropout) else ""
        rows.append(
            [
                NAMES[model] + mark,
                *_setting(d, dropout),
                f"{100 * best['validation_error']:.2f} (step {best['step']:,})",
                f"{r['parameters']:,}",
                f"{r['train_wall_time_s'] / 60:.1f}",
            ]
        )
    header = ["model", "d", "dropout", "% validation error per digit, lowest (at)"]
    return reprolib.markdown_table(header + ["params", "min/run"], rows)


def final_table(final: dict) -> str:
    rows = []
    for model, (setting, seeds) in final.items():
        stopped = [r["early_stopping"] for r in seeds]
        paper = PAPER.get((model, setting[0]))
        rows.append(
            [
                NAMES[model],
                *_setting(*setting),
                str(len(seeds)),
                reprolib.mean_sd(100 * s["test_error"] for s in stopped),
                "–" if paper is None else str(paper),
                reprolib.mean_sd(100 * s["test_sequence_error"] for s in stopped),
                ", ".join(f"{s['step']:,}" for s in stopped),
                reprolib.mean_sd(100 * r["test_error"] for r in seeds),
            ]
        )
    header = [
        "model",
        "d",
        "dropout",
        "seeds",
        "% test error per digit",
        "paper",
        "% sequences wrong",
        "stopped at step",
        "% per digit at the last step",
    ]
    return reprolib.markdown_table(header, rows)


def protocol_verdicts(final: dict) -> list[str]:
    """The paper's ordering, pair by pair, from the seeds' early-stopped errors
    (``reprolib.verdict``)."""
    out = []
    for a, b in CLAIMS:
        if a not in final or b not in final:
            continue
        ea = [100 * r["early_stopping"]["test_error"] for r in final[a][1]]
        eb = [100 * r["early_stopping"]["test_error"] for r in final[b][1]]
        out.append(
            f"{NAMES[a]} below {NAMES[b]} (paper: {PAPER_BEST[a]} < "
            f"{PAPER_BEST[b]}): {reprolib.verdict(ea, eb)}: "
            f"{reprolib.mean_sd(ea)} vs {reprolib.mean_sd(eb)} % per digit "
            f"{reprolib.seed_count(ea, eb)}"
        )
    return out


def draw_protocol_curves(final: dict, out: str | Path) -> Path | None:
    """Validation error per digit against training sequences seen, every seed of
    each model at its chosen setting (a dot where it stopped early)."""
    if not final:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for i, (model, (setting, seeds)) in enumerate(final.items()):
        color = f"C{i}"
        d, dropout = setting
        name = NAMES[model] + (f" d={d:g}" if d else "") + f", dropout {dropout:g}"
        for k, r in enumerate(seeds):
            seen = [p["step"] * FLAGS.batch_size / 1000 for p in r["curve"]]
            errors = [100 * p["validation_error"] for p in r["curve"]]
            ax.plot(
                seen,
                errors,
                "-",
                color=color,
                lw=1.2,
                alpha=0.8,
                label=f"{name} ({len(seeds)} seeds)" if k == 0 else None,
            )
            best = r["early_stopping"]
            ax.plot(
                best["step"] * FLAGS.batch_size / 1000,
                100 * best["validation_error"],
                "o",
                color=color,
                ms=4,
            )
    ax.set_xlabel("training sequences seen (thousands)")
    ax.set_ylabel("% validation error per digit")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Cluttered MNIST sequences: validation error along each run")
    fig.tight_layout()
    return reprolib.save_figure(fig, out)


def protocol(start: float) -> None:
    """The paper's protocol, end to end: the grid, the choice, the seeds, the
    section."""
    trained = [m for m in MODELS if FLAGS.conv_net or m != "conv_net"]
    grid = {}
    for model in trained:
        options = settings(model)
        for d, dropout in options if len(options) > 1 else []:
            print(f"[grid] {NAMES[model]} d={d} dropout={dropout:g}", flush=True)
            grid[(model, d, dropout)] = protocol_run(
                model, d, dropout, FLAGS.seed, True
            )
    chosen = choose(grid)
    final = {}
    for model in trained:
        setting = chosen.get(model) or settings(model)[0]
        seeds = []
        for seed in FLAGS.seeds:
            print(f"[seed {seed}] {NAMES[model]} d={setting[0]} dropout={setting[1]:g}")
            seeds.append(protocol_run(model, *setting, int(seed), False))
        final[model] = (setting, seeds)
    elapsed = time.perf_counter() - start
    curves = draw_protocol_curves(final, FLAGS.figure)
    everything = [*grid.values(), *(r for _, seeds in final.values() for r in seeds)]
    digits = reprolib.data_origin(everything[0])
    command = (
        ".venv/bin/python -m tools.reproduce_sequences "
        f"--validation_digits={FLAGS.validation_digits} "
        f"--train_examples={FLAGS.train_examples} "
        f"--downsamples={','.join(FLAGS.downsamples)} "
        f"--ffn_downsamples={','.join(FLAGS.ffn_downsamples)} "
        f"--conv_net={FLAGS.conv_net} --dropouts={','.join(FLAGS.dropouts)} "
        f"--select_steps={FLAGS.select_steps} --seeds={','.join(FLAGS.seeds)} "
        f"--steps={FLAGS.steps} --eval_every={FLAGS.eval_every} "
        f"--batch_size={FLAGS.batch_size} --optimizer={FLAGS.optimizer} "
        f"--learning_rate={FLAGS.learning_rate} --precision={FLAGS.precision} "
        f"--seed={FLAGS.seed} --root={FLAGS.root} --section={FLAGS.section} "
        f"--figure={FLAGS.figure}"
        + (f" --mnist_dir={FLAGS.mnist_dir}" if FLAGS.mnist_dir else "")
    )
    pick = (
        f"chosen per model on the validation set from d in "
        f"{{{', '.join(FLAGS.downsamples)}}} (RNN-SPN), {{{', '.join(FLAGS.ffn_downsamples)}}} "
        f"(FFN-SPN) and dropout in {{{', '.join(FLAGS.dropouts)}}}, one run of "
        f"{FLAGS.select_steps:,} steps each (seed {FLAGS.seed})"
        if grid
        else "as given (no grid)"
    )
    text = f"""## Cluttered MNIST sequences, the paper's protocol (RNN-SPN paper §4)

{reprolib.header("reproduce_sequences", command, elapsed, everything)}
- Validation: {digits.get("validation", "?")}.
- The paper: "For the test, validation and training sets we sample from the
  corresponding set in the original MNIST dataset. We create 60000 examples for
  training, 10000 for validation, and 10000 for testing", and "down-sampling factors
  and dropout rates optimized on the validation set". Ours: a fixed set of
  {FLAGS.train_examples:,} training sequences drawn once (the same for every seed and
  epoch), {FLAGS.validation_digits:,} validation sequences made only of the last
  {FLAGS.validation_digits:,} training digits (the training sequences never use them;
  MNIST has no validation set, and the paper does not say which training digits it
  held out: ours is the common 50,000 / 10,000 cut), and the fixed test set of the
  10,000 test digits.
- Settings: {pick}.
- Each chosen setting: {len(FLAGS.seeds)} seeds of {FLAGS.steps:,} steps at batch
  {FLAGS.batch_size} ({FLAGS.steps * FLAGS.batch_size / max(FLAGS.train_examples, 1):.1f}
  passes over the training set), {FLAGS.optimizer} at {FLAGS.learning_rate} divided by
  10 at 1/3 and 2/3 of the steps, {FLAGS.precision}; the validation set evaluated every
  {FLAGS.eval_every or max(FLAGS.steps // 10, 1):,} steps and at the end, and the test
  error given for the weights of the lowest validation error (early stopping).

The grid (% validation error per digit of each run's best step):

{selection_table(grid, chosen) if grid else "(no grid: one setting per model)"}

% test error on the fixed test set of 3-digit sequences, early-stopped on validation
(mean ± sd over the seeds):

{final_table(final)}

Does the paper's ordering hold?

{chr(10).join(f"- {v}" for v in protocol_verdicts(final)) or "- (no pairs)"}
{reprolib.picture_link(curves, FLAGS.out, "Sequences: validation error along each run", "Validation error per digit against training sequences seen, every seed of each model at its chosen setting; a dot where the run's validation error was lowest (its reported weights).")}"""
    out = reprolib.write(FLAGS.out, "reproduce_sequences", text, section=FLAGS.section)
    print(final_table(final))
    print(f"Wrote {out} ({elapsed / 60:.1f} min).")


@cli.preemptible()
def main(argv):
    del argv
    reprolib.set_defaults(**BUDGET)
    if FLAGS.validation_digits:
        protocol(time.perf_counter())
        return
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
