"""Evaluates a preset, or a training run, on its dataset's fixed test set.

    python -m stn_tf.evaluate --preset=mnist_rts_st_cnn_affine --mnist_dir=DIR

``--preset`` is a bundled preset's name (``stn_tf.models.list_presets()``) or a
preset directory; ``--workdir`` a run of ``python -m stn_tf.train`` instead. The
test set is the one the run was tested on: the same distortions of the same
digits (the sets are generated with a fixed key). The MNIST digits come from
``--mnist_dir`` (the official IDX files), else TFDS, else the embedded 1,000-digit
sample (``--mnist_source``); only the whole official test set gives the number
the preset's metadata records, which is printed beside it. The model computes in
the precision it was trained in (``--precision`` to change it).
"""

from __future__ import annotations

import dataclasses
import time

from absl import app, flags

from stn_tf import cli, fields, runs
from stn_tf.models import presets
from stn_tf.pipelines import datasets
from stn_tf.training.evaluate import evaluate

__all__ = ["main", "evaluate_run"]

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run, so the module imports clean)."""
    cli.define_source_flags()
    flags.DEFINE_integer("batch_size", 500, "Test examples per batch.", lower_bound=1)
    flags.DEFINE_enum(
        "precision",
        None,
        list(runs.PRECISIONS),
        "Compute precision (default: the run's own).",
    )
    fields.define_flags(datasets.Sources)  # --mnist_dir, --data_dir, ...


def evaluate_run(source, sources: datasets.Sources, *, batch_size=500, precision=None):
    """``(config, error, sequence_error, examples)`` of a preset or a run on its
    test set, its digits from ``sources``. ``precision``: default the run's."""
    precision = precision or runs.config_of(source).precision
    config, model, _ = runs.restore(source, precision=precision)
    # As it is evaluated: the precision it computes in, the digits it reads.
    config = dataclasses.replace(
        config, precision=precision, **dataclasses.asdict(sources)
    )
    pipeline = runs.Run.of(config).pipeline(
        "test", batch_size=batch_size, training=False
    )
    error, sequence_error, examples = evaluate(model, pipeline)
    return config, error, sequence_error, examples


def main(argv):
    cli.prepare(argv)
    _, source = cli.source()
    began = time.perf_counter()
    try:
        sources = datasets.Sources(**fields.given(datasets.Sources))
        config, error, sequence_error, examples = evaluate_run(
            source, sources, batch_size=FLAGS.batch_size, precision=FLAGS.precision
        )
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    line = f"{source}: {100 * error:.2f} % test error on {examples:,} examples"
    if config.dataset == "mnist_sequence":
        line += f" ({100 * sequence_error:.2f} % of sequences wrong)"
    print(
        f"{line} of {config.dataset}, {config.precision}, {time.perf_counter() - began:.0f} s"
    )
    if FLAGS.preset:
        meta = presets.read_metadata(FLAGS.preset)
        recorded = meta.get("test_error")
        if recorded is not None:
            examples = meta.get("test_examples")
            print(
                f"  recorded: {100 * recorded:.2f} % on "
                f"{f'{examples:,}' if isinstance(examples, int) else '?'} examples "
                f"({meta.get('record', 'no record')}); the paper: "
                f"{meta.get('paper_error_percent', '–')} %"
            )


if __name__ == "__main__":
    define_flags()
    app.run(main)
