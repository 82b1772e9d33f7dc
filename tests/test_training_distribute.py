"""Training on several replicas and several workers gives what one replica gives.

Each run is a fresh process: logical CPU devices and multi-worker strategies must
be set up before any other TensorFlow op runs.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stn_tf.pipelines import datasets, mnist

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "dataset": "mnist_rts",
    "model": "st_cnn",
    "steps": 12,
    "batch_size": 16,
    "learning_rate": 0.02,
    "momentum": 0.9,
    # The penalty is added once per step, split over the replicas: with decay on,
    # two replicas follow one only if it is not counted once per replica.
    "weight_decay": 0.01,
    "mnist_source": "embedded",
    "param_budget": 20000,
    "log_every": 1,
    "checkpoint_every": 6,
    "picture_every": 1000000,
    "eval_batch_size": 500,
}

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    replicas, workdir, config = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    if replicas > 1:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
        )
    from stn_tf import train
    train.train_and_evaluate(train.TrainConfig(**config), workdir)
    """
)


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _train_on(replicas, workdir):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(replicas), str(workdir), json.dumps(CONFIG)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with (workdir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return json.loads((workdir / "results.json").read_text()), rows


def test_pipeline_parts_make_up_the_batches():
    digits = mnist.load_mnist("train", source="embedded")
    pipe = datasets.Pipeline("mnist_rts", digits, batch_size=8, training=True, seed=3)
    whole = [b["image"].numpy() for b in pipe.dataset(5).take(2)]
    first = [b["image"].numpy() for b in pipe.dataset(5, parts=(0, 2, 4)).take(4)]
    second = [b["image"].numpy() for b in pipe.dataset(5, parts=(2, 4, 4)).take(4)]
    for i in range(2):  # pipeline 0 feeds replicas 0, 1; pipeline 1 replicas 2, 3
        parts = [first[2 * i], first[2 * i + 1], second[2 * i], second[2 * i + 1]]
        np.testing.assert_array_equal(np.concatenate(parts), whole[i])
    with pytest.raises(
        ValueError, match=r"count dividing the batch size 8.*\(0, 1, 3\)"
    ):
        pipe.dataset(parts=(0, 1, 3))


@pytest.mark.slow
def test_two_replicas_follow_the_trajectory_of_one(tmp_path):
    one, rows_one = _train_on(1, tmp_path / "one")
    two, rows_two = _train_on(2, tmp_path / "two")
    assert one["replicas"] == 1 and two["replicas"] == 2
    losses_one = np.array([float(r["loss"]) for r in rows_one])
    losses_two = np.array([float(r["loss"]) for r in rows_two])
    assert len(losses_one) == CONFIG["steps"]
    # Same global batches, loss averaged over the global batch, gradients summed
    # across replicas: the same numbers up to float summation order.
    np.testing.assert_allclose(losses_two, losses_one, rtol=2e-4, atol=1e-5)
    assert abs(one["test_error"] - two["test_error"]) <= 0.01


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_together_and_only_the_chief_writes(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workdir = tmp_path / "run"
    args = [f"--{k}={v}" for k, v in CONFIG.items()]
    processes = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "stn_tf.train", *args, f"--workdir={workdir}"],
                cwd=REPO,
                env=_env(TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        outputs.append(out)
    fingerprints = [out.split("weights sha256 ")[1].split()[0] for out in outputs]
    assert fingerprints[0] == fingerprints[1]  # the workers agree on every weight
    results = json.loads((workdir / "results.json").read_text())
    assert results["replicas"] == 2 and results["weights_sha256"] == fingerprints[0]
    assert f"results in {workdir}" in outputs[0]
    assert (
        "stn_tf_worker_" in outputs[1]
    )  # the other worker wrote to a temporary folder
    assert not Path(
        outputs[1].split("results in ")[1].split()[0]
    ).exists()  # cleaned up
    assert sorted(p.name for p in workdir.iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.csv",
        "results.json",
        "tensorboard",
        "transformer.png",
    ]
