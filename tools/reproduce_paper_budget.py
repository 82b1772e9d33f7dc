"""The STN paper's full recipe and budget on one column of Table 1 (A.4): 150,000
steps at batch 256, plain SGD at 0.01 divided by 10 at 50k and 100k, no momentum,
no weight decay, no dropout; the whole test set evaluated every --eval_every steps.

    python -m tools.reproduce_paper_budget --dataset=mnist_r --models=cnn,st_cnn
    python -m tools.reproduce_paper_budget --dataset=mnist_r --save   # state to commit

A run takes hours on 2 CPU cores and outlives a session, so its resumable state
travels through the repository: ``--save`` copies each run's ``config.json``,
``metrics.csv``, ``eval.csv`` and latest checkpoint to
``docs/results/paper_budget/<run>/`` (commit it), and a later start, on any machine,
copies that state back into an empty workdir and resumes where it was saved. A
finished run is recorded as every reproduction's run is
(``docs/results/paper_budget/<run>-<digest>.json``) and its saved state removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf
from absl import app, flags

from stn_tf import cli
from stn_tf.runs import TrainConfig
from tools import benchlib, reprolib

FLAGS = flags.FLAGS
# --dataset, --seed, --mnist_dir, --precision and --eval_every come with reprolib
# (made from TrainConfig's declarations); this tool gives them its own defaults.
DEFAULTS = {
    "dataset": "mnist_r",
    "seed": 0,
    "mnist_dir": "../shared/data/mnist-full",
    "precision": "mixed_bfloat16",
    "eval_every": 5000,
}
# Defined unless another tool imported into the same process (the tests) did.
define_flag = benchlib.define_flag
define_flag("list", "models", ["cnn", "st_cnn"], "Models to train, in order.")
define_flag("string", "root", "runs/paper_budget", "Folder of the runs' workdirs.")
define_flag("bool", "save", False, "Copy each run's resumable state to --state, stop.")
define_flag(
    "string",
    "state",
    "docs/results/paper_budget",
    "Folder of the runs' saved state (committed) and records.",
)

# What a run needs to resume: the checkpoint's files are added by name.
STATE_FILES = ("config.json", "metrics.csv", "eval.csv")


def paper_config(
    dataset: str,
    model: str,
    *,
    seed: int,
    mnist_dir: str,
    precision: str,
    eval_every: int,
) -> TrainConfig:
    """A.4's recipe at its budget, for ``model`` on ``dataset``."""
    return TrainConfig(
        dataset=dataset,
        model=model,
        transform="affine",
        steps=150_000,
        batch_size=256,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.0,
        lr_boundaries=(50_000, 100_000),
        weight_decay=0.0,
        dropout=0.0,
        seed=seed,
        precision=precision,
        mnist_dir=mnist_dir,
        mnist_source="idx",
        log_every=500,
        checkpoint_every=2500,
        picture_every=50_000,
        eval_every=eval_every,
    )


def run_name(config: TrainConfig) -> str:
    transform = "_affine" if config.model.startswith("st_") else ""
    return f"{config.dataset}_{config.model}{transform}_s{config.seed}"


def latest_checkpoint(workdir: Path) -> list[Path]:
    """The latest checkpoint's files and its index file ``checkpoint``; [] if none."""
    prefix = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    if prefix is None:
        return []
    return [
        workdir / "checkpoints" / "checkpoint",
        *Path(prefix).parent.glob(Path(prefix).name + ".*"),
    ]


def save_state(workdir: Path, state: Path) -> list[Path]:
    """Copies ``workdir``'s resumable state into ``state`` (replacing what was there)."""
    files = latest_checkpoint(workdir)
    if not files:
        return []
    fresh = state.with_name(state.name + ".partial")
    shutil.rmtree(fresh, ignore_errors=True)
    (fresh / "checkpoints").mkdir(parents=True)
    for path in files:
        shutil.copy2(path, fresh / "checkpoints" / path.name)
    # The index names only the copied checkpoint (its kept predecessors stay behind).
    prefix = Path(tf.train.latest_checkpoint(str(workdir / "checkpoints"))).name
    (fresh / "checkpoints" / "checkpoint").write_text(
        f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'
    )
    for name in STATE_FILES:
        if (workdir / name).exists():
            shutil.copy2(workdir / name, fresh / name)
    shutil.rmtree(state, ignore_errors=True)
    fresh.rename(state)
    return sorted(state.rglob("*"))


def restore_state(state: Path, workdir: Path) -> bool:
    """Copies a saved state into ``workdir`` if it has no checkpoint of its own."""
    if not state.is_dir() or latest_checkpoint(workdir):
        return False
    shutil.copytree(state, workdir, dirs_exist_ok=True)
    return True


@cli.preemptible(advice="--save then commits it for another machine")
def main(argv):
    cli.prepare(argv)
    given = {k: FLAGS[k].value if FLAGS[k].present else v for k, v in DEFAULTS.items()}
    dataset = given.pop("dataset")
    for model in FLAGS.models:
        config = paper_config(dataset, model, **given)
        name = run_name(config)
        workdir, state = Path(FLAGS.root) / name, Path(FLAGS.state) / name
        if FLAGS.save:
            saved = save_state(workdir, state)
            print(f"{name}: " + (f"saved to {state}" if saved else "no checkpoint yet"))
            continue
        if restore_state(state, workdir):
            print(f"{name}: resuming from the state saved in {state}")
        results = reprolib.train_or_read(config, workdir)
        shutil.rmtree(state, ignore_errors=True)  # recorded: the state has served
        print(f"{name}: test error {100 * results['test_error']:.2f} %")


if __name__ == "__main__":
    app.run(main)
