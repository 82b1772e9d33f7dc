"""The reproduction tools read a finished run back only if it ran the same config."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import run_python

from stn_tf.pipelines import datasets
from stn_tf.runs import TrainConfig
from tools import reprolib

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch):
    """The committed records of these tests' runs go to a temporary folder."""
    folder = tmp_path / "records"
    monkeypatch.setattr(reprolib, "RECORDS", folder)
    return folder


def _finish(workdir: Path, config: TrainConfig, steps: int, **results) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    (workdir / "results.json").write_text(
        json.dumps({"steps": steps, "test_error": 0.5, **results})
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

    monkeypatch.setattr(reprolib, "train_and_evaluate", fail)
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


def test_a_finished_run_is_recorded_and_a_fresh_clone_reads_the_record(
    tmp_path, records, monkeypatch
):
    config = TrainConfig(dataset="mnist_r", model="fcn", steps=10)
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_r_fcn"

    def train(config, workdir):
        _finish(Path(workdir), config, steps=10, dataset_revision=1)
        (Path(workdir) / "transformer.png").write_bytes(b"png")
        return json.loads((Path(workdir) / "results.json").read_text())

    monkeypatch.setattr(reprolib, "train_and_evaluate", train)
    assert reprolib.train_or_read(config, workdir)["test_error"] == 0.5
    path = reprolib.record_path(config, workdir)
    assert path.parent == records / "reproduce_mnist"
    assert path.name.startswith("mnist_r_fcn-") and path.suffix == ".json"
    record = json.loads(path.read_text())
    assert record["config"]["steps"] == 10 and record["results"]["steps"] == 10
    assert path.with_suffix(".png").read_bytes() == b"png"

    # A fresh clone: no workdir, only the record. It is read, not retrained.
    for f in workdir.iterdir():
        f.unlink()
    monkeypatch.setattr(reprolib, "train_and_evaluate", _fail)
    assert reprolib.train_or_read(config, workdir)["test_error"] == 0.5
    assert reprolib.picture(config, workdir) == path.with_suffix(".png")
    # Another config has another record: it would train.
    other = dataclasses.replace(config, seed=1)
    assert reprolib.record_path(other, workdir) != path
    with pytest.raises(AssertionError, match="trained"):
        reprolib.train_or_read(other, workdir)


def _fail(*args):
    raise AssertionError("trained a run that had finished")


def test_a_run_on_another_revision_of_its_dataset_is_not_read_back(tmp_path):
    # P's corners moved a distance of 5 px at revision 2: not P's data now.
    config = TrainConfig(dataset="mnist_p", model="fcn", steps=10)
    _finish(tmp_path, config, steps=10, dataset_revision=2)
    assert reprolib.finished(config, tmp_path) is None
    _finish(tmp_path, config, steps=10, dataset_revision=3)
    assert reprolib.finished(config, tmp_path) is not None
    # Revision 3 draws what revision 1 drew (the golden data show it).
    _finish(tmp_path, config, steps=10)  # no dataset_revision: revision 1
    assert reprolib.finished(config, tmp_path) is not None


def test_a_run_recorded_under_a_datasets_former_name_is_read_back(
    tmp_path, records, monkeypatch
):
    # mnist_p_distance is what mnist_p was at revision 2: its records name mnist_p.
    before = TrainConfig(dataset="mnist_p", model="cnn", steps=10, seed=1)
    folder = records / "reproduce_mnist"
    folder.mkdir(parents=True)
    for revision, error in ((2, 0.25), (3, 0.75)):
        (folder / f"mnist_p_cnn_s1-r{revision}.json").write_text(
            json.dumps(
                {
                    "config": dataclasses.asdict(before),
                    "results": {"test_error": error, "dataset_revision": revision},
                }
            )
        )
    monkeypatch.setattr(reprolib, "train_and_evaluate", _fail)
    now = dataclasses.replace(before, dataset="mnist_p_distance")
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_p_distance_cnn_s1"
    assert reprolib.train_or_read(now, workdir)["test_error"] == 0.25
    assert len(list(folder.iterdir())) == 2  # read, not recorded again
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_p_cnn_s1"
    assert reprolib.train_or_read(before, workdir)["test_error"] == 0.75
    # Another seed's record is not this run's, under either name: seed 2's
    # workdir finds seed 1's record by no name.
    (folder / "mnist_p_cnn_s2-r2.json").write_text(
        json.dumps(
            {
                "config": dataclasses.asdict(before),  # seed 1's config
                "results": {"test_error": 0.5, "dataset_revision": 2},
            }
        )
    )
    other = dataclasses.replace(now, seed=2)
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_p_distance_cnn_s2"
    with pytest.raises(AssertionError, match="trained"):
        reprolib.train_or_read(other, workdir)


def test_a_run_of_the_first_models_is_not_read_back_as_todays(tmp_path):
    config = TrainConfig(dataset="mnist_addition", model="st_fcn_2x", steps=10)
    _finish(tmp_path, config, steps=10)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["model_version"]  # written by version 1: one shared localisation net
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert reprolib.finished(config, tmp_path) is None
    assert reprolib.finished(dataclasses.replace(config, model_version=1), tmp_path)


def test_a_width_solved_when_the_run_started_matches_a_config_without_one(tmp_path):
    config = TrainConfig(dataset="mnist_r", model="cnn", steps=10)
    _finish(tmp_path, dataclasses.replace(config, width=41), steps=10)
    assert reprolib.finished(config, tmp_path) is not None
    assert reprolib.finished(dataclasses.replace(config, width=40), tmp_path) is None
    other_budget = dataclasses.replace(config, param_budget=100_000)
    assert reprolib.finished(other_budget, tmp_path) is None


def test_a_record_is_found_whatever_its_digest(tmp_path, records, monkeypatch):
    # Records written before a field was added to TrainConfig carry another
    # digest in their name; the run is still theirs.
    config = TrainConfig(dataset="mnist_r", model="fcn", steps=10)
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_r_fcn"
    saved = dataclasses.asdict(config)
    del saved["precision"]  # an older config.json, without the newer field
    folder = records / "reproduce_mnist"
    folder.mkdir(parents=True)
    (folder / "mnist_r_fcn-0123456789.json").write_text(
        json.dumps({"config": saved, "results": {"test_error": 0.25}})
    )
    monkeypatch.setattr(reprolib, "train_and_evaluate", _fail)
    assert reprolib.train_or_read(config, workdir)["test_error"] == 0.25
    assert len(list(folder.iterdir())) == 1  # read, not recorded again


def test_a_colocalisation_is_recorded_and_read_back_with_its_picture(
    tmp_path, records, monkeypatch
):
    # Any run whose config is a dataclass saved as config.json is recorded: here
    # stn_tf.colocalise's, which has no model, width or model_version.
    from stn_tf.colocalise import CoLocConfig

    config = CoLocConfig(dataset="mnist_coloc_tc", digit=3, encoder="runs/e", steps=5)
    workdir = tmp_path / "runs" / "reproduce_coloc" / "mnist_coloc_tc_digit3"
    calls = []

    def colocalise(config, workdir):
        calls.append(workdir)
        workdir = Path(workdir)
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
        (workdir / "results.json").write_text(json.dumps({"localised": 0.75}))
        (workdir / "colocalisation.png").write_bytes(b"boxes")
        return {"localised": 0.75}

    assert reprolib.train_or_read(config, workdir, colocalise) == {"localised": 0.75}
    path = reprolib.record_path(config, workdir)
    assert path.parent == records / "reproduce_coloc"
    assert path.with_suffix(".png").read_bytes() == b"boxes"

    for f in workdir.iterdir():  # a fresh clone: only the record
        f.unlink()
    assert reprolib.train_or_read(config, workdir, colocalise) == {"localised": 0.75}
    assert len(calls) == 1
    assert reprolib.picture(config, workdir, "colocalisation.png") == path.with_suffix(
        ".png"
    )
    # Another digit, or the scale learned, is another run.
    for change in ({"digit": 4}, {"learn_scale": True}):
        other = dataclasses.replace(config, **change)
        assert reprolib.recorded(other, workdir) is None


def test_the_data_origin_names_the_folder_beside_the_repository_relatively():
    beside = str(reprolib.benchlib.REPO.parent.resolve())
    results = {
        "digits": {"train": f"IDX files in {beside}/shared/data/mnist-full (train)"}
    }
    assert reprolib.data_origin(results) == {
        "train": "IDX files in ../shared/data/mnist-full (train)"
    }
    assert reprolib.data_origin({}) == {}


def test_a_fresh_record_carries_its_provenance_and_no_absolute_path(
    tmp_path, records, monkeypatch
):
    # The run reads IDX files from a folder given by its absolute path (here a copy
    # of the embedded sample outside the repository).
    import hashlib
    import shutil
    import subprocess

    from stn_tf.pipelines import mnist

    folder = tmp_path / "idx"
    shutil.copytree(mnist.EMBEDDED_DIR, folder)
    config = TrainConfig(
        dataset="mnist_r",
        model="fcn",
        steps=10,
        mnist_dir=str(folder),
        mnist_source="idx",
        precision="mixed_bfloat16",
    )
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_r_fcn"

    def train(config, workdir):
        origin = {s: f"IDX files in {folder} ({s})" for s in ("train", "test")}
        _finish(Path(workdir), config, steps=10, dataset_revision=1, digits=origin)
        return json.loads((Path(workdir) / "results.json").read_text())

    monkeypatch.setattr(reprolib, "train_and_evaluate", train)
    # A commit made while the run trains is not the code that trained it: the
    # record names the code as it was when the tool started (reprolib.CODE).
    monkeypatch.setattr(
        reprolib, "_commit", lambda: {"commit": "later", "code_changed_since_commit": 0}
    )
    reprolib.train_or_read(config, workdir)
    record = json.loads(reprolib.record_path(config, workdir).read_text())

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        return [value] if isinstance(value, str) else []

    # No machine's absolute path, alone or inside a sentence ("IDX files in ...").
    absolute = [s for s in strings(record) if s.startswith("/") or " /" in s]
    assert not absolute
    facts = record["provenance"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=reprolib.benchlib.REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert facts["commit"] == head and facts["code_changed_since_commit"] in (
        True,
        False,
    )
    assert (facts["dataset_revision"], facts["precision"]) == (1, "mixed_bfloat16")
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    onednn = "on" if _pywrap_util_port.IsMklEnabled() else "off"
    assert facts["framework"] == f"TensorFlow {tf.__version__}, oneDNN {onednn}"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        files = facts["data_sha256"][split]
        want = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir()
            if p.name.startswith(f"{prefix}-")
        }
        assert len(want) == 2 and {k: files[k] for k in want} == want
        assert not Path(files["folder"]).is_absolute()
        assert (reprolib.benchlib.REPO / files["folder"]).resolve() == folder.resolve()
    assert not Path(record["config"]["mnist_dir"]).is_absolute()
    assert "IDX files in " in record["results"]["digits"]["train"]
    # Still read back as the same run (its folder named relatively).
    monkeypatch.setattr(reprolib, "train_and_evaluate", _fail)
    for f in workdir.iterdir():
        f.unlink()
    assert reprolib.recorded(config, workdir)["steps"] == 10


def test_a_colocalisation_record_names_its_encoders_weights(tmp_path, records):
    from stn_tf.colocalise import CoLocConfig

    config = CoLocConfig(digit=3, encoder="runs/e", steps=5, mnist_source="embedded")
    workdir = tmp_path / "runs" / "reproduce_coloc" / "mnist_coloc_t_digit3"
    results = {
        "localised": 0.75,
        "encoder_weights_sha256": "ab" * 32,
        "digits": "embedded 1000-digit MNIST sample (test)",
    }

    def colocalise(config, workdir):
        Path(workdir).mkdir(parents=True)
        (Path(workdir) / "config.json").write_text(
            json.dumps(dataclasses.asdict(config))
        )
        return results

    reprolib.train_or_read(config, workdir, colocalise)
    facts = json.loads(reprolib.record_path(config, workdir).read_text())["provenance"]
    assert facts["encoder_weights_sha256"] == "ab" * 32
    assert set(facts["data_sha256"]) == {"test"}  # the one split it reads
    assert len(facts["data_sha256"]["test"]) == 3  # folder, images, labels


def test_run_config_takes_its_recipe_as_an_argument_not_from_flags():
    # The flags are not parsed in this test process: reading one would raise.
    config = reprolib.run_config(
        300,
        {"batch_size": 7, "learning_rate": 0.5, "seed": 3, "mnist_dir": "digits"},
        dataset="mnist_rts",
        model="cnn",
        seed=4,  # a field given for one run wins over the recipe
    )
    assert (config.steps, config.batch_size, config.learning_rate) == (300, 7, 0.5)
    assert (config.seed, config.mnist_dir, config.mnist_source) == (4, "digits", "idx")
    assert (config.log_every, config.checkpoint_every, config.picture_every) == (
        30,
        60,
        300,
    )
    embedded = reprolib.run_config(10, {"mnist_dir": None}, dataset="mnist")
    assert embedded.mnist_source == "embedded"


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (those inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_tool_imports_the_training_command():
    # The training command's module defines its flags on import; a tool that
    # imported it would read them. tools.reliability runs the command itself, in
    # process, to check its answers to bad input.
    users = {
        path.stem
        for path in (REPO / "tools").glob("*.py")
        if "stn_tf.train" in _imports(path)
    }
    assert users == {"reliability"}


def test_the_reproductions_define_their_run_flags_from_the_config():
    # In a new Python, as a command runs: the reproductions' --steps,
    # --batch_size, ... are made from TrainConfig's declarations (by
    # stn_tf.fields), and the training command is not imported.
    names = [
        "reproduce_mnist",
        "reproduce_budget",
        "reproduce_addition",
        "reproduce_sequences",
        "reproduce_coloc",
        "reproduce_paper_budget",
    ]
    script = f"""
import sys
from absl import flags
for name in {names!r}:
    __import__("tools." + name)
assert "stn_tf.train" not in sys.modules
for name in {list(reprolib.RUN_FLAGS)!r}:
    assert flags.FLAGS.find_module_defining_flag(name) == "stn_tf.fields", name
"""
    run_python(script, cwd=REPO)


def test_a_revised_datasets_run_is_recorded_beside_the_earlier_revisions(
    tmp_path, records, monkeypatch
):
    # The same config on P's revision 3 and on its revision 2, whose record was
    # named before revisions counted in the name: two records, neither written over.
    config = TrainConfig(dataset="mnist_p", model="fcn", steps=10)
    workdir = tmp_path / "runs" / "reproduce_mnist" / "mnist_p_fcn"
    spec = datasets.get_dataset("mnist_p")
    with monkeypatch.context() as m:  # the name a revision-1 set's run gets
        m.setattr(
            datasets, "get_dataset", lambda name: dataclasses.replace(spec, revision=1)
        )
        old = reprolib.record_path(config, workdir)
    old.parent.mkdir(parents=True)
    before = {
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "results": {"test_error": 0.25, "dataset_revision": 2},
    }
    old.write_text(json.dumps(before))
    _finish(workdir, config, steps=10, dataset_revision=3)
    assert reprolib.train_or_read(config, workdir)["test_error"] == 0.5
    new = reprolib.record_path(config, workdir)
    assert new != old and json.loads(old.read_text()) == before
    assert json.loads(new.read_text())["results"]["dataset_revision"] == 3
    # A record file of another run at the name is refused, not written over.
    new.write_text(json.dumps({**before, "config": {**before["config"], "seed": 5}}))
    with pytest.raises(FileExistsError, match="holds the record of another run"):
        reprolib.train_or_read(config, workdir)


def test_a_validation_splits_provenance_is_the_training_files_it_was_cut_from():
    from stn_tf.pipelines import mnist

    config = TrainConfig(
        dataset="mnist_sequence", mnist_source="embedded", validation_digits=100
    )
    origin = mnist.load_embedded("train").origin
    digits = {
        "train": f"{origin} digits 0-4899",
        "validation": f"{origin} digits 4900-4999",
        "test": mnist.load_embedded("test").origin,
    }
    data = reprolib.provenance(config, {"digits": digits})["data_sha256"]
    assert data["validation"] == data["train"] != data["test"]
    assert set(data["validation"]) == {
        "folder",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    }


def test_a_verdict_is_claimed_or_refuted_only_where_every_seed_agrees():
    assert reprolib.verdict([1.0, 1.9], [2.0, 3.0]) == "yes"
    assert reprolib.verdict([3.1, 4.0], [2.0, 3.0]) == "**no**"
    assert reprolib.verdict([1.0, 2.5], [2.0, 3.0]) == "not shown (the seeds overlap)"
    assert reprolib.verdict([2.0], [2.0]) == "not shown (the seeds overlap)"
    assert reprolib.seed_count([1.0], [2.0, 3.0]) == "(one seed)"
    assert reprolib.seed_count([1.0, 2.0, 3.0], [2.0, 3.0]) == "(2 seeds)"
    assert reprolib.mean_sd([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert reprolib.mean_sd([1.234]) == "1.23"
