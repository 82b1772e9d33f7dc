"""What every command line of the project does first (absl mains), and the
console scripts ``stn-train``, ``stn-evaluate``, ``stn-demo``, ``stn-export``,
``stn-tflite`` and ``stn-preview``."""

from __future__ import annotations

import functools
import importlib
import signal

import tensorflow as tf
from absl import app, flags, logging

import stn_tf

__all__ = [
    "define_source_flags",
    "demo",
    "evaluate",
    "export",
    "prepare",
    "preemptible",
    "preview",
    "source",
    "tflite",
    "train",
]

flags.DEFINE_bool("version", False, "Print the version of stn_tf and exit.")


def prepare(argv: list[str], required: tuple[str, ...] = ()) -> None:
    """Prints the version and exits on ``--version``; quiets TensorFlow's INFO
    logging (unless ``--verbosity`` is given), refuses stray arguments and names
    the first missing required flag."""
    if flags.FLAGS.version:
        print(f"stn_tf {stn_tf.__version__}")
        raise SystemExit(0)
    tf.get_logger().setLevel("WARNING")
    if not flags.FLAGS["verbosity"].present:  # TF's INFO lines drown what matters
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    for name in required:
        if not flags.FLAGS[name].value:
            raise app.UsageError(f"--{name} is required")


def define_source_flags() -> None:
    """``--preset`` and ``--workdir``: what a command that reads a trained model
    (evaluate, demo) reads."""
    flags.DEFINE_string(
        "preset", None, "A bundled preset's name, or a preset directory."
    )
    flags.DEFINE_string(
        "workdir", None, "Instead of --preset: a training run (its latest checkpoint)."
    )


def source(names: tuple[str, ...] = ("preset", "workdir")) -> tuple[str, str]:
    """``(flag, value)`` of the one flag of ``names`` given; refuses none or
    several, and a ``--preset`` that names no preset (with the names there are)."""
    given = [n for n in names if flags.FLAGS[n].value is not None]
    if len(given) != 1:
        options = ", ".join(f"--{n}" for n in names)
        raise app.UsageError(
            f"pass exactly one of {options}. Received: "
            f"{', '.join('--' + n for n in given) or 'none'}"
        )
    (name,) = given
    if name == "preset":
        from stn_tf.models import presets  # not at import: it is heavy

        try:
            presets.preset_dir(flags.FLAGS.preset)
        except (FileNotFoundError, ValueError) as e:
            raise app.UsageError(str(e)) from None
    return name, flags.FLAGS[name].value


def preemptible(advice: str = ""):
    """A command's ``main``, decorated: a run stopped by SIGTERM (its checkpoint
    saved, ``training.Preempted``) ends in one line that says how to resume, and
    ``advice``, with the shell's code for SIGTERM (143), not in a traceback."""

    def decorate(main):
        @functools.wraps(main)
        def wrapped(argv):
            from stn_tf.training.workdir import Preempted  # not at import: it is heavy

            try:
                return main(argv)
            except Preempted as e:
                print(f"{e}{'; ' + advice if advice else ''}", flush=True)
                raise SystemExit(128 + signal.SIGTERM) from None

        return wrapped

    return decorate


def _run(name: str) -> None:
    # Imported here: a console script defines only its own command's flags. The
    # export modules define theirs only when run (so they import clean).
    module = importlib.import_module(name)
    if hasattr(module, "define_flags"):
        module.define_flags()
    app.run(module.main)


def train() -> None:
    """``stn-train``: ``python -m stn_tf.train``."""
    _run("stn_tf.train")


def evaluate() -> None:
    """``stn-evaluate``: ``python -m stn_tf.evaluate``."""
    _run("stn_tf.evaluate")


def demo() -> None:
    """``stn-demo``: ``python -m stn_tf.demo``."""
    _run("stn_tf.demo")


def export() -> None:
    """``stn-export``: ``python -m stn_tf.export.saved_model``."""
    _run("stn_tf.export.saved_model")


def tflite() -> None:
    """``stn-tflite``: ``python -m stn_tf.export.tflite``."""
    _run("stn_tf.export.tflite")


def preview() -> None:
    """``stn-preview``: ``python -m stn_tf.pipelines.preview``."""
    _run("stn_tf.pipelines.preview")
