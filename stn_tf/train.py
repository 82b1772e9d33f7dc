"""Trains a model of the papers on one of their datasets, then evaluates it.

    python -m stn_tf.train --dataset=mnist_rts --model=st_cnn --transform=affine

One custom loop serves one device, several (MirroredStrategy) and several
machines (MultiWorkerMirroredStrategy, from ``TF_CONFIG``; only the chief writes
the workdir): ``strategy.run`` over per-replica parts of each global batch. The
workdir is the source of truth: ``config.json`` (written before the first step),
``checkpoints/`` (the same command resumes from the latest, mid-run, after a
kill; SIGTERM saves one first; ``--deterministic`` makes the resumed run end
with the uninterrupted run's weights), TensorBoard
logs in ``tensorboard/``, ``metrics.csv``, and at the end ``results.json`` and
``transformer.png`` (inputs with the transformer's sampling grids, and its
outputs). Defaults follow STN Appendix A.4: SGD, batch 256, learning rate 0.01
divided by 10 at 1/3 and 2/3 of the steps, no weight decay, no dropout.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from pipelines import datasets
from pipelines import flags as _data_flags  # noqa: F401 - defines --dataset, --mnist_dir, ...
from stn_tf import cli, models, pictures, transforms
from stn_tf.layers import transformers_in
from stn_tf.runs import (
    OPTIMIZERS,
    RECIPES,
    TRANSFORMS_2D,
    WEIGHTS,
    TrainConfig,
    build_model,
    dataset_spec,
    make_pipeline,
)

__all__ = ["Preempted", "TrainConfig", "main", "train_and_evaluate"]


# Every flag that is a config field takes its default from TrainConfig, the one
# source (cub and svhn then start from runs.RECIPES, see config_from_flags).
_DEFAULT = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

flags.DEFINE_enum(
    "model",
    _DEFAULT["model"],
    list(models.MODELS),
    "Model (stn_tf/models); default: the dataset's (st_cnn for distorted MNIST, "
    "rnn_spn, st_fcn_2x, st_cnn_3d, st_inception for cub, st_cnn_multi for svhn).",
)
flags.DEFINE_enum(
    "transform",
    _DEFAULT["transform"],
    [*TRANSFORMS_2D, "affine3d"],
    "Transform of ST models (default: the model's, affine or affine3d).",
)
flags.DEFINE_integer(
    "steps", _DEFAULT["steps"], "Training steps (the paper: 150k).", lower_bound=1
)
flags.DEFINE_integer(
    "batch_size", _DEFAULT["batch_size"], "Global batch size.", lower_bound=1
)
flags.DEFINE_float(
    "learning_rate", _DEFAULT["learning_rate"], "Base learning rate.", lower_bound=0.0
)
flags.DEFINE_enum(
    "optimizer",
    _DEFAULT["optimizer"],
    list(OPTIMIZERS),
    "sgd (STN paper) or rmsprop (RNN-SPN paper).",
)
flags.DEFINE_float(
    "momentum",
    _DEFAULT["momentum"],
    "Momentum of the optimizer (the STN paper: plain SGD, 0).",
    lower_bound=0.0,
    upper_bound=0.999,
)
flags.DEFINE_list(
    "lr_boundaries",
    None,  # not given: the config's own default, 1/3 and 2/3 of the steps
    "Steps at which the learning rate is divided by 10 (default: 1/3 and 2/3 of --steps).",
)
flags.DEFINE_float(
    "loc_lr_multiplier",
    _DEFAULT["loc_lr_multiplier"],
    "Learning rate of the localisation net, times the base rate.",
    lower_bound=0.0,
)
flags.DEFINE_enum(
    "augment_on",
    _DEFAULT["augment_on"],
    list(datasets.AUGMENT_ON),
    "Where distortions run.",
)
flags.DEFINE_string(
    "workdir",
    None,
    "Run folder (default runs/<dataset>_<model>[_<transform>]_s<seed>).",
)
flags.DEFINE_integer(
    "param_budget",
    _DEFAULT["param_budget"],
    "Parameters every model gets.",
    lower_bound=1,
)
flags.DEFINE_float(
    "downsample",
    _DEFAULT["downsample"],
    "Down-sampling factor d of the transformer (rnn_spn, ffn_spn, st_cnn_3d).",
    lower_bound=0.01,
)
flags.DEFINE_float(
    "dropout",
    _DEFAULT["dropout"],
    "Dropout rate of the sequence models' classifiers.",
    lower_bound=0.0,
    upper_bound=0.99,
)
flags.DEFINE_float(
    "weight_decay",
    _DEFAULT["weight_decay"],
    "Weight decay of the kernels, as the papers mean it: an L2 penalty "
    "wd/2 * sum(w^2) added to the loss, so momentum and --loc_lr_multiplier apply "
    "to it (not Keras's decoupled decay); cub and svhn default to the paper's.",
    lower_bound=0.0,
)
flags.DEFINE_integer(
    "accumulate",
    _DEFAULT["accumulate"],
    "Gradient accumulation: each step sums the gradients of this many equal parts "
    "of the batch (for batches that do not fit the accelerator at once).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "image_size",
    _DEFAULT["image_size"],
    "cub: 448 or 224 (default 448); svhn: 64 or 128 (default 64).",
)
flags.DEFINE_integer(
    "num_st",
    _DEFAULT["num_st"],
    "cub: parallel attention transformers (0: the Inception baseline; default 4).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "crop_size",
    _DEFAULT["crop_size"],
    "cub: side of each transformer's crop.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "weights",
    _DEFAULT["weights"],
    list(WEIGHTS),
    "cub: the Inception backbones' starting weights (none: random, offline).",
)
flags.DEFINE_bool(
    "xla_sampler",
    _DEFAULT["xla_sampler"],
    "Run the transformers' sampler through XLA (--noxla_sampler: the plain graph).",
)
flags.DEFINE_integer(
    "log_every",
    _DEFAULT["log_every"],
    "Steps between progress lines and metrics rows.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "checkpoint_every",
    _DEFAULT["checkpoint_every"],
    "Steps between checkpoints.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "picture_every",
    _DEFAULT["picture_every"],
    "Steps between TensorBoard pictures.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "eval_batch_size",
    _DEFAULT["eval_batch_size"],
    "Batch size of the final evaluation.",
    lower_bound=1,
)
flags.DEFINE_bool(
    "deterministic",
    _DEFAULT["deterministic"],
    "Deterministic ops: a run resumed after a kill ends with the same weights.",
)

FLAGS = flags.FLAGS


# === The loop ===


class Preempted(Exception):
    """SIGTERM arrived; the run saved a checkpoint at ``step`` and stopped."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(
            f"SIGTERM at step {step}: saved {checkpoint}; run the same command to resume"
        )
        self.step, self.checkpoint = step, checkpoint


class _SigtermCatcher:
    """Turns SIGTERM (a preemption notice) into a flag the loop checks every step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _writable(workdir: Path) -> None:
    """Fails early, and clearly, on a workdir that cannot be written."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_probe"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise OSError(
            e.errno, f"cannot write to the workdir {workdir}: {e.strerror or e}"
        ) from e


def _write_config(config: TrainConfig, workdir: Path) -> None:
    path = workdir / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        changed = config.same_run(saved)
        if changed:
            raise FileExistsError(
                f"{workdir} holds a run with other {', '.join(changed)} "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); pass another --workdir"
            )
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


class _Metrics:
    """``metrics.csv``: one row per logged step; rows past a resumed step are dropped."""

    FIELDS = (
        "step",
        "loss",
        "error",
        "sequence_error",
        "learning_rate",
        "examples_per_s",
        "input_wait",
        "theta_scale",
        "theta_shift",
        "grid_outside",
    )

    def __init__(self, path: Path, start_step: int):
        self.path = path
        rows = []
        if path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow(
                {k: row.get(k, "") for k in self.FIELDS}
            )


def _grids(config: TrainConfig, theta, size) -> np.ndarray:
    """Sampling grids of θ ``[B, P]`` or ``[B, K, P]``: ``[B(, K), *size, ndim]``."""
    transform = transforms.get_transform(config.transform)
    theta = np.asarray(theta)
    coords = transform.grid(tf.constant(theta.reshape(-1, theta.shape[-1])), size)
    return coords.numpy().reshape(*theta.shape[:-1], *coords.shape[1:])


def _theta_stats(config: TrainConfig, theta: np.ndarray, size) -> dict:
    """Mean scale and shift of the transforms, and the fraction of the sampling
    grids that falls outside the input (a transformer zooming out shows here first).

    Scale: half the length of the grid's first row (1 = identity); shift: the
    distance of the grid's centre from the input's."""
    coords = _grids(config, theta, size)
    coords = coords.reshape(-1, *coords.shape[-len(size) - 1 :])  # [N, *size, ndim]
    row = coords.reshape(len(coords), -1, size[-1], coords.shape[-1])[:, 0]
    side = np.linalg.norm(row[:, -1] - row[:, 0], axis=-1) / 2
    centre = coords.reshape(len(coords), -1, coords.shape[-1]).mean(axis=1)
    return {
        "theta_scale": float(side.mean()),
        "theta_shift": float(np.linalg.norm(centre, axis=-1).mean()),
        "grid_outside": float((np.abs(coords) > 1).any(axis=-1).mean()),
    }


def _picture(config, model, batch, step, num=8):
    """Inputs with the sampling grids, and the transformer outputs, of test examples.

    Volumes are shown summed over their depth, with the (x, y) of the grid's
    middle depth slice; the output is the model's depth projection."""
    side = batch["image"].shape[2]
    num = num if side <= 128 else 4  # large RGB images (CUB): fewer, not enlarged
    images = batch["image"][:num]
    out = model(images, training=False)
    size = images.shape[1:-1]
    coords = _grids(config, out["theta"], size)
    shown = images.numpy()
    if len(size) == 3:  # [N, D, H, W, C]: the projection the model sees, in [0, 1]
        shown = shown.sum(axis=1)
        shown /= max(float(shown.max()), 1e-6)
        coords = coords[:, size[0] // 2, ..., :2]
    transformed = out["transformed"].numpy()
    if len(size) == 3:
        transformed = transformed / max(float(transformed.max()), 1e-6)
    predicted = np.argmax(out["logits"].numpy(), -1)
    labels = np.asarray(batch["label"][:num])
    captions = [f"label {_text(t)} pred {_text(p)}" for t, p in zip(labels, predicted)]
    title = f"{config.model} {config.transform} on {config.dataset}, step {step}"
    return pictures.transformer_sheet(
        shown, coords, transformed, captions, zoom=max(1, 192 // side), title=title
    )


def _text(label) -> str:
    """A label as text: digit sequences as their digits (SVHN's "no digit", 10,
    left out)."""
    if not np.ndim(label):
        return str(label)
    return "".join(str(d) for d in np.ravel(label) if d < 10) or "-"


def _mistakes(logits, labels):
    """Wrong labels and wrong examples (any label wrong) in a batch, as float32:
    labels ``[B]`` or ``[B, T]`` (sequences: each digit is one label)."""
    wrong = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) != labels, tf.float32)
    wrong = tf.reshape(wrong, [tf.shape(wrong)[0], -1])  # [B, T]
    return tf.reduce_sum(wrong), tf.reduce_sum(tf.reduce_max(wrong, axis=1))


def _evaluate(model, pipeline) -> tuple[float, float, int]:
    """Error per label (per digit for sequences), per example, and examples."""
    wrong = wrong_examples = labels = examples = 0
    for batch in pipeline.dataset():
        logits = model(batch["image"], training=False)["logits"]
        w, we = _mistakes(logits, batch["label"])
        wrong, wrong_examples = wrong + float(w), wrong_examples + float(we)
        labels += int(np.prod(batch["label"].shape))
        examples += int(batch["label"].shape[0])
    return wrong / labels, wrong_examples / examples, examples


def train_and_evaluate(config: TrainConfig, workdir: str | Path) -> dict:
    """Trains (resuming from the workdir's latest checkpoint), evaluates, writes results."""
    workdir = Path(workdir)
    strategy = _strategy()  # first: a multi-worker strategy must precede other ops
    chief = _is_chief(strategy)
    # Only the chief writes into the workdir; the other workers of a multi-worker run
    # write (their share of the checkpoints, logs) to a temporary folder.
    out = workdir if chief else Path(tempfile.mkdtemp(prefix="stn_tf_worker_"))
    try:
        return _train_and_evaluate(config, workdir, out, strategy)
    finally:
        if not chief:
            shutil.rmtree(out, ignore_errors=True)


def _strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several tasks; otherwise
    MirroredStrategy over the local GPUs, or over the logical CPUs if there are none
    (one on a plain CPU machine; tests configure two)."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices(
        "CPU"
    )
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _train_and_evaluate(config, workdir, out, strategy):
    chief = out == workdir
    _writable(out)
    if chief:
        _write_config(config, workdir)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()  # for the rest of the process
    keras.utils.set_random_seed(config.seed)
    spec = dataset_spec(config)
    labels_per_example = int(np.prod(spec.label_shape))
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % (replicas * config.accumulate):
        raise ValueError(
            f"batch_size {config.batch_size} must split into {replicas} replicas x "
            f"{config.accumulate} accumulated parts"
        )
    train = make_pipeline(config, "train", batch_size=config.batch_size, training=True)
    test = make_pipeline(
        config, "test", batch_size=config.eval_batch_size, training=False
    )
    logging.info("data: %s; %s", train.origin, test.origin)

    with strategy.scope():
        model = build_model(config, jit_compile=config.xla_sampler)
        # Runs of 1-2 steps have no boundary; Keras needs one: put it past the end.
        boundaries = list(config.lr_boundaries) or [config.steps + 1]
        values = [
            config.learning_rate / 10**i for i in range(len(config.lr_boundaries) + 1)
        ]
        values += values[-1:] * (len(boundaries) + 1 - len(values))
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if config.optimizer == "rmsprop":
            optimizer = keras.optimizers.RMSprop(schedule, momentum=config.momentum)
        else:
            optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum)
        optimizer.build(model.trainable_variables)
    params = model.count_params()
    logging.info("%s: %s parameters", model.name, f"{params:,}")
    transformers = transformers_in(model)  # their variables: the localisation nets
    kind = config.transform if transformers else "no transformer"
    print(f"{config.model} ({kind}) on {config.dataset}: {params:,} parameters")

    # Seconds spent training, summed over the sessions of a resumed run.
    clock = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, clock=clock)
    manager = tf.train.CheckpointManager(
        checkpoint,
        out / "checkpoints",
        max_to_keep=3,
        step_counter=optimizer.iterations,
    )
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))  # the chief's
    if latest:
        weights = tf.train.Checkpoint(model=model, optimizer=optimizer)
        weights.restore(latest).assert_existing_objects_matched()
        # Checkpoints written before the clock was kept have none: it stays at 0.
        tf.train.Checkpoint(clock=clock).restore(latest).expect_partial()
    start = int(optimizer.iterations.numpy())
    trained_before = float(clock.numpy())
    if start:
        logging.info("resuming from %s at step %d", latest, start)
        print(f"resuming from {latest} at step {start}")

    loc_ids = {id(v) for st in transformers for v in st.trainable_variables}
    variables = model.trainable_variables
    multipliers = [
        config.loc_lr_multiplier if id(v) in loc_ids else 1.0 for v in variables
    ]
    decayed = [v for v in variables if _decayed(v)] if config.weight_decay else []

    def step_fn(batch):
        if config.augment_on == "device":
            batch = train.distort(batch)
        # Gradient accumulation: the parts' gradients sum to the batch's (the loss
        # of each part is divided by the global batch size).
        parts = [tf.split(batch[k], config.accumulate) for k in ("image", "label")]
        grads, loss, outs = None, 0.0, []
        for part, (images, labels) in enumerate(zip(*parts)):
            with tf.GradientTape() as tape:
                out = model(images, training=True)
                per_label = keras.losses.sparse_categorical_crossentropy(
                    labels, out["logits"], from_logits=True
                )  # [B] or [B, T]
                per_example = tf.reshape(per_label, [tf.shape(per_label)[0], -1])
                per_example = tf.reduce_mean(per_example, axis=1)  # digits weigh alike
                part_loss = tf.nn.compute_average_loss(
                    per_example, global_batch_size=config.batch_size
                )
                if decayed and part == 0:  # once per step, split over the replicas
                    part_loss += tf.nn.scale_regularization_loss(
                        _l2_penalty(decayed, config.weight_decay)
                    )
            part_grads = tape.gradient(part_loss, variables)
            grads = (
                part_grads
                if grads is None
                else [a + b for a, b in zip(grads, part_grads)]
            )
            loss += part_loss
            outs.append(out)
        # SGD (with or without momentum) is linear in the gradient: scaling a
        # variable's gradient scales its learning rate.
        grads = [g * m if m != 1.0 else g for g, m in zip(grads, multipliers)]
        optimizer.apply(grads, variables)
        logits = tf.concat([o["logits"] for o in outs], 0)
        wrong, wrong_examples = _mistakes(logits, batch["label"])
        theta = (
            tf.concat([o["theta"] for o in outs], 0)
            if "theta" in outs[0]
            else tf.zeros([tf.shape(logits)[0], 0])
        )
        finite = tf.reduce_all(tf.math.is_finite(loss)) & tf.reduce_all(
            tf.math.is_finite(theta)
        )
        broken = 1.0 - tf.cast(finite, tf.float32)
        return loss, wrong, wrong_examples, broken, theta

    @tf.function
    def train_step(batch):
        loss, wrong, wrong_examples, broken, theta = strategy.run(
            step_fn, args=(batch,)
        )
        total = strategy.reduce("SUM", loss, axis=None)
        errors = strategy.reduce("SUM", wrong, axis=None)
        sequences = strategy.reduce("SUM", wrong_examples, axis=None)
        broken = strategy.reduce("SUM", broken, axis=None)  # replicas with NaN/inf
        return (
            total,
            errors / (config.batch_size * labels_per_example),
            sequences / config.batch_size,
            broken == 0,
            strategy.gather(theta, axis=0),
        )

    metrics = _Metrics(out / "metrics.csv", start)
    writer = tf.summary.create_file_writer(str(out / "tensorboard"))
    picture_batch = next(iter(test.dataset()))

    def input_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Each pipeline feeds its workers' replicas their parts of every global batch.
        replicas = strategy.num_replicas_in_sync
        local = replicas // context.num_input_pipelines
        begin = context.input_pipeline_id * local
        return train.dataset(
            start, config.augment_on, parts=(begin, begin + local, replicas)
        )

    dataset = strategy.distribute_datasets_from_function(input_pipeline)
    iterator = iter(dataset)
    began = time.perf_counter()
    window_start, window_steps, window_loss, window_err = began, 0, 0.0, 0.0
    window_seq = window_wait = 0.0
    step = start
    with _SigtermCatcher() as sigterm:
        while step < config.steps:
            fetch = time.perf_counter()
            batch = next(iterator)  # waits only if the input pipeline is behind
            window_wait += time.perf_counter() - fetch
            loss, error, seq_error, finite, theta = train_step(batch)
            step += 1
            if not finite:
                raise FloatingPointError(
                    f"non-finite loss or θ at step {step} (loss {float(loss)}); stopping. The last good "
                    f"checkpoint is {manager.latest_checkpoint or 'none (no checkpoint yet)'}. "
                    "Lower --learning_rate or --loc_lr_multiplier."
                )
            window_steps += 1
            window_loss += float(loss)
            window_err += float(error)
            window_seq += float(seq_error)
            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                rate = window_steps * config.batch_size / (now - window_start)
                lr = float(schedule(step - 1))
                row = {
                    "step": step,
                    "loss": window_loss / window_steps,
                    "error": window_err / window_steps,
                    "sequence_error": window_seq / window_steps
                    if labels_per_example > 1
                    else "",
                    "learning_rate": lr,
                    "examples_per_s": rate,
                    "input_wait": window_wait / (now - window_start),
                }
                if loc_ids:
                    row.update(_theta_stats(config, theta.numpy(), spec.shape[:-1]))
                metrics.write(row)
                with writer.as_default(step=step):
                    for key, value in row.items():
                        if key != "step" and value != "":
                            tf.summary.scalar(key, value)
                    if loc_ids:
                        tf.summary.histogram("theta", theta)
                eta = (config.steps - step) * config.batch_size / rate
                print(
                    f"step {step}/{config.steps}  loss {row['loss']:.4f}  error {100 * row['error']:.2f}%  "
                    f"{rate:,.0f} ex/s  input wait {100 * row['input_wait']:.0f}%  "
                    f"ETA {_duration(eta)}",
                    flush=True,
                )
                window_start, window_steps, window_loss, window_err = now, 0, 0.0, 0.0
                window_seq = window_wait = 0.0
            if loc_ids and (step % config.picture_every == 0):
                with writer.as_default(step=step):
                    sheet = np.asarray(_picture(config, model, picture_batch, step))
                    tf.summary.image("transformer", sheet[None], step=step)
            if (
                step % config.checkpoint_every == 0
                or step == config.steps
                or sigterm.requested
            ):
                clock.assign(trained_before + time.perf_counter() - began)
                saved = _save(manager, step)
            if sigterm.requested:
                writer.flush()
                raise Preempted(step, saved)
    train_s = time.perf_counter() - began
    trained = step - start

    test_error, test_sequence_error, test_examples = _evaluate(model, test)
    origins = {"train": train.origin, "test": test.origin}
    if loc_ids:
        _picture(config, model, picture_batch, step).save(out / "transformer.png")
    results = {
        "test_error": test_error,
        "test_examples": test_examples,
        **(
            {"test_sequence_error": test_sequence_error}
            if labels_per_example > 1
            else {}
        ),
        "steps": step,
        "parameters": params,
        "train_wall_time_s": trained_before + train_s,  # all sessions
        "train_examples_per_s": trained * config.batch_size / train_s
        if trained
        else None,
        "dataset": config.dataset,
        "model": config.model,
        "transform": config.transform if loc_ids else None,
        ("digits" if spec.family == "mnist" else "data"): origins,
        "replicas": strategy.num_replicas_in_sync,
        "weights_sha256": _fingerprint(model),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    writer.flush()
    per = " per digit" if labels_per_example > 1 else ""
    sequences = (
        f", {100 * test_sequence_error:.2f}% of sequences wrong"
        if labels_per_example > 1
        else ""
    )
    print(
        f"test error {100 * test_error:.2f}%{per}{sequences} on {test_examples} "
        f"{config.dataset} test examples; results in {out}"
    )
    print(f"weights sha256 {results['weights_sha256']}", flush=True)
    return results


# Variables that weight decay leaves alone (substrings of their paths): kernels
# only, as the papers' Caffe-era recipes.
_NOT_DECAYED = ("bias", "beta", "gamma", "step_offsets", "control_points")


def _decayed(variable) -> bool:
    return not any(name in variable.path for name in _NOT_DECAYED)


def _l2_penalty(variables, weight_decay: float):
    """``wd / 2 * sum(w^2)``: its gradient is ``wd * w`` (Caffe's weight decay),
    which momentum and each variable's learning rate then act on."""
    return (
        0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
    )


def _fingerprint(model: keras.Model) -> str:
    """SHA-256 of every weight's bytes, in order: equal weights, equal fingerprints."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(
            np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes()
        )
    return digest.hexdigest()


def _save(manager: tf.train.CheckpointManager, step: int) -> str:
    """Saves a checkpoint; a failed write names the checkpoint that is still good.

    TensorFlow writes a checkpoint under a temporary name and updates the
    ``checkpoint`` index only when it is complete, so a crash or a full disk
    mid-save leaves the previous checkpoint as the latest.
    """
    try:
        return manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or e.strerror or str(e)
        raise OSError(
            getattr(e, "errno", None),
            f"could not save the checkpoint of step {step} in {manager.directory}: "
            f"{message}. The last complete checkpoint, {manager.latest_checkpoint or 'none'}, "
            "is kept; free space or fix permissions and run the same command to resume",
        ) from e


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


# === Command line ===


def config_from_flags() -> TrainConfig:
    """The config the flags name. For cub and svhn every flag not given takes the
    paper's recipe (``runs.RECIPES``); with ``--steps`` but no ``--lr_boundaries``
    the recipe's boundaries keep their place relative to the end."""
    values = {
        f.name: FLAGS[f.name].value
        for f in dataclasses.fields(TrainConfig)
        if f.name != "lr_boundaries"
    }
    values["lr_boundaries"] = tuple(int(b) for b in FLAGS.lr_boundaries or ())
    recipe = dict(RECIPES.get(FLAGS.dataset, {}))
    if recipe and FLAGS["steps"].present and not FLAGS["lr_boundaries"].present:
        scale = FLAGS.steps / recipe["steps"]
        bounds = {round(b * scale) for b in recipe.pop("lr_boundaries")} - {0}
        values["lr_boundaries"] = tuple(sorted(b for b in bounds if b < FLAGS.steps))
    for key, value in recipe.items():
        if not FLAGS[key].present:
            values[key] = value
    return TrainConfig(**values)


def main(argv):
    cli.prepare(argv)
    try:
        config = config_from_flags()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    uses = models.get_model(config.model).uses_transform
    name = (
        f"{config.dataset}_{config.model}"
        + (f"_{config.transform}" if uses else "")
        + f"_s{config.seed}"
    )
    workdir = FLAGS.workdir or str(Path("runs") / name)
    try:
        train_and_evaluate(config, workdir)
    except Preempted as e:
        print(str(e), flush=True)
        raise SystemExit(128 + signal.SIGTERM) from None  # the shell's code for SIGTERM
    except (OSError, FloatingPointError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
