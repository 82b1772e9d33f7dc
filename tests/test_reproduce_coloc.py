"""tools/reproduce_coloc.py --variants: the paper's method, ours, and ours less
one aid each, on the same digit sets (the optimisation replaced by a fake)."""

import dataclasses
import json
from pathlib import Path

from absl import flags
from absl.testing import flagsaver

from stn_tf import colocalise
from tools import reproduce_coloc, reprolib


def test_every_variant_runs_on_the_same_sets_and_differs_from_ours_by_its_aid(
    tmp_path, monkeypatch
):
    ran = []

    def encoder(config, workdir):
        Path(workdir).mkdir(parents=True)
        (Path(workdir) / "config.json").write_text(
            json.dumps(dataclasses.asdict(config))
        )
        return {"test_error": 0.01, "digits": {"train": "60k", "test": "10k"}}

    def fake(config, workdir, progress=True):
        Path(workdir).mkdir(parents=True, exist_ok=True)
        (Path(workdir) / "config.json").write_text(
            json.dumps(dataclasses.asdict(config))
        )
        ran.append((Path(workdir).name, config))
        localised = {True: 0.9, False: 0.1}[config.stop_target] - 0.1 * config.digit / 4
        return {
            "localised": localised,
            "mean_iou": localised / 3,
            "encoder_weights_sha256": "ab" * 32,
            "wall_time_s": 1.0,
        }

    monkeypatch.setattr(reprolib, "train_and_evaluate", encoder)
    monkeypatch.setattr(colocalise, "colocalise", fake)
    argv = [
        "reproduce_coloc",
        "--variants=ours,paper,no_stop_target,sgd",
        "--digits=0,4",
        "--datasets=mnist_coloc_t,mnist_coloc_tc",
        "--mnist_dir=",
        f"--root={tmp_path / 'runs' / 'reproduce_coloc'}",
        f"--records={tmp_path / 'records'}",
        f"--out={tmp_path / 'r.md'}",
    ]
    with flagsaver.flagsaver():
        flags.FLAGS(argv)
        reproduce_coloc.main([])
    configs = {name: c for name, c in ran}
    assert len(configs) == 4 * 2 * 2
    ours = configs["mnist_coloc_t_digit4"]
    assert (ours.stop_target, ours.gradient_blur, ours.learn_scale) == (
        True,
        4.0,
        False,
    )
    assert (ours.optimizer, ours.scale) == ("adam", 28 / 84)
    paper = configs["mnist_coloc_t_digit4_paper"]
    assert (paper.stop_target, paper.gradient_blur, paper.learn_scale) == (
        False,
        0.0,
        True,
    )
    assert (paper.optimizer, paper.learning_rate, paper.momentum) == ("sgd", 0.01, 0.0)
    # Each ablation is ours with exactly its aid changed.
    for name, changed in {
        "no_stop_target": {"stop_target"},
        "sgd": {"optimizer", "learning_rate", "momentum"},
    }.items():
        other = configs[f"mnist_coloc_tc_digit0_{name}"]
        base = configs["mnist_coloc_tc_digit0"]
        differ = {
            f.name
            for f in dataclasses.fields(base)
            if getattr(base, f.name) != getattr(other, f.name)
        }
        assert differ == changed, name
    # The same image sets: only the variant's fields differ, never digit or seed.
    assert {(c.digit, c.seed, c.num_images, c.split) for c in configs.values()} == {
        (0, 0, 100, "test"),
        (4, 0, 100, "test"),
    }
    text = (tmp_path / "r.md").read_text()
    assert "| ours: all the aids | 90 | 80 | 85 | 0.28 | 90 | 80 | 85 | 0.28 |" in text
    assert "| ours, both windows of a pair moving | 10 | 0 | 5 | 0.02 |" in text
    assert "| the paper (Table 5) | 100 | 100 | 100 | – | 81 | 94 | 88 | – |" in text
    assert "SHA-256 `abababababababab...`" in text
