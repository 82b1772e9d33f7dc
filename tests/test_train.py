"""End-to-end tests of the training command, driven in-process through its absl main."""

import csv
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver
from conftest import tiny_config

from stn_tf import runs, train
from stn_tf import train as trainer

TINY = [
    "--mnist_source=embedded",
    "--batch_size=8",
    "--eval_batch_size=250",
    "--log_every=2",
    "--checkpoint_every=2",
    "--picture_every=2",
    "--param_budget=20000",
]


def run_cli(*args):
    """``python -m stn_tf.train ARGS`` in this process."""
    with flagsaver.flagsaver():
        argv = flags.FLAGS(["stn_tf.train", *args])
        train.main(argv)


def _rows(workdir):
    with (workdir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_smoke_run_writes_every_artefact(tmp_path, capsys):
    run_cli(
        "--dataset=mnist_rts",
        "--model=st_cnn",
        "--transform=tps",
        "--steps=4",
        f"--workdir={tmp_path}",
        *TINY,
    )
    out = capsys.readouterr().out
    assert "st_cnn (tps) on mnist_rts:" in out and "parameters" in out
    assert "step 4/4" in out and "ETA" in out and "test error" in out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["transform"] == "tps" and config["lr_boundaries"] == [1, 2]
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} >= {"checkpoint"}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    rows = _rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0 <= float(r["grid_outside"]) <= 1 for r in rows)
    assert all(0 <= float(r["input_wait"]) < 1 for r in rows) and "input wait" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 4 and results["test_examples"] == 1000
    assert 0 <= results["test_error"] <= 1 and results["parameters"] > 0
    assert results["train_examples_per_s"] > 0
    assert (tmp_path / "transformer.png").stat().st_size > 1000
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(
        str(next((tmp_path / "tensorboard").glob("events*")))
    ):
        tags |= {v.tag for v in event.summary.value}
    assert {
        "loss",
        "error",
        "learning_rate",
        "theta_scale",
        "grid_outside",
        "theta",
        "transformer",
    } <= tags


def test_the_same_command_resumes_mid_run_from_the_last_checkpoint(tmp_path, capsys):
    common = [
        "--dataset=mnist_r",
        "--model=st_fcn",
        f"--workdir={tmp_path}",
        "--lr_boundaries=100",
        *TINY,
    ]
    run_cli("--steps=4", *common)
    first = json.loads((tmp_path / "results.json").read_text())
    capsys.readouterr()
    run_cli("--steps=8", *common)  # e.g. after the first run was stopped at step 4 of 8
    out = capsys.readouterr().out
    assert "at step 4" in out and "step 6/8" in out and "step 2/8" not in out
    assert [int(r["step"]) for r in _rows(tmp_path)] == [2, 4, 6, 8]  # nothing twice
    second = json.loads((tmp_path / "results.json").read_text())
    assert second["steps"] == 8 and first["steps"] == 4
    # The training time adds up over the sessions; a rerun with nothing left to train
    # evaluates again and keeps it (it used to report this session's 0 s).
    assert second["train_wall_time_s"] > first["train_wall_time_s"] > 0
    run_cli("--steps=8", *common)
    third = json.loads((tmp_path / "results.json").read_text())
    assert third["steps"] == 8 and third["train_examples_per_s"] is None
    assert third["train_wall_time_s"] == pytest.approx(
        second["train_wall_time_s"], rel=0.5
    )


def test_device_augmentation_trains_too(tmp_path):
    run_cli(
        "--dataset=mnist_tc",
        "--model=cnn",
        "--steps=2",
        "--augment_on=device",
        f"--workdir={tmp_path}",
        *TINY,
    )
    assert json.loads((tmp_path / "results.json").read_text())["transform"] is None


def test_tfds_source_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    from stn_tf.pipelines import mnist

    mnist._load_mnist.cache_clear()
    with tfds.testing.mock_data(num_examples=300):
        run_cli(
            "--dataset=mnist",
            "--model=fcn",
            "--steps=2",
            "--mnist_source=tfds",
            f"--data_dir={tmp_path / 'tfds'}",
            f"--workdir={tmp_path / 'run'}",
            *[a for a in TINY if not a.startswith("--mnist_source")],
        )
    mnist._load_mnist.cache_clear()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        "TFDS mnist" in results["digits"]["train"] and results["test_examples"] == 300
    )


@pytest.mark.parametrize(
    "args,error,message",
    [
        (["--dataset=mnist_x"], flags.IllegalFlagValueError, r"mnist_rts"),
        (["--model=resnet"], flags.IllegalFlagValueError, r"st_cnn"),
        (["--transform=spline"], flags.IllegalFlagValueError, r"projective"),
        (
            ["--steps=-5"],
            flags.IllegalFlagValueError,
            r"--steps=-5: -5 is not a positive integer",
        ),
        (
            ["--dataset=mnist_sequence", "--model=st_cnn"],
            app.UsageError,
            r"'st_cnn' does not fit dataset 'mnist_sequence'.*rnn_spn, ffn_spn",
        ),
        (["--lr_boundaries=50,10"], app.UsageError, r"increasing"),
    ],
    ids=["dataset", "model", "transform", "steps", "misfit", "boundaries"],
)
def test_bad_flags_fail_at_start_with_the_valid_values(tmp_path, args, error, message):
    with pytest.raises(error, match=message):
        run_cli(f"--workdir={tmp_path}", *TINY, *args)
    assert not (tmp_path / "checkpoints").exists()


def test_a_workdir_of_another_run_is_refused(tmp_path):
    run_cli(
        "--dataset=mnist", "--model=fcn", "--steps=2", f"--workdir={tmp_path}", *TINY
    )
    with pytest.raises(
        SystemExit, match=r"error: .*holds a run with other model.*'fcn'"
    ):
        run_cli(
            "--dataset=mnist",
            "--model=cnn",
            "--steps=2",
            f"--workdir={tmp_path}",
            *TINY,
        )


def test_a_workdir_trained_on_data_the_dataset_no_longer_draws_is_refused(tmp_path):
    # P moved its corners a distance at revision 2 (now mnist_p_distance): those
    # checkpoints are not resumed as a run on today's P, which moves them per axis.
    args = ("--dataset=mnist_p", "--model=fcn", "--steps=2", f"--workdir={tmp_path}")
    run_cli(*args, *TINY)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["dataset_revision"] == 3
    for revision, refused in ((2, True), (1, False)):  # 1 drew what 3 draws
        (tmp_path / "config.json").write_text(
            json.dumps({**saved, "dataset_revision": revision})
        )
        if refused:
            with pytest.raises(
                SystemExit, match=r"revision 2 of mnist_p, whose examples mnist_p"
            ):
                run_cli(*args[:2], "--steps=4", args[3], *TINY)
        else:
            run_cli(*args[:2], "--steps=4", args[3], *TINY)
    # Written before config.json said: results.json's revision is read instead.
    del saved["dataset_revision"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    results = json.loads((tmp_path / "results.json").read_text())
    (tmp_path / "results.json").write_text(
        json.dumps({**results, "dataset_revision": 2})
    )
    assert runs.workdir_data(tmp_path) == ("mnist_p", 2)
    # Evaluating or exporting it reads it as the data it trained on.
    assert runs.config_of(tmp_path).dataset == "mnist_p_distance"
    (tmp_path / "results.json").write_text(
        json.dumps({**results, "dataset_revision": 7})
    )
    with pytest.raises(ValueError, match="revision 7 of mnist_p, which no dataset"):
        runs.config_of(tmp_path)


def test_checkpoints_without_their_config_are_not_resumed(tmp_path):
    # A run's config.json gone (a folder half removed while a run was writing into
    # it): its checkpoints could be any run's, so none is resumed from.
    run_cli(
        "--dataset=mnist", "--model=fcn", "--steps=2", f"--workdir={tmp_path}", *TINY
    )
    (tmp_path / "config.json").unlink()
    with pytest.raises(
        SystemExit, match=r"error: .*holds checkpoints but no config.json.*--workdir"
    ):
        run_cli(
            "--dataset=mnist",
            "--model=fcn",
            "--steps=4",
            f"--workdir={tmp_path}",
            *TINY,
        )


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    tmp_path,
):
    config = tiny_config(steps=50, learning_rate=1e12, checkpoint_every=1, log_every=1)
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss or θ at step \d+.*last good checkpoint is .*ckpt-\d+",
    ) as info:
        train.train_and_evaluate(config, tmp_path)
    bad_step, good_step = (
        int(n) for n in re.findall(r"step (\d+).*ckpt-(\d+)", str(info.value))[0]
    )
    assert good_step == bad_step - 1  # saved every step until the bad one
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith(f"ckpt-{good_step}")
    reader = tf.train.load_checkpoint(latest)
    values = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()]
    weights = [
        v
        for v in values
        if isinstance(v, np.ndarray) and v.dtype == np.float32 and v.size > 100
    ]
    assert weights and all(
        np.isfinite(w).all() for w in weights
    )  # the kept one is good
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_a_short_run_on_real_digits_learns_far_better_than_chance(tmp_path):
    run_cli(
        "--dataset=mnist_rts",
        "--model=st_cnn",
        "--steps=300",
        "--batch_size=64",
        "--learning_rate=0.02",
        "--momentum=0.9",
        "--lr_boundaries=250",
        "--param_budget=100000",  # a quarter of the paper's: learns as well, faster
        "--mnist_source=embedded",
        "--log_every=100",
        f"--workdir={tmp_path}",
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_error"] < 0.5, results  # chance is 0.9


def test_accumulated_parts_update_like_the_whole_batch(tmp_path):
    # One SGD step of an ST-CNN (no batch norm, no dropout) on a batch of 8: summing
    # the gradients of 4 parts of 2 gives the whole batch's update, with weight decay
    # and the localisation net's own rate in play too.
    settings = dict(
        dataset="mnist_rts",
        model="st_cnn",
        steps=1,
        learning_rate=0.5,
        momentum=0.9,
        weight_decay=0.01,
        loc_lr_multiplier=0.1,
        deterministic=False,
    )
    weights = {}
    for parts in (1, 4):
        config = tiny_config(**settings, accumulate=parts)
        train.train_and_evaluate(config, tmp_path / str(parts))
        _, model, _ = runs.restore(tmp_path / str(parts))
        weights[parts] = [w.numpy() for w in model.weights]
    keras.utils.set_random_seed(0)  # the runs' seed: their starting weights
    start = [w.numpy() for w in runs.build_model(tiny_config(**settings)).weights]
    moved = [not np.allclose(a, b) for a, b in zip(weights[1], start)]
    assert (
        sum(moved) >= 4
    )  # the step moved the weights (the comparison means something)
    for whole, summed in zip(weights[1], weights[4]):
        np.testing.assert_allclose(summed, whole, rtol=1e-5, atol=1e-6)


def test_weight_decay_is_an_l2_penalty_in_the_loss(tmp_path):
    # One plain SGD step from the same start on the same batch, with and without
    # decay: the decay adds wd/2 * sum(kernel^2) to the loss, and moves each kernel
    # by -lr * m * wd * w more, m being --loc_lr_multiplier for the localisation
    # net (Keras's decoupled weight_decay ignores m); biases are not decayed.
    lr, wd, m = 0.5, 0.1, 0.1
    settings = dict(
        dataset="mnist_rts",
        model="st_cnn",
        steps=1,
        learning_rate=lr,
        momentum=0.0,
        loc_lr_multiplier=m,
        log_every=1,
    )
    weights, losses = {}, {}
    for decay in (0.0, wd):
        config = tiny_config(**settings, weight_decay=decay)
        train.train_and_evaluate(config, tmp_path / str(decay))
        _, model, _ = runs.restore(tmp_path / str(decay))
        weights[decay] = {w.path: w.numpy() for w in model.trainable_weights}
        with open(tmp_path / str(decay) / "metrics.csv") as f:
            losses[decay] = float(next(csv.DictReader(f))["loss"])
    config = runs.with_width(tiny_config(**settings))  # as the trainer, before the seed
    keras.utils.set_random_seed(0)  # the runs' seed: their starting weights
    fresh = runs.build_model(config)
    start = {w.path: w.numpy() for w in fresh.trainable_weights}
    loc = {w.path for w in fresh.get_layer("st").trainable_weights}
    kernels = [p for p in start if "kernel" in p]
    assert kernels and loc & set(kernels)
    penalty = 0.5 * wd * sum(np.sum(start[p].astype("f8") ** 2) for p in kernels)
    np.testing.assert_allclose(losses[wd] - losses[0.0], penalty, rtol=1e-4)
    for path, w0 in start.items():
        rate = lr * (m if path in loc else 1.0)
        expected = -rate * wd * w0 if path in kernels else np.zeros_like(w0)
        np.testing.assert_allclose(
            weights[wd][path] - weights[0.0][path], expected, rtol=1e-3, atol=1e-6
        )


def test_held_localisation_nets_keep_their_start_then_train(tmp_path):
    # The 2xST-FCN on addition under RMSprop with momentum (the recipe this is
    # for): through the held steps both localisation nets keep their starting
    # weights bit for bit while the classifier moves; after them, they train.
    settings = dict(
        dataset="mnist_addition",
        model="st_fcn_2x",
        optimizer="rmsprop",
        learning_rate=1e-3,
        momentum=0.9,
        loc_hold_steps=3,
        param_budget=400_000,  # the paper's: no hidden layer one unit wide
    )
    config = runs.with_width(tiny_config(**settings))  # as the trainer, before the seed
    keras.utils.set_random_seed(0)  # the runs' seed: their starting weights
    fresh = runs.build_model(config)
    start = {w.path: w.numpy() for w in fresh.trainable_weights}
    loc = {
        w.path for st in ("st_0", "st_1") for w in fresh.get_layer(st).trainable_weights
    }
    assert loc and set(start) - loc
    moved = {}
    # 4 steps: exactly one update (the optimizer's iteration 3) after the hold.
    for steps in (3, 4, 5):
        train.train_and_evaluate(
            tiny_config(**settings, steps=steps), tmp_path / str(steps)
        )
        _, model, _ = runs.restore(tmp_path / str(steps))
        now = {w.path: w.numpy() for w in model.trainable_weights}
        moved[steps] = {p for p in start if not np.array_equal(now[p], start[p])}
    assert not moved[3] & loc, sorted(moved[3] & loc)  # held
    assert moved[3] >= {p for p in set(start) - loc if "kernel" in p}  # the rest trains
    # Released at iteration 3: the θ heads (zero at the start, so the nets behind
    # them get no gradient yet) move in that update, every other variable in the next.
    heads = {p for p in loc if "/theta/" in p}
    assert moved[4] & loc == heads
    assert moved[5] >= loc


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(model="st_fcn", loc_hold_steps=-1),
            r"loc_hold_steps must be >= 0.*Received: loc_hold_steps=-1",
        ),
        (dict(model="cnn", loc_hold_steps=10), r"model 'cnn' has none"),
    ],
)
def test_bad_loc_hold_steps_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)


def test_every_config_field_is_a_flag_with_its_declared_default_and_help():
    # Made from TrainConfig's declarations: adding a field adds its flag. Those of
    # --dataset, --seed and the sources come from stn_tf.pipelines.flags.
    import dataclasses

    skipped = {"model_version"}
    for field in dataclasses.fields(runs.TrainConfig):
        if field.name in skipped:
            assert field.name not in flags.FLAGS
            continue
        flag = flags.FLAGS[field.name]
        assert flag.help.endswith(field.metadata["help"]), field.name
        if field.name != "lr_boundaries":  # unset: 1/3 and 2/3 of the steps
            assert flag.default == field.default, field.name
    assert flags.FLAGS["lr_boundaries"].default is None


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("momentum", 1.5, r"momentum must be >= 0.0 and <= 0.999"),
        ("dropout", -0.5, r"dropout must be >= 0.0 and <= 0.99"),
        ("log_every", 0, r"log_every must be >= 1"),
        ("augment_on", "gpu", r"augment_on must be one of \('host', 'device'\)"),
        ("model", "resnet", r"Unknown model 'resnet'"),
    ],
)
def test_a_config_from_python_refuses_what_the_flag_refuses(field, value, message):
    with pytest.raises(ValueError, match=message):
        runs.TrainConfig(**{field: value})


def test_sequences_default_to_the_rnn_spn_papers_rmsprop_recipe():
    from absl.testing import flagsaver

    with flagsaver.flagsaver():
        flags.FLAGS(["train", "--dataset=mnist_sequence", "--steps=30"])
        config = train.config_from_flags()
        assert config.model == "rnn_spn"
        assert (config.optimizer, config.learning_rate, config.batch_size) == (
            "rmsprop",
            1e-3,
            64,
        )
        assert (config.starts, config.learn_offsets) == ("identity", False)
        assert config.lr_boundaries == (10, 20) and config.model_version == 2
        flags.FLAGS(["train", "--dataset=mnist_sequence", "--optimizer=sgd"])
        assert train.config_from_flags().optimizer == "sgd"  # a given flag wins


def test_sequence_training_cli_reports_digit_and_sequence_errors(tmp_path, capsys):
    workdir = tmp_path / "rnn"
    argv = [
        "train",
        "--dataset=mnist_sequence",
        "--model=rnn_spn",
        "--downsample=4",
        "--optimizer=rmsprop",
        "--learning_rate=0.001",
        "--steps=3",
        "--batch_size=4",
        "--log_every=1",
        "--picture_every=3",
        "--mnist_source=embedded",
        "--eval_batch_size=500",
        f"--workdir={workdir}",
    ]
    with flagsaver.flagsaver():
        trainer.FLAGS(argv)
        trainer.main(argv[:1])
    printed = capsys.readouterr().out
    assert "per digit" in printed and "of sequences wrong" in printed
    results = json.loads((workdir / "results.json").read_text())
    assert 0 <= results["test_error"] <= results["test_sequence_error"] <= 1
    rows = (workdir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "sequence_error" and rows[1].split(",")[3] != ""
    assert (workdir / "transformer.png").exists()
    config = json.loads((workdir / "config.json").read_text())
    assert (config["optimizer"], config["downsample"]) == ("rmsprop", 4.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dataset": "mnist_addition", "model": "st_fcn_2x", "transform": "tps"},
        {"dataset": "mnist_3d", "model": "st_cnn_3d", "eval_batch_size": 100},
        {"dataset": "mnist_sequence", "model": "ffn_spn", "downsample": 4.0},
    ],
    ids=["addition-2xst", "3d", "ffn_spn"],
)
def test_each_new_model_trains_and_draws_its_transformers(
    tmp_path, small_mnist, overrides
):
    config = tiny_config(
        steps=2,
        batch_size=2,
        param_budget=40_000,
        mnist_dir=str(small_mnist),
        mnist_source="idx",
        **overrides,
    )
    results = trainer.train_and_evaluate(config, tmp_path)
    assert np.isfinite(results["test_error"]) and results["steps"] == 2
    assert (tmp_path / "transformer.png").exists()


def test_eval_every_records_the_test_error_along_the_run(tmp_path):
    config = tiny_config(steps=6, eval_every=2, checkpoint_every=2, log_every=2)
    results = trainer.train_and_evaluate(config, tmp_path)
    with (tmp_path / "eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]  # the last one is the results'
    assert [int(r["examples_seen"]) for r in rows] == [16, 32]
    curve = results["curve"]
    assert [p["step"] for p in curve] == [2, 4, 6]
    assert curve[-1]["test_error"] == results["test_error"]
    # Each point is the error of the weights at that step, counted here by hand
    # from the checkpoint of that step.
    digits = runs.make_pipeline(config, "test", batch_size=1000, training=False)
    batch = next(iter(digits.dataset()))
    for point in curve[:2]:
        model = runs.build_model(runs.with_width(config))
        path = str(tmp_path / "checkpoints" / f"ckpt-{point['step']}")
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        logits = model(batch["image"], training=False)["logits"].numpy()
        wrong = np.mean(logits.argmax(-1) != batch["label"].numpy())
        assert abs(point["test_error"] - wrong) < 1e-6, point
    # TensorBoard has them too.
    event_files = list((tmp_path / "tensorboard").glob("events.*"))
    tags = {
        v.tag
        for path in event_files
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for v in event.summary.value
    }
    assert "test/error" in tags


def test_eval_every_refuses_a_negative_count():
    with pytest.raises(
        ValueError,
        match=r"eval_every must be >= 0: .*\(0: at the end only\)\. Received: eval_every=-1",
    ):
        tiny_config(steps=2, eval_every=-1)


def test_mixed_bfloat16_trains_in_bfloat16_and_restores_to_float32(tmp_path):
    config = tiny_config(
        dataset="mnist_rts", model="st_cnn", steps=2, precision="mixed_bfloat16"
    )
    trained = runs.build_model(runs.with_width(config), jit_compile=False)
    # bfloat16 compute, float32 variables, float32 θ.
    images = np.random.default_rng(0).random((4, 42, 42, 1), np.float32)
    out = trained(images, training=False)
    assert out["logits"].dtype == tf.bfloat16
    assert out["theta"].dtype == tf.float32
    assert {v.dtype for v in trained.weights} == {"float32"}
    # The policy was the run's alone: later models are float32 again.
    assert keras.config.dtype_policy().name == "float32"
    results = trainer.train_and_evaluate(config, tmp_path)
    assert np.isfinite(results["test_error"])
    # The checkpoint restores into a float32 model (exports want float32) whose
    # outputs are the bfloat16 model's, to bfloat16's precision.
    saved, model, step = runs.restore(tmp_path)
    assert saved.precision == "mixed_bfloat16" and step == 2
    float32 = model(images, training=False)["logits"].numpy()
    assert model(images)["logits"].dtype == tf.float32
    bf16 = runs.build_model(saved, jit_compile=False)
    bf16.set_weights(model.get_weights())
    half = bf16(images, training=False)["logits"].numpy().astype(np.float32)
    np.testing.assert_allclose(half, float32, atol=0.05 * np.abs(float32).max())


def test_precision_must_be_float32_or_mixed_bfloat16():
    with pytest.raises(
        ValueError, match="precision must be one of .*Received: precision='float16'"
    ):
        tiny_config(steps=2, precision="float16")


# Each dataset's recipe as the papers write it (not read from runs.RECIPES): STN
# A.4 for every MNIST set ("trained with SGD ... for 150k iterations, batch 256,
# learning rate 0.01 divided by 10 every 50k"), A.6 for CUB, A.5 for SVHN, the
# RNN-SPN paper's RMSprop for sequences (its rate and batch are ours).
A4 = dict(
    steps=150_000,
    batch_size=256,
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.0,
    lr_boundaries=(50_000, 100_000),
    loc_lr_multiplier=1.0,
    weight_decay=0.0,
    dropout=0.0,
)
PAPER_RECIPES = {
    **{name: A4 for name in runs.MNIST_DATASETS if name != "mnist_sequence"},
    "mnist_sequence": {
        **A4,
        "optimizer": "rmsprop",
        "learning_rate": 1e-3,
        "batch_size": 64,
    },
    "cub": dict(
        steps=30_000,
        batch_size=256,
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        lr_boundaries=(10_000, 20_000, 25_000),
        loc_lr_multiplier=1e-4,
        weight_decay=1e-5,
        dropout=0.7,
    ),
    "svhn": dict(
        steps=400_000,
        batch_size=128,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        lr_boundaries=(80_000, 160_000, 240_000, 320_000),
        loc_lr_multiplier=0.1,
        weight_decay=5e-4,
        dropout=0.5,
    ),
}


def _cli_config(dataset):
    with flagsaver.flagsaver():
        flags.FLAGS(["train", f"--dataset={dataset}"])
        return train.config_from_flags()


def _recipe(config):
    return {key: getattr(config, key) for key in A4}


def test_every_training_dataset_has_a_paper_recipe_pinned():
    assert set(PAPER_RECIPES) == set(runs.TRAIN_DATASETS)


@pytest.mark.parametrize("dataset", sorted(PAPER_RECIPES))
def test_the_command_line_trains_each_dataset_on_its_papers_recipe(dataset):
    assert _recipe(_cli_config(dataset)) == PAPER_RECIPES[dataset]


def test_a_config_built_from_python_trains_on_the_same_recipe():
    # TrainConfig.for_dataset is the command line's config (every flag not given).
    for dataset in sorted(PAPER_RECIPES):
        python = runs.TrainConfig.for_dataset(dataset)
        assert python == _cli_config(dataset), dataset
        assert _recipe(python) == PAPER_RECIPES[dataset], dataset
    # The plain schema keeps its own defaults (A.4's).
    assert _recipe(runs.TrainConfig(dataset="mnist_sequence")) == A4


@pytest.mark.parametrize(
    "fields",
    [
        {"steps": 300},
        {"steps": 300, "lr_boundaries": (7,)},
        {"steps": 30, "optimizer": "sgd", "momentum": 0.5},
        {"learning_rate": 0.2, "batch_size": 8},
    ],
)
@pytest.mark.parametrize("dataset", ["cub", "svhn", "mnist_sequence", "mnist_rts"])
def test_fields_given_from_python_or_flags_make_the_same_config(dataset, fields):
    flags_given = [
        f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in fields.items()
    ]
    with flagsaver.flagsaver():
        flags.FLAGS(["train", f"--dataset={dataset}", *flags_given])
        cli = train.config_from_flags()
    assert runs.TrainConfig.for_dataset(dataset, **fields) == cli
    for key, value in fields.items():
        assert getattr(cli, key) == value, key  # a given field wins


def test_a_shorter_run_keeps_the_recipes_boundaries_in_place():
    # A.6's 10k, 20k, 25k of 30k steps, over 300 steps: 100, 200, 250.
    cub = runs.TrainConfig.for_dataset("cub", steps=300)
    assert cub.lr_boundaries == (100, 200, 250) and cub.learning_rate == 0.1
    # A.5's every 80k of 400k, over 4 steps: 1, 2, 3 (a boundary at 0 or at the
    # end would be no boundary).
    assert runs.TrainConfig.for_dataset("svhn", steps=4).lr_boundaries == (1, 2, 3)
