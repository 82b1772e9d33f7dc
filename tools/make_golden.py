"""Writes tests/golden/: runs and data made by the code of the day, for good.

    .venv/bin/python -m tools.make_golden

The files it writes are the reference that later code must keep restoring and
reproducing (tests/test_golden.py): never rerun it to make a failing golden test
pass; a failure means a checkpoint layout, a config or a data stream changed.

- ``runs/<name>/``: one tiny run per MNIST model family (2 SGD steps on the
  embedded MNIST sample, ``param_budget`` 20,000 where the width is solved), and
  one per model whose definition changed in version 2 (``<name>_v2``, written by
  the code of 2026-12-02; the others are version 1's, of 2026-11-29):
  ``config.json``, ``variables.json`` (the name and shape of every variable in
  a checkpoint of the model: the layout later code must keep), its checkpoint and ``outputs.npz``
  holding four test examples and the restored model's outputs on them (logits,
  θ, crops). ``conv_net`` and ``ffn_spn`` keep no checkpoint and outputs: their
  fixed widths make 14 and 66 MB of weights; their layout is still checked.
- ``data.npz``: for every generated dataset, the first four examples of its
  fixed test set and the first training batch of four at seed 0 (embedded sample);
  ``revisions.json``: the revision of each dataset's definition they were made at.
  A dataset changed on purpose raises its ``DatasetSpec.revision``; then
  ``--revise=<name>`` rewrites its entries, and only those, and keeps the entries
  it replaces in ``former.npz`` as ``<name>@<revision>/...``: a dataset that says
  it draws what an earlier name or revision drew (``DatasetSpec.formerly``) is
  checked against them. Co-localisation's
  datasets (added 2026-12-02) also keep their ground truth (``truth.<field>``).

A golden entry is added once and never rewritten: ``--add=<run or dataset>``
writes runs and datasets that have none yet, and refuses the others.

CUB and SVHN runs are left out: their smallest models hold 22 and 33 million
parameters (90 and 130 MB of checkpoint).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import app, flags

from stn_tf import runs
from stn_tf.pipelines import datasets, mnist
from stn_tf.training import train_and_evaluate
from tools.sample_data import smoke_config

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"
FLAGS = flags.FLAGS
flags.DEFINE_list(
    "add",
    [],
    "Only write these golden runs (names in RUNS) and datasets' data, which have "
    "none yet; existing entries are refused, never rewritten.",
)
flags.DEFINE_list(
    "revise",
    [],
    "Only rewrite the golden data of these datasets, whose definition changed on "
    "purpose (their DatasetSpec.revision raised; see revisions.json).",
)

# name -> (model, dataset, transform)
RUNS = {
    "fcn": ("fcn", "mnist", None),
    "cnn": ("cnn", "mnist_rts", None),
    "st_fcn_tps": ("st_fcn", "mnist_p", "tps"),
    "st_cnn_affine": ("st_cnn", "mnist_rts", "affine"),
    "st_cnn_projective": ("st_cnn", "mnist_r", "projective"),
    "st_cnn_attention": ("st_cnn", "mnist_tc", "attention"),
    "st_fcn_2x": ("st_fcn_2x", "mnist_addition", "affine"),
    "rnn_spn": ("rnn_spn", "mnist_sequence", "affine"),
    "ffn_spn": ("ffn_spn", "mnist_sequence", "affine"),
    "conv_net": ("conv_net", "mnist_sequence", None),
    "st_cnn_3d": ("st_cnn_3d", "mnist_3d", "affine3d"),
    "cnn_3d": ("cnn_3d", "mnist_3d", None),
    # Version 2's models where they differ from version 1's (runs.MODEL_VERSIONS).
    "st_fcn_2x_v2": ("st_fcn_2x", "mnist_addition", "affine"),
    "rnn_spn_v2": ("rnn_spn", "mnist_sequence", "affine"),
    "st_cnn_3d_v2": ("st_cnn_3d", "mnist_3d", "affine3d"),
    "cnn_3d_v2": ("cnn_3d", "mnist_3d", None),
}
LAYOUT_ONLY = ("conv_net", "ffn_spn")
DATASETS = list(datasets.DATASETS)
EXAMPLES = 4


def run_config(model, dataset, transform, model_version=2) -> runs.TrainConfig:
    """The smoke config (``sample_data.smoke_config``) at the golden runs' values."""
    return smoke_config(
        dataset=dataset,
        model=model,
        transform=transform,
        steps=2,
        batch_size=4,
        learning_rate=0.05,
        log_every=1,
        checkpoint_every=2,
        model_version=model_version,
    )


def outputs(model, images) -> dict:
    out = model(images, training=False)
    return {k: np.asarray(v) for k, v in out.items()}


def write_layout(target: Path, model) -> None:
    """``variables.json``: name and shape of every variable as a checkpoint of the
    model alone names it (the paths a restore matches)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=model).write(str(Path(tmp) / "ckpt"))
        layout = [
            [n, s] for n, s in tf.train.list_variables(path) if n.startswith("model/")
        ]
    lines = ",\n".join(json.dumps(entry) for entry in layout)
    (target / "variables.json").write_text(f"[\n{lines}\n]\n")


def write_run(name, model, dataset, transform) -> None:
    # The runs without a _v2 suffix hold version 1's models.
    config = run_config(model, dataset, transform, 2 if name.endswith("_v2") else 1)
    target = GOLDEN / "runs" / name
    with tempfile.TemporaryDirectory() as tmp:
        train_and_evaluate(config, tmp)
        shutil.rmtree(target, ignore_errors=True)
        (target / "checkpoints").mkdir(parents=True)
        shutil.copy(Path(tmp) / "config.json", target)
        for path in (Path(tmp) / "checkpoints").iterdir():
            shutil.copy(path, target / "checkpoints")
    write_layout(target, runs.build_model(config, jit_compile=False))
    if name in LAYOUT_ONLY:
        shutil.rmtree(target / "checkpoints")
        return
    config, restored, _ = runs.restore(target)
    pipeline = runs.make_pipeline(config, "test", batch_size=EXAMPLES, training=False)
    images = next(iter(pipeline.dataset()))["image"].numpy()
    np.savez_compressed(
        target / "outputs.npz", images=images, **outputs(restored, images)
    )


def write_data(names=DATASETS) -> None:
    """The golden examples of ``names`` (the others kept as they are), and every
    dataset's revision in ``revisions.json``."""
    path = GOLDEN / "data.npz"
    arrays = dict(np.load(path)) if names != DATASETS and path.exists() else {}
    for split, training in (("test", False), ("train", True)):
        digits = mnist.load_mnist(split, source="embedded")
        for name in names:
            pipeline = datasets.Pipeline(
                name, digits, batch_size=EXAMPLES, training=training, seed=0
            )
            batch = next(iter(pipeline.dataset()))
            for field, value in flat_fields(batch).items():
                arrays[f"{name}/{split}/{field}"] = value
    np.savez_compressed(path, **arrays)
    revisions = {name: datasets.get_dataset(name).revision for name in DATASETS}
    (GOLDEN / "revisions.json").write_text(json.dumps(revisions, indent=2) + "\n")


def flat_fields(batch) -> dict:
    """A batch's arrays by field name; nested ones (co-localisation's ``truth``)
    as ``truth.<field>``."""
    fields = {"image": batch["image"].numpy(), "label": batch["label"].numpy()}
    for key, value in batch.get("truth", {}).items():
        fields[f"truth.{key}"] = value.numpy()
    return fields


def add(names) -> None:
    """Writes the golden runs and datasets among ``names`` that have none yet."""
    data = np.load(GOLDEN / "data.npz")
    have = {key.split("/")[0] for key in data.files}
    unknown = [n for n in names if n not in RUNS and n not in DATASETS]
    existing = [n for n in names if n in have or (GOLDEN / "runs" / n).exists()]
    if unknown or existing:
        raise SystemExit(
            f"--add takes golden runs ({', '.join(RUNS)}) or datasets "
            f"({', '.join(DATASETS)}) that have no golden entry yet. Unknown: "
            f"{unknown or 'none'}; already golden (never rewritten): "
            f"{existing or 'none'}"
        )
    for name in names:
        if name in RUNS:
            print(f"golden run {name}")
            write_run(name, *RUNS[name])
    new_data = tuple(n for n in names if n in DATASETS)
    if new_data:
        write_data(new_data)


def revise(names) -> None:
    """Rewrites the golden data of datasets whose definition was revised on
    purpose (their ``DatasetSpec.revision`` raised), and only theirs."""
    path = GOLDEN / "revisions.json"
    golden = json.loads(path.read_text()) if path.exists() else {}
    for name in names:
        now = datasets.get_dataset(name).revision
        if golden.get(name, 1) >= now:
            raise SystemExit(
                f"{name} is at revision {now}, as its golden data: raise its "
                "DatasetSpec.revision (and say why) before revising the golden data"
            )
    keep_former({name: golden.get(name, 1) for name in names})
    write_data(tuple(names))


def keep_former(revisions: dict) -> None:
    """Copies the golden data of each dataset name at its golden ``revision`` to
    ``former.npz`` as ``<name>@<revision>/...``, before they are rewritten."""
    data = np.load(GOLDEN / "data.npz")
    path = GOLDEN / "former.npz"
    former = dict(np.load(path)) if path.exists() else {}
    for name, revision in revisions.items():
        for key in data.files:
            if key.startswith(f"{name}/"):
                former[f"{name}@{revision}/{key.split('/', 1)[1]}"] = data[key]
    np.savez_compressed(path, **former)


def main(argv):
    del argv
    if FLAGS.add:
        add(FLAGS.add)
        print(f"added {', '.join(FLAGS.add)} to {GOLDEN}")
        return
    if FLAGS.revise:
        revise(FLAGS.revise)
        print(f"revised the golden data of {', '.join(FLAGS.revise)} in {GOLDEN}")
        return
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, spec in RUNS.items():
        print(f"golden run {name}")
        write_run(name, *spec)
    write_data()
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    app.run(main)
