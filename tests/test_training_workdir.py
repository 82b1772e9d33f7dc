"""Faults a training run survives: SIGKILL, SIGTERM (preemption), unwritable workdirs,
a full disk. The trainer runs as a real process here, killed from outside."""

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from stn_tf import train

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--dataset=mnist",
    "--model=st_cnn",
    "--mnist_source=embedded",
    "--batch_size=16",
    "--learning_rate=0.02",
    "--momentum=0.9",
    "--param_budget=20000",
    "--eval_batch_size=500",
    "--log_every=1",
    "--picture_every=1000000",
    "--deterministic",
]
STEPS = 40


def _command(workdir, checkpoint_every):
    return [
        sys.executable,
        "-m",
        "stn_tf.train",
        *ARGS,
        f"--steps={STEPS}",
        f"--checkpoint_every={checkpoint_every}",
        f"--workdir={workdir}",
    ]


def _run(workdir, checkpoint_every=5):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        _command(workdir, checkpoint_every),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _start_and_signal(workdir, sig, checkpoint_every, ready):
    """Starts the trainer, waits until ``ready(workdir)``, sends ``sig``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        _command(workdir, checkpoint_every),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not ready(workdir):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the trainer never got there"
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _logged_steps(workdir):
    path = workdir / "metrics.csv"
    if not path.exists():
        return 0
    return max(len(path.read_text().splitlines()) - 1, 0)


def _weights(workdir):
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    # Every variable: the model's (saved once, under the optimizer's path) and the
    # optimizer's momenta and step; not the count of saves, nor the training time
    # (``clock``), which differ.
    names = sorted(
        n
        for n in reader.get_variable_to_shape_map()
        if not n.startswith(("save_counter", "_CHECKPOINTABLE", "clock/"))
    )
    return {n: reader.get_tensor(n) for n in names}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    done = _run(workdir)
    assert done.returncode == 0, done.stderr
    return _weights(workdir)


def _assert_same_weights(a, b):
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_sigkill_then_the_same_command_ends_with_the_same_weights(
    uninterrupted, tmp_path
):
    # Killed twice without warning, between and during checkpoints.
    for after in (12, 27):
        code, _, _ = _start_and_signal(
            tmp_path, signal.SIGKILL, 5, lambda w, n=after: _logged_steps(w) >= n
        )
        assert code == -signal.SIGKILL
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    assert "could not be found in the restored object" not in done.stderr  # no noise
    _assert_same_weights(uninterrupted, _weights(tmp_path))
    steps = [
        int(line.split(",")[0])
        for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert steps == list(range(1, STEPS + 1))  # no step lost or repeated in the log


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_then_the_run_resumes(uninterrupted, tmp_path):
    code, out, _ = _start_and_signal(
        tmp_path, signal.SIGTERM, 1000, lambda w: _logged_steps(w) >= 7
    )
    assert code == 128 + signal.SIGTERM
    step = int(out.split("SIGTERM at step ")[1].split(":")[0])
    assert 7 <= step < STEPS
    # checkpoint_every=1000: this checkpoint exists only because of the SIGTERM.
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith(f"ckpt-{step}")
    done = _run(tmp_path, checkpoint_every=1000)
    assert done.returncode == 0, done.stderr
    assert f"at step {step}" in done.stdout
    _assert_same_weights(uninterrupted, _weights(tmp_path))


def test_an_unwritable_workdir_fails_clearly_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = _run(blocker / "run")
    assert done.returncode == 1
    assert re.search(
        r"error: .*cannot write to the workdir .*Not a directory", done.stderr
    )
    assert "Traceback" not in done.stderr


def test_a_full_disk_at_checkpoint_time_names_the_checkpoint_kept(
    tmp_path, monkeypatch
):
    real_save = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    config = tiny_config(steps=6, checkpoint_every=2, log_every=2)
    with pytest.raises(
        OSError, match=r"step 4 .*No space left.*ckpt-2, is kept"
    ) as info:
        train.train_and_evaluate(config, tmp_path)
    assert info.value.errno == errno.ENOSPC
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
