"""Presets: the papers' models with trained weights, in keras-hub's layout
(stn_tf.models.presets), bundled from recorded runs (tools/make_presets.py), and the
commands that take them (evaluate, demo, export)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from conftest import run_python, tiny_config

from stn_tf import models, runs
from stn_tf.models import CNN, RNNSPN, STCNN, STFCN2x, from_preset, presets
from stn_tf.pipelines import datasets
from tools import make_presets, reprolib

REPO = Path(__file__).resolve().parents[1]
FULL_MNIST = REPO.parent / "shared" / "data" / "mnist-full"


@pytest.mark.parametrize(
    "cls, args, kwargs",
    [
        (STCNN, ((28, 28, 1), 10), {"transform": "tps", "param_budget": 20_000}),
        (CNN, ((42, 42, 1), 10), {"param_budget": 20_000}),
        (STFCN2x, ((42, 42, 2), 19), {"param_budget": 20_000}),
        (RNNSPN, ((100, 100, 1), 10), {"sequence_length": 3}),
    ],
)
def test_save_to_preset_and_from_preset_round_trip(tmp_path, cls, args, kwargs):
    model = cls(*args, **kwargs)
    model.save_to_preset(tmp_path / "p", {"note": "mine"})
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(presets.FILES)
    serialized = json.loads((tmp_path / "p" / "config.json").read_text())
    assert serialized["registered_name"] == f"stn_tf>{cls.__name__}"
    meta = presets.read_metadata(tmp_path / "p")
    assert meta["note"] == "mine"
    assert meta["parameter_count"] == model.count_params()
    x = np.random.default_rng(0).random((2, *args[0]), np.float32)
    for loaded in (cls.from_preset(tmp_path / "p"), from_preset(tmp_path / "p")):
        assert type(loaded) is cls
        np.testing.assert_array_equal(loaded(x), model(x))


def test_float16_weights_load_as_float32_and_halve_the_file(tmp_path):
    model = STCNN((28, 28, 1), 10, param_budget=400_000)  # a preset's size
    model.save_to_preset(tmp_path / "full")
    model.save_to_preset(tmp_path / "half", weights_dtype="float16")
    size = {
        p: (tmp_path / p / "model.weights.h5").stat().st_size for p in ("full", "half")
    }
    assert size["half"] < 0.55 * size["full"]
    loaded = from_preset(tmp_path / "half")
    assert {w.dtype for w in loaded.weights} == {"float32"}
    for kept, stored in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(
            stored, kept.astype(np.float16).astype(np.float32)
        )


def test_a_bad_preset_is_refused_with_what_there_is(tmp_path):
    with pytest.raises(
        ValueError, match="Unknown preset 'mnist_nope'. Expected one of"
    ):
        from_preset("mnist_nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match="lacks model.weights.h5, metadata.json"
    ):
        from_preset(tmp_path)
    CNN((28, 28, 1), 10, param_budget=20_000).save_to_preset(tmp_path / "cnn")
    with pytest.raises(TypeError, match="holds a CNN .*not a STCNN"):
        STCNN.from_preset(tmp_path / "cnn")
    big = CNN((28, 28, 1), 10, width=4)
    big.weights[0].assign(np.full(big.weights[0].shape, 7e4, np.float32))
    with pytest.raises(ValueError, match="beyond 65504 into inf: .*kernel"):
        big.save_to_preset(tmp_path / "big", weights_dtype="float16")
    with pytest.raises(ValueError, match="weights_dtype must be"):
        presets.save_to_preset(CNN((28, 28, 1), 10, width=4), tmp_path, None, "int8")
    with pytest.raises(ValueError, match="no train_config or dataset_revision"):
        runs.restore(tmp_path / "cnn")


@pytest.mark.parametrize(
    "fields, paper",
    [
        ({"dataset": "mnist_rts", "model": "st_cnn", "transform": "tps"}, 0.5),
        ({"dataset": "mnist_p_distance", "model": "cnn"}, 1.5),  # the paper's P
        ({"dataset": "mnist_tc", "model": "st_fcn"}, 2.0),
        ({"dataset": "mnist_addition", "model": "st_fcn_2x", "transform": "tps"}, 5.8),
        ({"dataset": "mnist_sequence", "model": "rnn_spn", "downsample": 2.0}, 1.5),
        ({"dataset": "mnist_sequence", "model": "ffn_spn", "downsample": 2.0}, 2.0),
        ({"dataset": "mnist", "model": "cnn"}, None),  # no table has it
    ],
)
def test_a_presets_paper_number_is_its_tables(fields, paper):
    assert make_presets.paper_error(runs.TrainConfig.for_dataset(**fields)) == paper


def test_every_bundled_preset_is_named_after_its_run():
    for name in models.list_presets():
        meta = presets.read_metadata(name)
        assert name == make_presets.preset_name(runs.config_of(name)), name
        assert (REPO / meta["record"]).is_file(), meta["record"]


@pytest.fixture
def recorded_runs(tmp_path, monkeypatch):
    """Two seeds of a tiny ST-CNN run on P, trained and recorded as the
    reproductions record them (records and presets in temporary folders)."""
    monkeypatch.setattr(reprolib, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(presets, "PRESETS", tmp_path / "presets")
    monkeypatch.setattr(make_presets, "PICTURES", tmp_path / "pictures")
    root = tmp_path / "runs" / "reproduce_mnist"
    config = tiny_config(
        dataset="mnist_p", model="st_cnn", param_budget=20_000, steps=4
    )
    workdirs = []
    for seed, name in ((0, "mnist_p_st_cnn_affine"), (1, "mnist_p_st_cnn_affine_s1")):
        reprolib.train_or_read(dataclasses.replace(config, seed=seed), root / name)
        workdirs.append(root / name)
    return workdirs


@pytest.mark.slow
def test_a_recorded_run_becomes_a_preset_with_its_records_error(
    recorded_runs, tmp_path
):
    workdir = recorded_runs[0]
    with flagsaver.flagsaver(weights_dtype="float32", tolerance=0.0):
        flags.FLAGS.mark_as_parsed()
        target = make_presets.bundle(workdir, datasets.Sources(mnist_source="embedded"))
    assert target == presets.PRESETS / "mnist_p_st_cnn_affine"
    assert models.list_presets() == ["mnist_p_st_cnn_affine"]
    meta = presets.read_metadata("mnist_p_st_cnn_affine")
    results = json.loads((workdir / "results.json").read_text())
    assert meta["test_error"] == results["test_error"]
    assert meta["weights_sha256"] == results["weights_sha256"]
    assert meta["dataset_revision"] == 3 and meta["steps"] == 4
    assert len(meta["cell_errors_percent"]) == 2 and meta["cell"].endswith("(2 seeds)")
    assert meta["paper_error_percent"] == 0.8  # Table 1: ST-CNN Aff on P
    assert (REPO / meta["record"]).resolve() == reprolib._record(
        runs.read_config(workdir / "config.json"), workdir
    ).resolve()
    # The preset restores as its run does: the same outputs, in a Keras model
    # whose output is the class scores.
    _, run_model, _ = runs.restore(workdir)
    _, preset_model, step = runs.restore("mnist_p_st_cnn_affine")
    x = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
    np.testing.assert_allclose(
        preset_model(x)["logits"], run_model(x)["logits"], atol=1e-5
    )
    scores = STCNN.from_preset("mnist_p_st_cnn_affine")
    np.testing.assert_allclose(scores(x).numpy().sum(-1), 1.0, atol=1e-5)
    assert step == 4
    make_presets.cards(tmp_path / "presets.md")
    text = (tmp_path / "presets.md").read_text()
    assert "## `mnist_p_st_cnn_affine`" in text and "(2 seeds)" in text
    assert (make_presets.PICTURES / "mnist_p_st_cnn_affine.png").is_file()


@pytest.mark.slow
def test_a_cells_seeds_are_found_where_the_workdir_does_not_name_its_seed(
    tmp_path, monkeypatch
):
    # The sequence and addition tools name a workdir without its seed: seed 1
    # trains in the folder seed 0 trained in. Both seeds' records are the cell's,
    # each matched by its own config (one of seed 2 never ran).
    monkeypatch.setattr(reprolib, "RECORDS", tmp_path / "records")
    workdir = tmp_path / "runs" / "reproduce_sequences" / "mnist_p_cnn"
    config = tiny_config(dataset="mnist_p", model="cnn", param_budget=20_000, steps=2)
    errors = []
    for seed in (0, 1):
        if workdir.exists():
            shutil.rmtree(workdir)
        seeded = dataclasses.replace(config, seed=seed)
        errors.append(100 * reprolib.train_or_read(seeded, workdir)["test_error"])
    assert len(list((tmp_path / "records").rglob("mnist_p_cnn-*.json"))) == 2
    seeded = dataclasses.replace(config, seed=1)
    assert make_presets.cell_errors(seeded, workdir) == errors
    assert make_presets.record_of(workdir)[0].seed == 1


@pytest.mark.slow
def test_a_run_whose_weights_are_not_its_records_is_refused(recorded_runs):
    workdir = recorded_runs[0]
    results = json.loads((workdir / "results.json").read_text())
    results["weights_sha256"] = "0" * 64  # trained again since it was recorded
    (workdir / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="not its record's"):
        make_presets.record_of(workdir)


@pytest.mark.slow
def test_the_commands_take_a_preset_in_a_fresh_process(recorded_runs, tmp_path):
    # A user's folder, a preset directory of theirs: evaluate, demo and export,
    # each a new Python, with no custom_objects anywhere.
    with flagsaver.flagsaver(weights_dtype="float16", tolerance=0.05):
        flags.FLAGS.mark_as_parsed()
        target = make_presets.bundle(
            recorded_runs[0], datasets.Sources(mnist_source="embedded")
        )
    user = tmp_path / "user"
    user.mkdir()
    code = f"""
import subprocess, sys
for args in (
    ["stn_tf.evaluate", "--preset={target}", "--mnist_source=embedded"],
    ["stn_tf.demo", "--preset={target}", "--out=demo.png", "--num=4"],
    ["stn_tf.export.saved_model", "--preset={target}", "--out=served"],
    ["stn_tf.evaluate"],
):
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    print(args[0], done.returncode, done.stdout.strip(), done.stderr.strip()[-300:])
"""
    out = run_python(code, cwd=user, timeout=600).stdout
    assert "stn_tf.demo 0 wrote demo.png" in out
    assert "stn_tf.evaluate 0 " in out
    assert "% test error on 1,000 examples of mnist_p, float32" in out
    assert "  recorded: " in out and "the paper: 0.8 %" in out
    assert "stn_tf.export.saved_model 0 SavedModel of" in out
    assert (user / "served" / "1" / "saved_model.pb").is_file()
    assert "pass exactly one of --preset" in out  # neither given


@pytest.fixture(scope="module")
def preset_errors():
    """``{name: (examples, recorded examples, |error - recorded| in points)}`` of
    every bundled preset on the official test set, from one new process (as a
    user loads them; one TensorFlow start for all)."""
    if not FULL_MNIST.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{FULL_MNIST} is missing: CI checks every preset on it")
        pytest.skip(f"{FULL_MNIST} is missing (the official MNIST in IDX files)")
    code = f"""
import json
from stn_tf.evaluate import evaluate_run
from stn_tf.models import presets
from stn_tf.pipelines import datasets
sources = datasets.Sources(mnist_dir={str(FULL_MNIST)!r}, mnist_source="idx")
found = {{}}
for name in presets.list_presets():
    _, error, _, examples = evaluate_run(name, sources)
    meta = presets.read_metadata(name)
    gap = abs(100 * error - 100 * meta["test_error"])
    found[name] = (examples, meta["test_examples"], gap)
print(json.dumps(found))
"""
    out = run_python(code, cwd=REPO, timeout=1200).stdout
    return {name: tuple(v) for name, v in json.loads(out.splitlines()[-1]).items()}


@pytest.mark.skipif(
    not models.list_presets(),
    reason="no preset is bundled yet (their runs are under way)",
)
@pytest.mark.parametrize("name", models.list_presets())
def test_every_bundled_preset_gives_its_recorded_error_on_the_official_test_set(
    name, preset_errors
):
    examples, recorded, gap = preset_errors[name]
    assert examples == recorded, (name, examples, recorded)
    assert gap <= 0.05, f"{name}: {gap:.3f} points from its record"


@pytest.mark.keras_hub
def test_keras_hubs_own_loader_reads_our_preset_directory(tmp_path):
    # Optional: keras-hub is not a dependency. Where it is installed, its preset
    # loader builds our model from config.json and loads model.weights.h5.
    preset_utils = pytest.importorskip("keras_hub.src.utils.preset_utils")
    model = STCNN((28, 28, 1), 10, transform="projective", param_budget=20_000)
    model.save_to_preset(tmp_path / "p", weights_dtype="float16")
    loader = preset_utils.get_preset_loader(str(tmp_path / "p"))
    assert loader.check_backbone_class() is STCNN
    loaded = loader.load_backbone(None, load_weights=True)
    x = np.random.default_rng(0).random((2, 28, 28, 1), np.float32)
    np.testing.assert_array_equal(loaded(x), from_preset(tmp_path / "p")(x))
