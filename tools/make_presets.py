"""Bundles recorded training runs as presets (``stn_tf/presets/<name>/``) and writes
their cards, docs/presets.md.

    .venv/bin/python -m tools.make_presets --runs=runs/reproduce_mnist/mnist_p_cnn \\
        --mnist_dir=../shared/data/mnist-full

Each ``--runs`` entry is a finished run's workdir whose record is committed under
``docs/results/`` (``tools/reprolib``): its weights must be the record's (the
SHA-256 the run printed and recorded), so a preset's metadata names the record it
came from. The preset is named after the run's dataset, model and transform
(``mnist_rts_st_cnn_affine``), holds the model with class scores as its output,
and is evaluated again from its files on the official test set (``--mnist_dir``):
the error must be the record's to within ``--tolerance`` points. Its metadata
also gives the mean ± sd of the cell's recorded seeds and the paper's number.

``--cards_only`` rewrites docs/presets.md (and the pictures) from the bundled
presets without adding any.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from absl import app, flags

from stn_tf import models, runs
from stn_tf.demo import demo_picture
from stn_tf.evaluate import evaluate_run
from stn_tf.models import presets
from stn_tf.pipelines import datasets
from stn_tf.training.workdir import fingerprint
from tools import (
    benchlib,
    reproduce_addition,
    reproduce_mnist,
    reproduce_sequences,
    reprolib,
)

FLAGS = flags.FLAGS
reprolib.define_flag("list", "runs", [], "Finished, recorded runs to bundle.")
reprolib.define_flag(
    "enum",
    "weights_dtype",
    "float16",
    ["float16", "float32"],
    "How the weights are stored (loaded back as float32).",
)
reprolib.define_flag(
    "float", "tolerance", 0.05, "Largest difference, in points, from the record."
)
reprolib.define_flag("bool", "cards_only", False, "Only rewrite docs/presets.md.")
reprolib.define_flag("string", "cards", "docs/presets.md", "The cards' page.")

PICTURES = benchlib.REPO / "docs" / "images" / "presets"


def preset_name(config: runs.TrainConfig) -> str:
    """``<dataset>_<model>[_<transform>]``, the dataset under its name of today."""
    uses = models.get_model(config.model).uses_transform
    return f"{config.dataset}_{config.model}" + (f"_{config.transform}" if uses else "")


def record_of(workdir: Path) -> tuple[runs.TrainConfig, Path, dict]:
    """A finished run's config (its dataset under today's name), its committed
    record's path and the record; refused where there is none or its weights
    are not the record's."""
    saved = json.loads((workdir / "config.json").read_text())
    done = workdir / "results.json"
    if not done.is_file():
        raise SystemExit(f"{workdir} has not finished: no results.json")
    results = json.loads(done.read_text())
    name = datasets.named(saved["dataset"], results.get("dataset_revision", 1))
    if name is None:
        raise SystemExit(
            f"{workdir} ran on a revision of {saved['dataset']} no set draws"
        )
    config = runs.config_from_saved({**saved, "dataset": name})
    path = reprolib._record(config, workdir)
    if path is None:
        raise SystemExit(
            f"{workdir} has no committed record under {reprolib.RECORDS}: commit "
            "its record (the reproduction tool writes it) before bundling it"
        )
    record = json.loads(path.read_text())
    if record["results"].get("weights_sha256") != results.get("weights_sha256"):
        raise SystemExit(
            f"{workdir}'s weights are not its record's ({path.name}): the workdir "
            "was trained again since"
        )
    return config, path, record


def cell_errors(config: runs.TrainConfig, workdir: Path) -> list[float]:
    """% test errors of every recorded seed of the run's cell (its config, any
    seed; the seed's workdir named as the run's is: ``<name>_s<seed>``, or
    ``<name>`` as Table 1's seed 0 and every seed of the tools that do not name
    the seed are), the run's own included. A record matches only its own config,
    seed included, so trying both names never takes another seed's."""
    base = re.sub(r"_s\d+$", "", workdir.name)
    found = {}
    for seed in range(max(10, config.seed + 1)):
        other = dataclasses.replace(config, seed=seed)
        for name in (f"{base}_s{seed}", base):
            done = reprolib.read(other, workdir.parent / name)
            if done is not None:
                found[seed] = 100 * done["test_error"]
    return [found[seed] for seed in sorted(found)]


def paper_error(config: runs.TrainConfig) -> float | None:
    """The paper's % test error for the run's model and dataset: STN Table 1
    (both readings of P are its P), Table 4 left (addition), and the RNN-SPN
    paper's Table 1 (per digit, at the run's downsampling d); None elsewhere."""
    uses = models.get_model(config.model).uses_transform
    key = (config.model, config.transform if uses else None)
    if config.dataset == "mnist_addition":
        return reproduce_addition.PAPER.get(key)
    if config.dataset == "mnist_sequence":
        return reproduce_sequences.PAPER.get((config.model, config.downsample))
    column = reproduce_mnist.DISTORTIONS.get(config.dataset)
    if column is None or key not in reproduce_mnist.PAPER:
        return None
    return reproduce_mnist._paper(reproduce_mnist.PAPER[key], column)


def bundle(workdir: Path, sources: datasets.Sources) -> Path:
    """Writes the preset of one recorded run and checks it against the record."""
    config, path, record = record_of(workdir)
    restored = runs.restore(workdir)
    if fingerprint(restored[1]) != record["results"]["weights_sha256"]:
        raise SystemExit(f"{workdir}'s checkpoint does not hold its record's weights")
    seeds = cell_errors(config, workdir) or [100 * record["results"]["test_error"]]
    name = preset_name(config)
    metadata = {
        "name": name,
        "dataset": config.dataset,
        "model": config.model,
        "transform": config.transform,
        "seed": config.seed,
        "precision": config.precision,
        "test_error": record["results"]["test_error"],
        "test_examples": record["results"]["test_examples"],
        # Sequences: test_error is per digit; this, the share of sequences wrong.
        "test_sequence_error": record["results"].get("test_sequence_error"),
        "cell_errors_percent": seeds,
        "cell": f"{reprolib.mean_sd(seeds)} % ({len(seeds)} seed{'s' * (len(seeds) > 1)})",
        "paper_error_percent": paper_error(config),
        "record": Path(os.path.relpath(path, benchlib.REPO)).as_posix(),
        "record_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "weights_sha256": record["results"]["weights_sha256"],
    }
    # Checked in a folder of its own first: only a preset that gives its record's
    # error goes into the package.
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=presets.PRESETS.parent))
    try:
        runs.preset_from_run(
            workdir, staging, metadata, FLAGS.weights_dtype, restored=restored
        )
        check(staging, metadata, path.name, sources)
        target = presets.PRESETS / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        target.chmod(0o755)  # mkdtemp made it private
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check(preset: Path, metadata: dict, record: str, sources) -> None:
    """Refuses a preset whose files do not give its record's test error."""
    name = metadata["name"]
    _, error, _, examples = evaluate_run(preset, sources)
    gap = abs(100 * error - 100 * metadata["test_error"])
    print(
        f"{name}: {100 * error:.2f} % from the preset on {examples:,} examples, "
        f"{100 * metadata['test_error']:.2f} % recorded ({record})"
    )
    if examples != metadata["test_examples"] or gap > FLAGS.tolerance:
        raise SystemExit(
            f"{name} gives {100 * error:.2f} % on {examples:,} examples, not its "
            f"record's {100 * metadata['test_error']:.2f} % on "
            f"{metadata['test_examples']:,} (to {FLAGS.tolerance} points; the "
            "record's test set needs its digits: --mnist_dir)"
        )


OPTIMIZERS = {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam"}


def model_options(meta: dict) -> str:
    """`` (tps)``, `` (affine, d = 2)``: what a preset's model name leaves out."""
    options = []
    if models.get_model(meta["model"]).uses_transform:
        options.append(meta["transform"])
    if meta["dataset"] == "mnist_sequence" and meta["model"] != "conv_net":
        options.append(f"d = {meta['train_config']['downsample']:g}")
    return f" ({', '.join(options)})" if options else ""


def error_text(meta: dict) -> str:
    """The preset's recorded test error, per digit and per sequence on sequences."""
    text = f"{100 * meta['test_error']:.2f} %"
    if meta.get("test_sequence_error") is not None:
        text += (
            f" per digit ({100 * meta['test_sequence_error']:.2f} % of sequences wrong)"
        )
    return text + f" on {meta['test_examples']:,} test examples"


def cards(out: Path) -> Path:
    """docs/presets.md: a card per bundled preset, with its picture."""
    PICTURES.mkdir(parents=True, exist_ok=True)
    blocks = []
    for name in presets.list_presets():
        meta = presets.read_metadata(name)
        picture = PICTURES / f"{name}.png"
        demo_picture(name, datasets.Sources(mnist_source="embedded"), 8).save(picture)
        size = sum(f.stat().st_size for f in (presets.PRESETS / name).iterdir())
        train = meta["train_config"]
        recipe = (
            f"{OPTIMIZERS.get(train['optimizer'], train['optimizer'])} at "
            f"{train['learning_rate']}"
            + (f", momentum {train['momentum']}" if train.get("momentum") else "")
            + f", batch {train['batch_size']}, {meta['precision']}"
        )
        blocks.append(
            f"""## `{name}`

| | |
| --- | --- |
| dataset | `{meta["dataset"]}` (revision {meta["dataset_revision"]}) |
| model | `{meta["model"]}`{model_options(meta)}, {meta["parameter_count"]:,} parameters |
| recipe | {recipe} |
| budget | {meta["steps"]:,} steps, seed {meta["seed"]} |
| test error | {error_text(meta)}; the cell, every recorded seed: {meta["cell"]} |
| the paper | {meta["paper_error_percent"] if meta["paper_error_percent"] is not None else "–"} % |
| record | [`{Path(meta["record"]).name}`]({os.path.relpath(meta["record"], "docs")}) |
| files | {size / 1e6:.1f} MB ({meta["weights_dtype"]} weights) |

![{name} on test digits](images/presets/{name}.png)
"""
        )
    text = f"""# Presets: trained weights that ship with the package

Back to the [README](../README.md). Generated by `tools/make_presets.py` on
{datetime.date.today().isoformat()}; rerun it to regenerate this page.

Each preset is a recorded run of the reproductions, its weights bundled in keras-hub's
layout (`config.json`, `model.weights.h5`, `metadata.json`) and loaded offline:

```python
from stn_tf.models import STCNN, from_preset, list_presets
list_presets()
model = STCNN.from_preset("mnist_rts_st_cnn_affine")  # class scores out
model = from_preset("{(presets.list_presets() or ["mnist_p_cnn"])[0]}")  # any class
```

`python -m stn_tf.evaluate --preset=NAME --mnist_dir=DIR` evaluates one on its
dataset's fixed test set, `python -m stn_tf.demo --preset=NAME --out=demo.png` draws
what it does to test digits (the pictures below: the embedded sample's digits), and
`python -m stn_tf.export.saved_model --preset=NAME --out=DIR` exports it for TF Serving
and TFLite. A picture shows each test input with the transformer's sampling grid and
its output, captioned with the label and the prediction.

{chr(10).join(blocks) if blocks else "No preset is bundled yet: their runs are under way."}"""
    out.write_text(text)
    return out


def main(argv):
    del argv
    sources = reprolib.sources()
    if not FLAGS.cards_only:
        for workdir in FLAGS.runs:
            print(f"wrote {bundle(Path(workdir), sources)}")
    print(f"wrote {cards(Path(FLAGS.cards))}")


if __name__ == "__main__":
    app.run(main)
