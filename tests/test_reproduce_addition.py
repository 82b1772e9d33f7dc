"""tools/reproduce_addition.py: its runs' configs, and its section and figures
written from recorded runs alone (a fresh clone trains nothing)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from tools import reproduce_addition, reprolib


def _argv(tmp_path, *extra):
    return [
        "reproduce_addition",
        "--models=fcn,st_fcn_2x",
        "--transforms=affine",
        "--steps=400",
        "--batch_size=128",
        "--optimizer=rmsprop",
        "--learning_rate=0.001",
        "--momentum=0.9",
        "--lr_boundaries=100000",
        "--points=4",
        "--precision=float32",
        "--mnist_dir=",
        f"--root={tmp_path / 'runs' / 'reproduce_addition'}",
        f"--records={tmp_path / 'records'}",
        f"--out={tmp_path / 'r.md'}",
        f"--figure={tmp_path / 'sheet.png'}",
        f"--curves_figure={tmp_path / 'curves.png'}",
        *extra,
    ]


def test_the_runs_take_the_optimizer_schedule_and_evaluations_asked_for(tmp_path):
    with flagsaver.flagsaver():
        flags.FLAGS(
            _argv(
                tmp_path,
                "--steps_3d=50",
                "--batch_size_3d=8",
                "--momentum=0",
                "--loc_hold_steps=50",
            )
        )
        add = reproduce_addition.config("mnist_addition", "st_fcn_2x", "affine")
        fcn = reproduce_addition.config("mnist_addition", "fcn", None)
        volume = reproduce_addition.config("mnist_3d", "st_cnn_3d", "affine3d")
        recipe = reproduce_addition.recipe(400)
        command = reproduce_addition.command()
    assert (add.optimizer, add.steps, add.batch_size) == ("rmsprop", 400, 128)
    assert add.lr_boundaries == (100_000,) and add.eval_every == 100
    assert (add.momentum, add.loc_hold_steps, fcn.loc_hold_steps) == (0.0, 50, 0)
    assert (volume.steps, volume.batch_size, volume.eval_every) == (50, 8, 0)
    assert recipe == (
        "RMSprop, learning rate 0.001 constant, float32 compute, the localisation "
        "nets held at the identity for the first 50 steps (`--loc_hold_steps`)"
    )
    assert "--momentum=0.0 " in command and "--loc_hold_steps=50 " in command


def test_rmsprop_momentum_is_named_in_the_recipe(tmp_path):
    # The tools' default momentum is SGD's 0.9; under RMSprop it multiplies the
    # step about tenfold, so the section must say it is there.
    with flagsaver.flagsaver():
        flags.FLAGS(_argv(tmp_path))
        recipe = reproduce_addition.recipe(400)
    assert recipe.startswith("RMSprop with momentum 0.9, learning rate 0.001")


def test_a_fresh_clone_writes_the_section_from_the_records(tmp_path, monkeypatch):
    def fail(*args):
        raise AssertionError("trained")

    monkeypatch.setattr(reprolib, "train_and_evaluate", fail)
    with flagsaver.flagsaver():
        flags.FLAGS(_argv(tmp_path, "--no3d"))
        for (model, transform), errors in {
            ("fcn", None): [0.9, 0.8, 0.75, 0.7],
            ("st_fcn_2x", "affine"): [0.9, 0.6, 0.3, 0.1],
        }.items():
            config = reproduce_addition.config("mnist_addition", model, transform)
            workdir = reproduce_addition.workdir("mnist_addition", model, transform)
            path = reprolib.record_path(config, workdir)
            path.parent.mkdir(parents=True, exist_ok=True)
            results = {
                "test_error": errors[-1],
                "parameters": 400_000,
                "train_wall_time_s": 120.0,
                "digits": {"train": "60k", "test": "10k"},
                "curve": [
                    {"step": 100 * (i + 1), "test_error": e}
                    for i, e in enumerate(errors)
                ],
            }
            record = {"config": dataclasses.asdict(config), "results": results}
            path.write_text(json.dumps(record))
            if model == "st_fcn_2x":  # the transformer.png kept beside the record
                Image.new("RGB", (40, 20), "blue").save(path.with_suffix(".png"))
        reproduce_addition.main([])
    text = (tmp_path / "r.md").read_text()
    assert "| FCN | 70.00 | 1 | 47.7 | 400,000 | 2.0 |" in text
    assert "| 2xST-FCN Aff | 10.00 | 1 | 9.0 | 400,000 | 2.0 |" in text
    assert "- yes: 2xST-FCN Aff 10.00 % vs FCN 70.00 % (one seed)" in text
    assert "- Models: no pooling after the transformers" in text
    assert "RMSprop with momentum 0.9, learning rate 0.001 constant" in text
    assert "(curves.png)" in text and "(sheet.png)" in text
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    assert sheet.shape == (20, 40, 3) and (sheet == (0, 0, 255)).all()
    curves = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB")).astype(int)
    # matplotlib's first two colours: one line per run.
    for rgb in ((31, 119, 180), (255, 127, 14)):
        assert np.sum(np.all(np.abs(curves - rgb) < 10, axis=-1)) > 100, rgb


def test_seeds_and_pooling_give_each_seed_its_run_and_the_verdicts_their_count(
    tmp_path, monkeypatch
):
    trained = []
    errors = {"fcn": [0.70, 0.72], "cnn": [0.30, 0.40], "st_fcn_2x": [0.20, 0.35]}

    def train(config, workdir):
        workdir = Path(workdir)
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
        trained.append((workdir.name, config))
        return {
            "test_error": errors[config.model][config.seed],
            "parameters": 400_000,
            "train_wall_time_s": 60.0 * (1 + config.seed),
            "digits": {"train": "60k", "test": "10k"},
        }

    monkeypatch.setattr(reprolib, "train_and_evaluate", train)
    argv = _argv(tmp_path, "--no3d", "--models=fcn,cnn,st_fcn_2x", "--seeds=0,1")
    with flagsaver.flagsaver():
        flags.FLAGS([*argv, "--pool=2"])
        reproduce_addition.main([])
    names = {name: (c.seed, c.pool) for name, c in trained}
    assert names == {
        "mnist_addition_fcn": (0, None),
        "mnist_addition_fcn_s1": (1, None),
        "mnist_addition_cnn": (0, None),
        "mnist_addition_cnn_s1": (1, None),
        "mnist_addition_st_fcn_2x_affine_pool2": (0, 2),
        "mnist_addition_st_fcn_2x_affine_pool2_s1": (1, 2),
    }
    text = (tmp_path / "r.md").read_text()
    assert "| 2xST-FCN Aff | 27.50 ± 10.61 | 2 | 9.0 | 400,000 | 1.5 |" in text
    assert "- yes: 2xST-FCN Aff 27.50 ± 10.61 % vs FCN 71.00 ± 1.41 % (2 seeds)" in text
    assert (
        "- not shown (the seeds overlap): 2xST-FCN Aff 27.50 ± 10.61 % vs CNN" in text
    )
    assert "- Models: average pooling by 2 after the transformers" in text
    assert "--pool=2 --seeds=0,1 " in text
    # Without --pool the same seeds are other runs, in their own folders.
    trained.clear()
    with flagsaver.flagsaver():
        flags.FLAGS([*argv, "--models=st_fcn_2x"])
        reproduce_addition.main([])
    assert [(n, c.pool) for n, c in trained] == [
        ("mnist_addition_st_fcn_2x_affine", None),
        ("mnist_addition_st_fcn_2x_affine_s1", None),
    ]
