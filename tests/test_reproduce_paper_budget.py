"""tools/reproduce_paper_budget.py: the paper's recipe, and a long run's state saved
into the repository and resumed from it elsewhere."""

from __future__ import annotations

import json
import signal

import pytest
from absl.testing import flagsaver
from conftest import tiny_config

from stn_tf import train
from tools import reproduce_paper_budget as tool


def test_the_config_is_a4s_recipe_at_its_budget():
    config = tool.paper_config(
        "mnist_r",
        "st_cnn",
        seed=2,
        mnist_dir="../shared/data/mnist-full",
        precision="float32",
        eval_every=5000,
    )
    assert (config.steps, config.batch_size) == (150_000, 256)
    assert (config.optimizer, config.learning_rate, config.momentum) == (
        "sgd",
        0.01,
        0.0,
    )
    assert config.lr_boundaries == (50_000, 100_000)
    assert (config.weight_decay, config.dropout) == (0.0, 0.0)
    assert tool.run_name(config) == "mnist_r_st_cnn_affine_s2"


@pytest.mark.slow
def test_a_saved_state_resumes_elsewhere_to_the_same_weights(tmp_path):
    fields = dict(
        deterministic=True, lr_boundaries=(100,), checkpoint_every=2, log_every=2
    )
    whole = train.train_and_evaluate(
        tiny_config(steps=6, **fields), str(tmp_path / "a")
    )

    first = tmp_path / "b"
    train.train_and_evaluate(tiny_config(steps=4, **fields), str(first))
    state = tmp_path / "state" / "run"
    saved = {p.relative_to(state).as_posix() for p in tool.save_state(first, state)}
    assert {"config.json", "metrics.csv", "checkpoints/checkpoint"} <= saved
    assert {
        "checkpoints/ckpt-4.index"
    } <= saved and "checkpoints/ckpt-2.index" not in saved

    elsewhere = tmp_path / "c"
    assert tool.restore_state(state, elsewhere)
    assert not tool.restore_state(
        state, elsewhere
    )  # it has a checkpoint of its own now
    resumed = train.train_and_evaluate(tiny_config(steps=6, **fields), str(elsewhere))
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    rows = (elsewhere / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]  # not retrained
    assert json.loads((elsewhere / "config.json").read_text())["steps"] == 6


def test_a_preempted_run_says_how_to_resume_without_a_traceback(
    tmp_path, monkeypatch, capsys
):
    def preempted(config, workdir):
        raise train.Preempted(1234, f"{workdir}/checkpoints/ckpt-1234")

    monkeypatch.setattr(tool.reprolib, "train_or_read", preempted)
    with flagsaver.flagsaver():
        tool.FLAGS(
            [
                "reproduce_paper_budget",
                "--models=cnn",
                f"--root={tmp_path / 'runs'}",
                f"--state={tmp_path / 'state'}",
            ]
        )
        with pytest.raises(SystemExit) as stopped:
            tool.main(["reproduce_paper_budget"])
    assert stopped.value.code == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "SIGTERM at step 1234: saved " in out and "mnist_r_cnn_s0" in out
    assert "run the same command to resume" in out and "--save" in out
