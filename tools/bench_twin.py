"""The training step against a PyTorch twin: the RTS CNN and ST-CNN, each framework
in a process of its own, interleaved rounds; writes the ``bench_twin`` section of
``docs/benchmarks.md``.

    .venv/bin/python -m tools.bench_twin          # needs .venv-bench (PyTorch)

The TensorFlow side trains ``stn_tf``'s own model with the training command's own
step (``runs.build_model``, ``optim.make_optimizer``, ``step.make_train_step``:
SGD with momentum, the XLA sampler), the PyTorch side its twin
(``tools/bench_twin_torch.py``: the same layers, ``F.affine_grid`` +
``F.grid_sample``, ``torch.optim.SGD``). Both train on one fixed batch of random
42x42 images, so the input pipeline is left out (``tools/bench_train.py`` times
ours with it): examples/s per window of steps, the median of the windows, then
the median of the rounds with their min-max.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tools import benchlib

_REPO = pathlib.Path(__file__).resolve().parents[1]
LABELS = {"cnn": "CNN", "st_cnn": "ST-CNN Aff"}

benchlib.define_flag("list", "models", ["cnn", "st_cnn"], "Models (RTS).")
benchlib.define_flag("list", "batches", ["128", "256"], "Batch sizes.")
benchlib.define_flag("integer", "rounds", 3, "Rounds: one process per framework each.")
benchlib.define_flag("integer", "steps", 30, "Timed steps per case in each process.")
benchlib.define_flag("integer", "warmup", 5, "Untimed steps per case first.")
benchlib.define_flag("integer", "window", 10, "Steps per timed window.")
benchlib.define_flag(
    "string", "torch_python", ".venv-bench/bin/python", "Python with PyTorch."
)
benchlib.define_flag("bool", "torch", True, "Train the PyTorch twin too.")
benchlib.define_flag("bool", "tf_side", False, "Internal: the TensorFlow process.")
benchlib.define_flag("string", "side_out", "", "Internal: the side's JSON.")
benchlib.define_flag(
    "string", "out", "docs/benchmarks.md", "File whose bench_twin section to write."
)
FLAGS = flags.FLAGS


def cases() -> list[str]:
    return [f"{m}@{b}" for m in FLAGS.models for b in FLAGS.batches]


def train_case(model_name: str, batch: int) -> dict:
    """Ours: examples/s of each window of training steps on a fixed batch."""
    import tensorflow as tf

    from stn_tf import runs
    from stn_tf.training import distribute, optim, step

    config = runs.TrainConfig(
        dataset="mnist_rts", model=model_name, batch_size=batch, steps=10**6
    )
    strategy = distribute.make_strategy()
    with strategy.scope():
        model = runs.build_model(config, jit_compile=config.xla_sampler)
        optimizer, _ = optim.make_optimizer(config, model)
    train_step = step.make_train_step(config, model, optimizer, strategy)
    rng = np.random.default_rng(0)
    data = {
        "image": rng.uniform(size=(batch, 42, 42, 1)).astype(np.float32),
        "label": rng.integers(0, 10, batch).astype(np.int32),
    }
    dataset = tf.data.Dataset.from_tensors(data).repeat()
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    def one():
        return float(train_step(next(batches))[0])  # the loss: waits for the step

    rates, warm_s = benchlib.time_windows(
        one, batch, FLAGS.warmup, FLAGS.steps, FLAGS.window
    )
    return {"params": model.count_params(), "rates": rates, "warm_s": warm_s}


def tf_side() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    result = {"framework": benchlib.tensorflow_version(), "cases": {}}
    for case in cases():
        model, batch = case.split("@")
        result["cases"][case] = train_case(model, int(batch))
        rate = statistics.median(result["cases"][case]["rates"])
        print(f"tf {case}: {rate:,.0f} ex/s", flush=True)
    pathlib.Path(FLAGS.side_out).write_text(json.dumps(result))


def side_command(framework: str, out: str) -> list[str]:
    common = [
        f"--steps={FLAGS.steps}",
        f"--warmup={FLAGS.warmup}",
        f"--window={FLAGS.window}",
    ]
    if framework == "tf":
        return [
            sys.executable,
            "-m",
            "tools.bench_twin",
            "--tf_side",
            f"--side_out={out}",
            f"--models={','.join(FLAGS.models)}",
            f"--batches={','.join(FLAGS.batches)}",
            *common,
        ]
    return [
        FLAGS.torch_python,
        "-m",
        "tools.bench_twin_torch",
        f"--out={out}",
        f"--cases={','.join(cases())}",
        *common,
    ]


def table(rounds: list[dict]) -> str:
    """Per case: each framework's examples/s (median of the rounds' window
    medians, min-max) and ours over PyTorch's (per-round ratios)."""
    frameworks = list(rounds[0])
    rate = {
        fw: {
            case: [statistics.median(r[fw]["cases"][case]["rates"]) for r in rounds]
            for case in rounds[0][fw]["cases"]
        }
        for fw in frameworks
    }
    header = ["model", "batch", "params (ours)"]
    header += [f"{'ours' if fw == 'tf' else 'PyTorch twin'} ex/s" for fw in frameworks]
    if "torch" in rate:
        header += ["params (twin)", "ours / twin (speed)"]
    rows = []
    for case in rate["tf"]:
        model, batch = case.split("@")
        row = [LABELS[model], batch, f"{rounds[0]['tf']['cases'][case]['params']:,}"]
        row += [benchlib.span(rate[fw][case], "{:,.0f}") for fw in frameworks]
        if "torch" in rate:
            ratios = [a / b for a, b in zip(rate["tf"][case], rate["torch"][case])]
            row += [
                f"{rounds[0]['torch']['cases'][case]['params']:,}",
                benchlib.span(ratios, "{:.2f}x"),
            ]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render(rounds: list[dict], elapsed_s: float) -> str:
    frameworks = ", ".join(f"{k}: {v['framework']}" for k, v in rounds[0].items())
    command = (
        f".venv/bin/python -m tools.bench_twin --models={','.join(FLAGS.models)} "
        f"--batches={','.join(FLAGS.batches)} --rounds={FLAGS.rounds} "
        f"--steps={FLAGS.steps} --warmup={FLAGS.warmup} --window={FLAGS.window}"
        + ("" if FLAGS.torch else " --notorch")
    )
    return f"""## Training step against a PyTorch twin (RTS)

Generated by `tools/bench_twin.py`; rerun it to regenerate this section.

- Date: {datetime.date.today().isoformat()}; CPU: {benchlib.cpu_model()}, {benchlib.cores()} cores; Python {platform.python_version()}
- Processes: {frameworks}
- Command: `{command}`
- {FLAGS.rounds} rounds, each one process per framework in turn (the order
  alternating); in each, per case {FLAGS.warmup} untimed steps, then
  {FLAGS.steps // FLAGS.window} windows of {FLAGS.window} steps on one fixed batch of
  random 42x42 images. Cells: the median over the rounds of each process's median
  window, min–max in brackets; the ratio is ours over the twin's examples/s (above 1:
  ours faster), per round. Wall time {elapsed_s / 60:.1f} min.

{table(rounds)}
"""


def main(argv):
    del argv
    if FLAGS.tf_side:
        tf_side()
        return
    frameworks = ["tf"]
    if FLAGS.torch:
        if not (_REPO / FLAGS.torch_python).exists():
            raise app.UsageError(
                f"--torch_python={FLAGS.torch_python} does not exist: the twin needs "
                "the benchmark environment (see tools/bench_sampler_torch.py), or "
                "pass --notorch."
            )
        frameworks.append("torch")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rounds = benchlib.run_rounds(
            frameworks,
            FLAGS.rounds,
            pathlib.Path(folder),
            lambda framework, r, out: (side_command(framework, str(out)), _REPO),
        )
    text = render(rounds, time.perf_counter() - start)
    print(table(rounds))
    out = benchlib.write_section(FLAGS.out, "bench_twin", text)
    print(f"Wrote {out}.")


if __name__ == "__main__":
    app.run(main)
