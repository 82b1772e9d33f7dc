"""A validation set held out of MNIST's training digits and a fixed training set
(``datasets.Splits``, the RNN-SPN paper's protocol), and the early stopping they
give the trainer. Oracles: the raw IDX digits sliced by hand, examples compared
image by image, and errors counted by hand from the checkpoints."""

import csv

import numpy as np
import pytest
import tensorflow as tf

from stn_tf import runs
from stn_tf.pipelines import datasets, mnist
from stn_tf.training import loop as trainer
from stn_tf.training import workdir as wd
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def train_digits():
    return mnist.load_embedded("train")


def _examples(pipeline, step=0, batches=1):
    """Images, labels, example indices and the digits' indices (truth) of
    ``batches`` batches from ``step`` on."""
    got = {"image": [], "label": [], "index": [], "truth_index": []}
    pairs = zip(pipeline.index_batches(step), pipeline.dataset(start_step=step))
    for _, (order, batch) in zip(range(batches), pairs):
        got["index"].append(order["index"].numpy())
        got["truth_index"].append(batch["truth"]["index"].numpy())
        got["image"].append(batch["image"].numpy())
        got["label"].append(batch["label"].numpy())
    return {k: np.concatenate(v) for k, v in got.items()}


def test_validation_digits_are_the_last_training_digits_and_training_never_sees_them(
    train_digits,
):
    n = len(train_digits)
    config = tiny_config(
        dataset="mnist_sequence", model="rnn_spn", validation_digits=300
    )
    train = runs.make_pipeline(config, "train", batch_size=64, training=True)
    held = runs.make_pipeline(config, "validation", batch_size=100, training=False)
    np.testing.assert_array_equal(train.digits.images, train_digits.images[: n - 300])
    np.testing.assert_array_equal(held.digits.images, train_digits.images[n - 300 :])
    assert held.num_examples == 300 and train.num_examples == n - 300
    assert held.origin.endswith(f"digits {n - 300}-{n - 1}")
    # Every digit of a validation sequence (and of its clutter) is a held-out one,
    # and its label is that digit's label in the raw file.
    batch = next(iter(held.dataset()))
    index = batch["truth"]["index"].numpy()
    assert index.max() < 300
    np.testing.assert_array_equal(
        batch["label"].numpy(), train_digits.labels[n - 300 + index]
    )
    assert batch["truth"]["clutter_index"].numpy().max() < 300
    # Training sequences draw only from the others.
    batch = next(iter(train.dataset(start_step=7)))
    assert batch["truth"]["index"].numpy().max() < n - 300
    assert batch["truth"]["clutter_index"].numpy().max() < n - 300


def test_the_validation_set_is_fixed_and_differs_from_a_test_pass_of_the_same_digits(
    train_digits,
):
    def held_out(**given):
        return datasets.Pipeline(
            "mnist_rts", train_digits, batch_size=50, training=False, **given
        )

    held = held_out(key=datasets.VALIDATION_SEED)
    again = held_out(key=datasets.VALIDATION_SEED, seed=5)
    test_pass = held_out()
    a, b, c = (_examples(p)["image"] for p in (held, again, test_pass))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_fixed_training_set_shows_the_same_examples_every_epoch_whatever_the_seed(
    train_digits,
):
    digits = mnist.Digits(
        train_digits.images[:40], train_digits.labels[:40], "first 40"
    )
    make = lambda seed, examples=100: datasets.Pipeline(  # noqa: E731
        "mnist_rts", digits, batch_size=25, training=True, seed=seed, examples=examples
    )
    # Epoch 0 (steps 0-3) and epoch 1 (steps 4-7) of seed 0, and epoch 0 of seed 9.
    first, second = _examples(make(0), 0, 4), _examples(make(0), 4, 4)
    other_seed = _examples(make(9), 0, 4)
    for run in (first, second, other_seed):
        # Each epoch is the 100 examples once, in the seed's order.
        assert sorted(run["index"]) == list(range(100))
        # Example i is digit i mod 40 ...
        np.testing.assert_array_equal(run["truth_index"], run["index"] % 40)
        np.testing.assert_array_equal(run["label"], digits.labels[run["index"] % 40])
    by_index = lambda run: run["image"][np.argsort(run["index"])]  # noqa: E731
    # ... drawn once: the same image in both epochs and for both seeds,
    np.testing.assert_array_equal(by_index(first), by_index(second))
    np.testing.assert_array_equal(by_index(first), by_index(other_seed))
    # in another order each epoch and seed,
    assert list(first["index"]) != list(second["index"])
    assert list(first["index"]) != list(other_seed["index"])
    # and two examples of the same digit (3 and 43) are two draws of it.
    images = by_index(first)
    assert not np.array_equal(images[3], images[43])
    # The stream drawn anew (no examples) changes between epochs.
    stream = datasets.Pipeline("mnist_rts", digits, batch_size=20, training=True)
    e0, e1 = _examples(stream, 0, 2), _examples(stream, 2, 2)
    assert not np.array_equal(by_index(e0), by_index(e1))
    assert make(0).origin == "first 40, a fixed set of 100 examples"


def test_splits_refuse_what_they_cannot_cut(train_digits):
    n = len(train_digits)
    with pytest.raises(
        ValueError,
        match=r"leave at least 2 to train on\. Received: validation_digits=4999",
    ):
        datasets.Splits(validation_digits=n - 1).digits("train", train_digits)
    with pytest.raises(ValueError, match=r"needs validation_digits > 0"):
        runs.make_pipeline(tiny_config(), "validation", batch_size=8, training=False)
    with pytest.raises(ValueError, match=r"Unknown split 'valid'"):
        runs.make_pipeline(tiny_config(), "valid", batch_size=8, training=False)
    with pytest.raises(
        ValueError,
        match=r"validation_digits must be >= 0.*Received: validation_digits=-1",
    ):
        tiny_config(validation_digits=-1)
    with pytest.raises(
        ValueError,
        match=r"svhn is a stored image set\. Received: validation_digits=10, train_examples=0",
    ):
        runs.TrainConfig(dataset="svhn", validation_digits=10)
    with pytest.raises(
        ValueError, match=r"examples must be a positive integer or None\. Received: 0"
    ):
        datasets.Pipeline(
            "mnist", train_digits, batch_size=2, training=True, examples=0
        )


def test_best_weights_travel_with_the_checkpoint(tmp_path):
    config = tiny_config()
    model = runs.build_model(runs.with_width(config))
    optimizer = tf.keras.optimizers.SGD(0.1)
    best = wd.BestWeights(model)
    manager, _, _ = wd.checkpointing(model, optimizer, tmp_path, tmp_path, best)
    kept = [w.numpy().copy() for w in model.weights]
    assert best.offer(model, 4, 0.5) and not best.offer(model, 6, 0.5)
    for w in model.weights:  # the model moves on after the best step
        w.assign(w.numpy() + 1.0)
    manager.save(checkpoint_number=6)
    # A new process's run restores the kept weights, not the model's latest.
    fresh = runs.build_model(runs.with_width(config))
    restored = wd.BestWeights(fresh)
    wd.checkpointing(fresh, tf.keras.optimizers.SGD(0.1), tmp_path, tmp_path, restored)
    assert (int(restored.step.numpy()), float(restored.error.numpy())) == (4, 0.5)
    restored.load_into(fresh)
    for w, want in zip(fresh.weights, kept, strict=True):
        np.testing.assert_array_equal(w.numpy(), want)


def test_early_stopping_reports_the_test_error_of_the_lowest_validation_step(tmp_path):
    config = tiny_config(
        steps=8,
        eval_every=2,
        checkpoint_every=2,
        log_every=2,
        validation_digits=200,
        train_examples=600,
        learning_rate=0.05,
    )
    results = trainer.train_and_evaluate(config, tmp_path)
    with (tmp_path / "eval.csv").open() as f:
        rows = [
            (int(r["step"]), float(r["validation_error"])) for r in csv.DictReader(f)
        ]
    assert [s for s, _ in rows] == [2, 4, 6]
    points = rows + [(8, results["validation_error"])]
    assert [(p["step"], p["validation_error"]) for p in results["curve"]] == points
    # The lowest validation error, the earliest step on a tie.
    step, error = min(points, key=lambda p: (p[1], p[0]))
    chosen = results["early_stopping"]
    assert (chosen["step"], chosen["validation_error"]) == (step, error)
    # Counted by hand from that step's checkpoint, on both held-out sets.
    model = runs.build_model(runs.with_width(config))
    tf.train.Checkpoint(model=model).restore(
        str(tmp_path / "checkpoints" / f"ckpt-{step}")
    ).expect_partial()
    for split, want in (("validation", error), ("test", chosen["test_error"])):
        pipeline = runs.make_pipeline(config, split, batch_size=1000, training=False)
        batch = next(iter(pipeline.dataset()))
        logits = model(batch["image"], training=False)["logits"].numpy()
        assert abs(np.mean(logits.argmax(-1) != batch["label"].numpy()) - want) < 1e-6
    assert results["validation_examples"] == 200
    assert results["digits"]["validation"].endswith("digits 4800-4999")
    assert results["digits"]["train"].endswith(
        "digits 0-4799, a fixed set of 600 examples"
    )


def test_the_command_says_what_is_wrong_with_the_split_and_trains_nothing(tmp_path):
    from tests.conftest import run_train_cli

    with pytest.raises(
        SystemExit,
        match=r"^error: .* has 5000 digits: validation_digits must leave at least 2 "
        r"to train on\. Received: validation_digits=4999$",
    ):
        run_train_cli(
            "--dataset=mnist",
            "--model=fcn",
            "--mnist_source=embedded",
            "--validation_digits=4999",
            "--steps=2",
            f"--workdir={tmp_path / 'run'}",
        )
    assert not (tmp_path / "run" / "checkpoints").exists()
