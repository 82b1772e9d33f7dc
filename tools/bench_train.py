"""Training-step throughput: CNN against ST-CNN, the CUB model, the input pipelines.

    .venv/bin/python -m tools.bench_train              # every case, ~15 min on 2 cores

Each case trains for ``--steps`` steps with ``python -m stn_tf.train``'s own loop
(``train.train_and_evaluate``), in a fresh subprocess, and reports:

- the step's rate, examples/s: the median of the progress windows after the
  first (which holds the compiling);
- ``input_wait``: the share of the step time the loop spent waiting for the next
  batch (``train.py`` measures it around ``next(iterator)``), median of the same
  windows;
- the input pipeline's own rate: the same training pipeline iterated alone, with
  nothing consuming it, after a warm-up;
- the peak resident memory of the subprocess (the CPU's equivalent of the
  accelerator memory a step needs; it includes TensorFlow itself, ~0.6 GB).

Cases run round-robin, ``--repeats`` times each, so background load hits them
alike; ratios are taken between medians of the same run. Distorted MNIST runs on
the embedded sample (the rate does not depend on the number of digits). CUB
cannot be downloaded here: its cases run the real CUB pipeline (JPEG decoding,
resizing, cropping, flipping) over synthetic JPEGs of CUB's typical size
(500x375, random pixels) served through ``tfds.testing.mock_data``, with random
backbones (``--weights=none``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

_REPO = pathlib.Path(__file__).resolve().parents[1]

from tools import benchlib


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    what: str
    config: dict
    steps: int
    log_every: int


_MNIST = {"mnist_source": "embedded", "batch_size": 256, "eval_batch_size": 500}
_CUB = {
    "dataset": "cub",
    "weights": "none",
    "image_size": 150,
    "crop_size": 75,
    "batch_size": 8,
    "eval_batch_size": 8,
}
CASES = {
    c.name: c
    for c in [
        Case(
            "rts_cnn",
            "mnist_rts CNN",
            {**_MNIST, "dataset": "mnist_rts", "model": "cnn"},
            60,
            15,
        ),
        Case(
            "rts_st_cnn",
            "mnist_rts ST-CNN (affine), XLA sampler",
            {**_MNIST, "dataset": "mnist_rts", "model": "st_cnn"},
            60,
            15,
        ),
        Case(
            "rts_cnn_bf16",
            "mnist_rts CNN, mixed_bfloat16",
            {
                **_MNIST,
                "dataset": "mnist_rts",
                "model": "cnn",
                "precision": "mixed_bfloat16",
            },
            60,
            15,
        ),
        Case(
            "rts_st_cnn_bf16",
            "mnist_rts ST-CNN (affine), XLA sampler, mixed_bfloat16",
            {
                **_MNIST,
                "dataset": "mnist_rts",
                "model": "st_cnn",
                "precision": "mixed_bfloat16",
            },
            60,
            15,
        ),
        Case(
            "rts_st_cnn_noxla",
            "mnist_rts ST-CNN (affine), plain sampler",
            {**_MNIST, "dataset": "mnist_rts", "model": "st_cnn", "xla_sampler": False},
            60,
            15,
        ),
        Case(
            "tc_cnn",
            "mnist_tc CNN",
            {**_MNIST, "dataset": "mnist_tc", "model": "cnn"},
            60,
            15,
        ),
        Case(
            "tc_st_cnn",
            "mnist_tc ST-CNN (affine), XLA sampler",
            {**_MNIST, "dataset": "mnist_tc", "model": "st_cnn"},
            60,
            15,
        ),
        Case(
            "tc_st_cnn_noxla",
            "mnist_tc ST-CNN (affine), plain sampler",
            {**_MNIST, "dataset": "mnist_tc", "model": "st_cnn", "xla_sampler": False},
            60,
            15,
        ),
        Case(
            "cub_0",
            "CUB 150 px, num_st 0 (Inception baseline)",
            {**_CUB, "num_st": 0},
            24,
            6,
        ),
        Case(
            "cub_2", "CUB 150 px, num_st 2, XLA sampler", {**_CUB, "num_st": 2}, 24, 6
        ),
        Case(
            "cub_2_noxla",
            "CUB 150 px, num_st 2, plain sampler",
            {**_CUB, "num_st": 2, "xla_sampler": False},
            24,
            6,
        ),
        Case(
            "cub_4", "CUB 150 px, num_st 4, XLA sampler", {**_CUB, "num_st": 4}, 24, 6
        ),
        Case(
            "cub_4_noxla",
            "CUB 150 px, num_st 4, plain sampler",
            {**_CUB, "num_st": 4, "xla_sampler": False},
            24,
            6,
        ),
        # For an accelerator (tools/gpu_check.sh): distortions on the device, the
        # XLA sampler on and off; CUB at the paper's sizes (augmented on the host:
        # its images have their own sizes until cropped).
        Case(
            "rts_st_cnn_device",
            "mnist_rts ST-CNN, distortions on the device, XLA sampler",
            {
                **_MNIST,
                "dataset": "mnist_rts",
                "model": "st_cnn",
                "augment_on": "device",
            },
            200,
            40,
        ),
        Case(
            "rts_st_cnn_device_noxla",
            "mnist_rts ST-CNN, distortions on the device, plain sampler",
            {
                **_MNIST,
                "dataset": "mnist_rts",
                "model": "st_cnn",
                "augment_on": "device",
                "xla_sampler": False,
            },
            200,
            40,
        ),
        Case(
            "cub_4_b16",
            "CUB 448 px, 4 x 224 px crops, batch 16, XLA sampler",
            {
                **_CUB,
                "num_st": 4,
                "image_size": 448,
                "crop_size": 224,
                "batch_size": 16,
            },
            40,
            8,
        ),
        Case(
            "cub_4_b16_noxla",
            "CUB 448 px, 4 x 224 px crops, batch 16, plain sampler",
            {
                **_CUB,
                "num_st": 4,
                "image_size": 448,
                "crop_size": 224,
                "batch_size": 16,
                "xla_sampler": False,
            },
            40,
            8,
        ),
        Case(
            "cub_w3_memory",
            "CUB W3: 448 px, 4 x 224 px crops, batch 16 (memory)",
            {
                **_CUB,
                "num_st": 4,
                "image_size": 448,
                "crop_size": 224,
                "batch_size": 16,
                "eval_batch_size": 4,
            },
            2,
            1,
        ),
    ]
}
# (numerator, denominator, target): step-time ratios the issue sets targets for.
RATIOS = [
    ("rts_st_cnn", "rts_cnn", 1.1),
    ("rts_st_cnn_noxla", "rts_cnn", None),
    ("rts_cnn_bf16", "rts_cnn", None),
    ("rts_st_cnn_bf16", "rts_st_cnn", None),
    ("tc_st_cnn", "tc_cnn", 1.1),
    ("tc_st_cnn_noxla", "tc_cnn", None),
    ("cub_2", "cub_0", None),
    ("cub_4", "cub_0", None),
    ("cub_2_noxla", "cub_2", None),
    ("cub_4_noxla", "cub_4", None),
    ("rts_st_cnn_device_noxla", "rts_st_cnn_device", None),
    ("cub_4_b16_noxla", "cub_4_b16", None),
]
PIPELINE_TARGET = 3.0  # the pipeline must produce batches 3x faster than the step eats

FLAGS = flags.FLAGS
# By default every case but those sized for an accelerator (tools/gpu_check.sh).
ACCELERATOR_CASES = (
    "rts_st_cnn_device",
    "rts_st_cnn_device_noxla",
    "cub_4_b16",
    "cub_4_b16_noxla",
)
flags.DEFINE_list(
    "cases", [c for c in CASES if c not in ACCELERATOR_CASES], "Cases to run."
)
flags.DEFINE_integer("repeats", 2, "Runs of each case, round-robin (median reported).")
flags.DEFINE_string("child", None, "Internal: run one case and print its JSON.")
flags.DEFINE_string(
    "out", "docs/benchmarks.md", "File whose bench_train section to write."
)
flags.DEFINE_string(
    "section",
    "bench_train",
    "Section of --out to write (another name keeps the whole grid's section).",
)


# --- one case, in a subprocess -----------------------------------------------------


def _mock_cub(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Synthetic CUB: 500x375 JPEGs (CUB's typical size) of random pixels."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    del self, decoders, read_config, shuffle_files
    rng = np.random.default_rng(0)
    n = 64 if split == "train" else 16
    encoded = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(
            buffer, format="JPEG", quality=90
        )
        encoded.append(buffer.getvalue())
    labels = np.arange(n, dtype=np.int64) % 200
    return tf.data.Dataset.from_tensor_slices({"image": encoded, "label": labels})


def _pipeline_rate(config, batches: int = 30) -> float:
    """Examples/s of the training pipeline alone (after 5 warm-up batches)."""
    from stn_tf import runs

    pipeline = runs.make_pipeline(
        config, "train", batch_size=config.batch_size, training=True
    )
    iterator = iter(pipeline.dataset())
    for _ in range(5):
        next(iterator)
    began = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.batch_size / (time.perf_counter() - began)


def run_case(name: str) -> dict:
    import contextlib

    import tensorflow_datasets as tfds

    from stn_tf import runs
    from stn_tf.training import train_and_evaluate

    case = CASES[name]
    config = runs.TrainConfig(
        **case.config,
        steps=case.steps,
        log_every=case.log_every,
        checkpoint_every=10**6,
        picture_every=10**6,
    )
    mock = contextlib.nullcontext()
    if config.dataset == "cub":
        sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # preparing is mocked
        mock = tfds.testing.mock_data(as_dataset_fn=_mock_cub)
    with mock, tempfile.TemporaryDirectory() as workdir:
        results = train_and_evaluate(config, workdir)
        rows = (pathlib.Path(workdir) / "metrics.csv").read_text().splitlines()[1:]
        header = (pathlib.Path(workdir) / "metrics.csv").read_text().splitlines()[0]
        columns = header.split(",")
        windows = [dict(zip(columns, r.split(","))) for r in rows][1:] or [
            dict(zip(columns, rows[-1].split(",")))
        ]
        step_rate = statistics.median(float(w["examples_per_s"]) for w in windows)
        wait = statistics.median(float(w["input_wait"]) for w in windows)
        pipeline = _pipeline_rate(config)
    return {
        "case": name,
        "parameters": results["parameters"],
        "step_examples_per_s": step_rate,
        "input_wait": wait,
        "pipeline_examples_per_s": pipeline,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --- the driver ----------------------------------------------------------------------


def _run_child(name: str) -> dict:
    cmd = [sys.executable, "-m", "tools.bench_train", f"--child={name}"]
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=_REPO, check=False)
    if done.returncode:
        raise SystemExit(
            f"case {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    result["wall_s"] = time.perf_counter() - began
    return result


def _table(medians: dict) -> str:
    lines = [
        "| case | what | parameters | step: examples/s | ms per example | input wait | pipeline alone: examples/s | pipeline / step | peak RSS (GB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in medians.items():
        ratio = r["pipeline_examples_per_s"] / r["step_examples_per_s"]
        lines.append(
            f"| `{name}` | {CASES[name].what} | {int(r['parameters']):,} | "
            f"{r['step_examples_per_s']:,.1f} | {1000 / r['step_examples_per_s']:.2f} | "
            f"{100 * r['input_wait']:.1f} % | {r['pipeline_examples_per_s']:,.0f} | "
            f"{ratio:.1f}x {'(met)' if ratio >= PIPELINE_TARGET else '(NOT met)'} | "
            f"{r['peak_rss_mb'] / 1024:.1f} |"
        )
    return "\n".join(lines)


def _ratios(medians: dict) -> str:
    lines = ["| step time of | relative to | ratio | target |", "|---|---|---:|---|"]
    for a, b, target in RATIOS:
        if a in medians and b in medians:
            ratio = (
                medians[b]["step_examples_per_s"] / medians[a]["step_examples_per_s"]
            )
            verdict = (
                ""
                if target is None
                else f"<= {target}x: {'met' if ratio <= target else 'NOT met'}"
            )
            lines.append(f"| `{a}` | `{b}` | {ratio:.2f}x | {verdict} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(run_case(FLAGS.child)), flush=True)
        return
    unknown = set(FLAGS.cases) - set(CASES)
    if unknown:
        raise app.UsageError(f"Unknown cases {sorted(unknown)}; known: {list(CASES)}")
    began = time.perf_counter()
    runs = {name: [] for name in FLAGS.cases}
    for repeat in range(FLAGS.repeats):
        for name in FLAGS.cases:
            if name == "cub_w3_memory" and repeat:
                continue  # one run says the memory
            result = _run_child(name)
            runs[name].append(result)
            print(
                f"[{repeat + 1}/{FLAGS.repeats}] {name}: {result['step_examples_per_s']:,.1f} ex/s, "
                f"input wait {100 * result['input_wait']:.1f} %, pipeline "
                f"{result['pipeline_examples_per_s']:,.0f} ex/s, peak {result['peak_rss_mb']:,.0f} MB "
                f"({result['wall_s']:.0f} s)",
                flush=True,
            )
    medians = {
        name: {
            key: statistics.median(r[key] for r in results)
            for key in results[0]
            if isinstance(results[0][key], (int, float))
        }
        for name, results in runs.items()
    }
    command = (
        f"`.venv/bin/python -m tools.bench_train --cases={','.join(FLAGS.cases)} "
        f"--repeats={FLAGS.repeats}"
        + (f" --section={FLAGS.section}" if FLAGS.section != "bench_train" else "")
        + "`"
    )
    title = "Training steps" + (
        f" ({FLAGS.section})" if FLAGS.section != "bench_train" else ""
    )
    text = f"""## {title}

Generated by `tools/bench_train.py`; rerun it to regenerate this section.

- Date: {time.strftime("%Y-%m-%d")}; {benchlib.tensorflow_version()} (CPU), {benchlib.cpu_model()}, {benchlib.cores()} cores
- Code: {benchlib.code_version("stn_tf", "pipelines")}
- Command: {command}; wall time {(time.perf_counter() - began) / 60:.1f} min

Each case is `python -m stn_tf.train`'s loop in a fresh subprocess (see the tool's
docstring): the step rate is the median of the progress windows after the first
(the compiling), `input wait` the share of the step time spent in `next(iterator)`,
the pipeline rate the same training pipeline iterated alone. Medians of
{FLAGS.repeats} runs per case, round-robin. MNIST at batch 256 on the embedded
sample; CUB on synthetic 500x375 JPEGs through the real CUB pipeline, random
backbones, batch 8 at 150 px (75 px crops) on this CPU; the W3 case is the paper's
448 px input with four 224 px crops at batch 16, run for 2 steps to read its peak
memory (peak resident memory of the process; the CPU stands in for an accelerator).

{_table(medians)}

Step-time ratios (from the examples/s above; the targets are issue 9's):

{_ratios(medians)}
"""
    path = benchlib.write_section(
        _REPO / FLAGS.out, FLAGS.section, text, tool="bench_train"
    )
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
