"""Follows one training run's config through the code: where it goes, and how often
the dataset's spec is looked up again on the way.

    .venv/bin/python -m tools.config_trip [--steps=2]

Trains the smoke config (FCN on the embedded MNIST sample) with
``stn_tf.training.train_and_evaluate`` under ``sys.setprofile`` and prints, per
module, how many calls received the ``TrainConfig`` (as an argument, or as
``self``), and how many times the dataset registry (``datasets.get_dataset``) was
asked for the run's dataset. It uses only names every version of the package
has, so the same file runs on an older checkout to compare.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import tempfile

from absl import app, flags

from tools import benchlib

# Unless a tool imported before it (the tests) defined --steps.
benchlib.define_flag(
    "integer", "steps", 2, "Training steps of the followed run.", lower_bound=1
)
FLAGS = flags.FLAGS


def follow(config) -> tuple[collections.Counter, collections.Counter]:
    """(calls that received ``config`` per module, dataset lookups per caller)."""
    from stn_tf import training

    entered, lookups = collections.Counter(), collections.Counter()
    kind = type(config)

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        module = frame.f_globals.get("__name__", "?")
        if code.co_name == "get_dataset" and module.endswith("datasets"):
            caller = frame.f_back
            lookups[f"{caller.f_globals.get('__name__')}.{caller.f_code.co_name}"] += 1
        if not module.startswith("stn_tf"):
            return
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        if any(isinstance(frame.f_locals.get(n), kind) for n in names):
            entered[module] += 1

    with tempfile.TemporaryDirectory() as workdir:
        sys.setprofile(profile)
        try:
            training.train_and_evaluate(config, workdir)
        finally:
            sys.setprofile(None)
    return entered, lookups


def main(argv):
    del argv
    from stn_tf import runs

    fields = {f.name for f in dataclasses.fields(runs.TrainConfig)}
    config = runs.TrainConfig(
        **{
            k: v
            for k, v in dict(
                dataset="mnist",
                model="fcn",
                steps=FLAGS.steps,
                batch_size=8,
                mnist_source="embedded",
                param_budget=20_000,
                eval_batch_size=500,
                log_every=1,
                checkpoint_every=FLAGS.steps,
                picture_every=10**6,
            ).items()
            if k in fields
        }
    )
    entered, lookups = follow(config)
    print(f"calls that received the TrainConfig: {sum(entered.values())}")
    for module, n in entered.most_common():
        print(f"  {n:5d}  {module}")
    print(f"dataset spec lookups: {sum(lookups.values())}")
    for caller, n in lookups.most_common():
        print(f"  {n:5d}  {caller}")


if __name__ == "__main__":
    app.run(main)
