"""``train_and_evaluate``: the training loop, from the workdir's latest
checkpoint to ``results.json``."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

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
        DataError: the data cannot be read as the config asks.
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
        run = runs.Run.resolved(config)  # once, handed down
        return _run(run, workdir, out, strategy)
    finally:
        if not chief:
            shutil.rmtree(out, ignore_errors=True)


@dataclasses.dataclass
class _Parts:
    """What a run trains with, built once by ``_parts``."""

    train: object  # the training pipeline
    test: object  # the fixed test set's pipeline
    validation: object  # the fixed validation set's pipeline, or None
    best: object  # the validation's best weights (wd.BestWeights), or None
    model: keras.Model
    train_step: object  # a tf.function: batch -> loss, errors, finite, θ per replica
    manager: tf.train.CheckpointManager
    clock: tf.Variable  # seconds trained over every session
    start: int  # the step the run resumes from
    progress: summaries.Progress
    writer: object  # TensorBoard's


def _run(resolved: runs.Run, workdir, out, strategy) -> dict:
    """The run from its latest checkpoint to ``results.json``, its events inline."""
    config = resolved.config
    run = _parts(resolved, workdir, out, strategy)
    has_st = bool(run.model.transformers)
    batches = distribute.distributed_batches(
        strategy, run.train, run.start, config.augment_on
    )
    gather = tf.function(lambda theta: strategy.gather(theta, axis=0))
    picture_batch = next(iter(run.test.dataset()))
    curve = wd.EvalCurve(out / "eval.csv", run.start) if config.eval_every else None
    trained_before, began, eval_s = float(run.clock.numpy()), time.perf_counter(), 0.0
    step = run.start
    with wd.SigtermCatcher() as sigterm:
        while step < config.steps:
            fetch = time.perf_counter()
            batch = next(batches)  # waits only if the input pipeline is behind
            wait = time.perf_counter() - fetch
            loss, error, sequence_error, finite, theta = run.train_step(batch)
            step += 1
            if not finite:
                raise FloatingPointError(
                    f"non-finite loss or θ at step {step} (loss {float(loss)}); stopping. "
                    "The last good checkpoint is "
                    f"{run.manager.latest_checkpoint or 'none (no checkpoint yet)'}. "
                    "Lower --learning_rate or --loc_lr_multiplier."
                )
            run.progress.add(loss, error, sequence_error, wait)
            if step % config.log_every == 0 or step == config.steps:
                run.progress.log(step, gather(theta) if has_st else None)
            if has_st and step % config.picture_every == 0:
                _show(config, run, picture_batch, step)
            if curve and step % config.eval_every == 0 and step < config.steps:
                spent = _evaluate_now(config, run, curve, step)  # the last: results'
                eval_s += spent
                run.progress.skip(spent)
            if (
                step % config.checkpoint_every == 0
                or step == config.steps
                or sigterm.requested
            ):
                run.clock.assign(trained_before + time.perf_counter() - began - eval_s)
                saved = wd.save_checkpoint(run.manager, step)
            if sigterm.requested:
                run.writer.flush()
                raise wd.Preempted(step, saved)
    train_s = time.perf_counter() - began - eval_s
    if has_st:
        summaries.picture(config, run.model, picture_batch, step).save(
            out / "transformer.png"
        )
    results = _results(config, run, strategy, step, trained_before, train_s, curve)
    if curve:
        results["eval_wall_time_s"] = eval_s  # this session's, not in the training time
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    run.writer.flush()
    _report(config, results, out)
    return results


def _parts(resolved: runs.Run, workdir, out, strategy) -> _Parts:
    """The run's data, model, optimizer, step and checkpoints, restored from the
    latest checkpoint if there is one."""
    config = resolved.config
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
    train, test, validation = _pipelines(resolved)
    held = f"; validation: {validation.origin}" if validation else ""
    print(f"data: {train.origin}; {test.origin}{held}")
    with strategy.scope():
        model = resolved.build_model(jit_compile=config.xla_sampler)
        optimizer, schedule = make_optimizer(config, model)
        best = wd.BestWeights(model) if validation else None
    kind = config.transform if model.transformers else "no transformer"
    print(
        f"{config.model} ({kind}) on {config.dataset}: "
        f"{model.count_params():,} parameters"
    )
    manager, clock, latest = wd.checkpointing(model, optimizer, out, workdir, best)
    start = int(optimizer.iterations.numpy())
    if start:
        print(f"resuming from {latest} at step {start}")
    distort = train.distort if config.augment_on == "device" else None
    writer = tf.summary.create_file_writer(str(out / "tensorboard"))
    progress = summaries.Progress(
        config,
        wd.Metrics(out / "metrics.csv", start),
        writer,
        schedule,
        resolved.data.shape[:-1] if model.transformers else None,
        sequences=resolved.sequences,
    )
    return _Parts(
        train,
        test,
        validation,
        best,
        model,
        make_train_step(config, model, optimizer, strategy, distort),
        manager,
        clock,
        start,
        progress,
        writer,
    )


def _pipelines(resolved: runs.Run):
    """The run's training, test and validation (or None) pipelines.

    Raises:
        DataError: the data cannot be cut or read as the config asks.
    """
    config = resolved.config
    evaluation = dict(batch_size=config.eval_batch_size, training=False)
    try:
        train = resolved.pipeline("train", batch_size=config.batch_size, training=True)
        test = resolved.pipeline("test", **evaluation)
        held = config.validation_digits
        validation = resolved.pipeline("validation", **evaluation) if held else None
    except ValueError as e:
        raise wd.DataError(str(e)) from e
    return train, test, validation


def _show(config, run: _Parts, batch, step: int) -> None:
    """The transformer's picture of test examples, to TensorBoard."""
    with run.writer.as_default(step=step):
        sheet = np.asarray(summaries.picture(config, run.model, batch, step))
        tf.summary.image("transformer", sheet[None], step=step)


def _evaluate_now(config, run: _Parts, curve, step: int) -> float:
    """An evaluation along the way of the whole validation set (keeping the best
    weights) where the run holds one out, else of the whole test set; returns its
    seconds."""
    began = time.perf_counter()
    split = "validation" if run.validation else "test"
    error, sequence_error, _ = evaluate(run.model, run.validation or run.test)
    curve.write(
        {
            "step": step,
            "examples_seen": step * config.batch_size,
            f"{split}_error": error,
            f"{split}_sequence_error": sequence_error
            if run.test.spec.label_shape
            else "",
        }
    )
    with run.writer.as_default(step=step):
        tf.summary.scalar(f"{split}/error", error)
    best = run.best.offer(run.model, step, error) if run.best else False
    print(
        f"step {step}/{config.steps}  {split} error {100 * error:.2f}%"
        + ("  (best so far)" if best else ""),
        flush=True,
    )
    return time.perf_counter() - began


def _results(config, run: _Parts, strategy, step, trained_before, train_s, curve):
    """``results.json``: the final test errors (and the curve along the way), the
    run's facts, where its data came from, and its weights' digest (the last
    step's; with a validation set, also the early-stopped weights' test error)."""
    digest = wd.fingerprint(run.model)  # the last step's, as checkpointed
    error, sequence_error, examples = evaluate(run.model, run.test)
    sequences = bool(run.test.spec.label_shape)
    results = {
        "test_error": error,
        "test_examples": examples,
        **({"test_sequence_error": sequence_error} if sequences else {}),
        "steps": step,
        "parameters": run.model.count_params(),
        "train_wall_time_s": trained_before + train_s,  # all sessions
        "train_examples_per_s": (step - run.start) * config.batch_size / train_s
        if step > run.start
        else None,
        "dataset": config.dataset,
        "model": config.model,
        "transform": config.transform if run.model.transformers else None,
    }
    if run.validation:
        results.update(_early_stopping(run, step, sequences))
    if curve:  # the evaluations along the way (this session's time), then the final
        split = "validation" if run.validation else "test"
        results["curve"] = [
            {"step": int(r["step"]), f"{split}_error": float(r[f"{split}_error"])}
            for r in curve.rows()
        ] + [{"step": step, f"{split}_error": results[f"{split}_error"]}]
    held = {"validation": run.validation.origin} if run.validation else {}
    return {
        **results,
        ("digits" if run.train.spec.family == "mnist" else "data"): {
            "train": run.train.origin,
            "test": run.test.origin,
            **held,
        },
        "dataset_revision": run.train.spec.revision,
        "replicas": strategy.num_replicas_in_sync,
        "weights_sha256": digest,
    }


def _early_stopping(run: _Parts, step: int, sequences: bool) -> dict:
    """The final validation error, then the test error of the weights with the
    lowest validation error of the run (its evaluations and this final one).
    Called last: it leaves those weights in the model."""
    error, sequence_error, examples = evaluate(run.model, run.validation)
    run.best.offer(run.model, step, error)
    run.best.load_into(run.model)
    test, test_sequence, _ = evaluate(run.model, run.test)
    results = {
        "validation_error": error,
        "validation_examples": examples,
        "early_stopping": {
            "step": int(run.best.step.numpy()),
            "validation_error": float(run.best.error.numpy()),
            "test_error": test,
            "weights_sha256": wd.fingerprint(run.model),
        },
    }
    if sequences:
        results["validation_sequence_error"] = sequence_error
        results["early_stopping"]["test_sequence_error"] = test_sequence
    return results


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
    if "early_stopping" in results:
        best = results["early_stopping"]
        print(
            f"validation error {100 * results['validation_error']:.2f}%{per}; lowest "
            f"{100 * best['validation_error']:.2f}% at step {best['step']}, whose "
            f"weights give test error {100 * best['test_error']:.2f}%{per}"
        )
    print(f"weights sha256 {results['weights_sha256']}", flush=True)
