"""``train_and_evaluate``: the training loop, from the workdir's latest
checkpoint to ``results.json``."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from stn_tf import runs
from stn_tf.runs import TrainConfig
from stn_tf.training import distribute, summaries
from stn_tf.training import workdir as wd
from stn_tf.training.evaluate import evaluate
from stn_tf.training.optim import make_optimizer
from stn_tf.training.step import make_train_step

__all__ = ["train_and_evaluate"]


def train_and_evaluate(config: TrainConfig, workdir: str | Path) -> dict:
    """Trains (resuming from the workdir's latest checkpoint), evaluates, writes
    ``results.json`` and returns its contents.

    Raises:
        Preempted: SIGTERM arrived; a checkpoint was saved.
        FloatingPointError: the loss or θ became NaN or inf.
        OSError: the workdir cannot be written, or a checkpoint not saved.
        FileExistsError: the workdir holds another run.
    """
    workdir = Path(workdir)
    strategy = distribute.make_strategy()  # first: it must precede other ops
    chief = distribute.is_chief(strategy)
    # Only the chief writes into the workdir; the other workers of a multi-worker run
    # write (their share of the checkpoints, logs) to a temporary folder.
    out = workdir if chief else Path(tempfile.mkdtemp(prefix="stn_tf_worker_"))
    try:
        return _run(runs.with_width(config), workdir, out, strategy)
    finally:
        if not chief:
            shutil.rmtree(out, ignore_errors=True)


def _run(config, workdir, out, strategy) -> dict:
    wd.check_writable(out)
    if out == workdir:
        wd.write_config(config, workdir)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()  # for the rest of the process
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % (replicas * config.accumulate):
        raise ValueError(
            f"batch_size {config.batch_size} must split into {replicas} replicas x "
            f"{config.accumulate} accumulated parts"
        )
    train = runs.make_pipeline(
        config, "train", batch_size=config.batch_size, training=True
    )
    test = runs.make_pipeline(
        config, "test", batch_size=config.eval_batch_size, training=False
    )
    logging.info("data: %s; %s", train.origin, test.origin)
    with strategy.scope():
        model = runs.build_model(config, jit_compile=config.xla_sampler)
        optimizer, schedule = make_optimizer(config, model)
    params = model.count_params()
    logging.info("%s: %s parameters", model.name, f"{params:,}")
    kind = config.transform if model.transformers else "no transformer"
    print(f"{config.model} ({kind}) on {config.dataset}: {params:,} parameters")

    manager, clock, latest = wd.checkpointing(model, optimizer, out, workdir)
    start = int(optimizer.iterations.numpy())
    if start:
        logging.info("resuming from %s at step %d", latest, start)
        print(f"resuming from {latest} at step {start}")
    distort = train.distort if config.augment_on == "device" else None
    train_step = make_train_step(config, model, optimizer, strategy, distort)
    batches = distribute.distributed_batches(strategy, train, start, config.augment_on)
    writer = tf.summary.create_file_writer(str(out / "tensorboard"))
    shape = runs.dataset_spec(config).shape[:-1]
    progress = summaries.Progress(
        config,
        wd.Metrics(out / "metrics.csv", start),
        writer,
        schedule,
        shape if model.transformers else None,
    )
    picture_batch = next(iter(test.dataset()))
    trained_before = float(clock.numpy())
    began = time.perf_counter()

    def save(step):
        clock.assign(trained_before + time.perf_counter() - began)
        return wd.save_checkpoint(manager, step)

    def show(step):
        with writer.as_default(step=step):
            sheet = np.asarray(summaries.picture(config, model, picture_batch, step))
            tf.summary.image("transformer", sheet[None], step=step)

    curve = wd.EvalCurve(out / "eval.csv", start) if config.eval_every else None
    eval_s = 0.0  # the evaluations along the way, left out of the training time

    def test_now(step):
        nonlocal eval_s
        began_eval = time.perf_counter()
        error, sequence_error, _ = evaluate(model, test)
        curve.write(
            {
                "step": step,
                "examples_seen": step * config.batch_size,
                "test_error": error,
                "test_sequence_error": sequence_error if test.spec.label_shape else "",
            }
        )
        with writer.as_default(step=step):
            tf.summary.scalar("test/error", error)
        print(f"step {step}/{config.steps}  test error {100 * error:.2f}%", flush=True)
        spent = time.perf_counter() - began_eval
        eval_s += spent
        progress.skip(spent)

    hooks = {"save": save, "show": show, "test": test_now if curve else None}
    step = _loop(config, start, train_step, batches, progress, hooks, manager)
    train_s = time.perf_counter() - began - eval_s
    rate = (step - start) * config.batch_size / train_s if step > start else None
    if model.transformers:
        summaries.picture(config, model, picture_batch, step).save(
            out / "transformer.png"
        )
    results = _results(config, model, test, step, trained_before + train_s, rate)
    if curve:  # the evaluations along the way, then the final one
        results["eval_wall_time_s"] = eval_s  # this session's, not in train_wall_time_s
        results["curve"] = [
            {"step": int(r["step"]), "test_error": float(r["test_error"])}
            for r in curve.rows()
        ] + [{"step": step, "test_error": results["test_error"]}]
    results.update(
        {
            ("digits" if train.spec.family == "mnist" else "data"): {
                "train": train.origin,
                "test": test.origin,
            },
            "dataset_revision": train.spec.revision,
            "replicas": replicas,
            "weights_sha256": wd.fingerprint(model),
        }
    )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    writer.flush()
    _report(config, results, out)
    return results


def _loop(config, start, train_step, batches, progress, hooks, manager) -> int:
    """Steps from ``start`` to ``config.steps``; returns the last step. ``hooks``:
    ``save(step)``, ``show(step)`` and ``test(step)`` (None: no evaluations).

    Raises ``FloatingPointError`` at a NaN or inf, and ``Preempted`` after saving
    a checkpoint when SIGTERM arrives."""
    step = start
    with wd.SigtermCatcher() as sigterm:
        while step < config.steps:
            fetch = time.perf_counter()
            batch = next(batches)  # waits only if the input pipeline is behind
            wait = time.perf_counter() - fetch
            loss, error, sequence_error, finite, theta = train_step(batch)
            step += 1
            if not finite:
                raise FloatingPointError(
                    f"non-finite loss or θ at step {step} (loss {float(loss)}); stopping. The last good "
                    f"checkpoint is {manager.latest_checkpoint or 'none (no checkpoint yet)'}. "
                    "Lower --learning_rate or --loc_lr_multiplier."
                )
            progress.add(loss, error, sequence_error, wait)
            if step % config.log_every == 0 or step == config.steps:
                progress.log(step, theta)
            if progress.image_size is not None and step % config.picture_every == 0:
                hooks["show"](step)
            if (
                hooks["test"]
                and step % config.eval_every == 0
                and step < config.steps  # the final evaluation is the results'
            ):
                hooks["test"](step)
            if (
                step % config.checkpoint_every == 0
                or step == config.steps
                or sigterm.requested
            ):
                saved = hooks["save"](step)
            if sigterm.requested:
                progress.writer.flush()
                raise wd.Preempted(step, saved)
    return step


def _results(config, model, test, step, train_s, rate) -> dict:
    """The test errors and the run's facts, as ``results.json`` holds them."""
    error, sequence_error, examples = evaluate(model, test)
    sequences = bool(test.spec.label_shape)
    return {
        "test_error": error,
        "test_examples": examples,
        **({"test_sequence_error": sequence_error} if sequences else {}),
        "steps": step,
        "parameters": model.count_params(),
        "train_wall_time_s": train_s,  # all sessions
        "train_examples_per_s": rate,
        "dataset": config.dataset,
        "model": config.model,
        "transform": config.transform if model.transformers else None,
    }


def _report(config, results, out) -> None:
    sequences = "test_sequence_error" in results
    per = " per digit" if sequences else ""
    wrong = (
        f", {100 * results['test_sequence_error']:.2f}% of sequences wrong"
        if sequences
        else ""
    )
    print(
        f"test error {100 * results['test_error']:.2f}%{per}{wrong} on "
        f"{results['test_examples']} {config.dataset} test examples; results in {out}"
    )
    print(f"weights sha256 {results['weights_sha256']}", flush=True)
