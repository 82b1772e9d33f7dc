"""The reproduction tools read a finished run back only if it ran the same config."""

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stn_tf.runs import TrainConfig
from tools import reprolib


def _finish(workdir: Path, config: TrainConfig, steps: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    (workdir / "results.json").write_text(
        json.dumps({"steps": steps, "test_error": 0.5})
    )


def test_a_finished_run_is_read_back_only_with_its_own_config(tmp_path):
    config = TrainConfig(dataset="mnist_addition", model="fcn", steps=100)
    _finish(tmp_path, config, steps=100)
    assert reprolib.finished(config, tmp_path) == {"steps": 100, "test_error": 0.5}
    # Another optimizer, rate or step count is another run, not this one.
    for change in ({"optimizer": "rmsprop"}, {"learning_rate": 0.5}, {"steps": 200}):
        assert (
            reprolib.finished(dataclasses.replace(config, **change), tmp_path) is None
        )
    assert reprolib.finished(config, tmp_path / "missing") is None


def test_train_or_read_returns_the_finished_run_without_training(tmp_path, monkeypatch):
    config = TrainConfig(dataset="mnist_addition", model="fcn", steps=100)
    _finish(tmp_path, config, steps=100)

    def fail(*args):
        raise AssertionError("trained a run that had finished")

    monkeypatch.setattr(reprolib.trainer, "train_and_evaluate", fail)
    assert reprolib.train_or_read(config, tmp_path)["test_error"] == 0.5


def test_a_run_written_before_a_field_existed_reads_back_at_its_default(tmp_path):
    config = TrainConfig(dataset="mnist_addition", model="fcn", steps=100)
    _finish(tmp_path, config, steps=100)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["weight_decay"]  # an older config.json, without the newer field
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert reprolib.finished(config, tmp_path) is not None
    heavier = dataclasses.replace(config, weight_decay=0.1)
    assert reprolib.finished(heavier, tmp_path) is None


def test_the_same_data_under_another_path_is_the_same_run(tmp_path, monkeypatch):
    data = tmp_path / "shared" / "mnist"
    data.mkdir(parents=True)
    run = tmp_path / "run"
    config = TrainConfig(dataset="mnist_r", model="fcn", steps=10, mnist_dir=str(data))
    _finish(run, config, steps=10)
    monkeypatch.chdir(tmp_path)
    relative = dataclasses.replace(config, mnist_dir="shared/mnist")
    assert reprolib.finished(relative, run) is not None
    elsewhere = dataclasses.replace(config, mnist_dir="shared")
    assert reprolib.finished(elsewhere, run) is None
