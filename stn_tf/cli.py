"""What every command line of the project does first (absl mains)."""

from __future__ import annotations

import tensorflow as tf
from absl import app, flags, logging

__all__ = ["prepare"]


def prepare(argv: list[str], required: tuple[str, ...] = ()) -> None:
    """Quiets TensorFlow's INFO logging (unless ``--verbosity`` is given), refuses
    stray arguments and names the first missing required flag."""
    tf.get_logger().setLevel("WARNING")
    if not flags.FLAGS["verbosity"].present:  # TF's INFO lines drown what matters
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    for name in required:
        if not flags.FLAGS[name].value:
            raise app.UsageError(f"--{name} is required")
