"""Draws what a preset's transformer does to test digits, as a PNG.

    python -m stn_tf.demo --preset=mnist_rts_st_cnn_affine --out=demo.png

``--preset`` is a bundled preset's name or a preset directory (``--workdir``: a
training run instead). The first ``--num`` examples of the preset's fixed test
set are drawn with the transformer's sampling grid on them and the transformer's
output beside them, captioned with the label and the model's prediction; a model
without a transformer (the CNNs) shows the digits and its predictions. The digits
come from ``--mnist_dir``, else TFDS, else the 1,000-digit sample embedded in the
package, so the command works offline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from absl import app, flags

from stn_tf import cli, fields, pictures, runs
from stn_tf.pipelines import datasets
from stn_tf.training import summaries

__all__ = ["demo_picture", "main"]

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run, so the module imports clean)."""
    cli.define_source_flags()
    flags.DEFINE_string("out", "demo.png", "The PNG to write.")
    flags.DEFINE_integer(
        "num", 8, "Test examples to draw.", lower_bound=1, upper_bound=64
    )
    fields.define_flags(datasets.Sources)  # --mnist_dir, --data_dir, ...


def demo_picture(source, sources: datasets.Sources, num: int = 8):
    """The picture of a preset or a run on the first ``num`` examples of its
    test set (a ``PIL.Image``), its digits from ``sources``."""
    config, model, step = runs.restore(source)
    config = dataclasses.replace(config, **dataclasses.asdict(sources))
    pipeline = runs.Run.of(config).pipeline("test", batch_size=num, training=False)
    batch = next(iter(pipeline.dataset()))
    if model.output.get("theta") is not None:
        return summaries.picture(config, model, batch, step, num=num)
    images = batch["image"].numpy()
    predicted = np.argmax(model(images, training=False)["logits"].numpy(), -1)
    captions = [
        f"label {summaries.label_text(t)} pred {summaries.label_text(p)}"
        for t, p in zip(batch["label"].numpy(), predicted)
    ]
    side = images.shape[2]
    title = f"{config.model} on {config.dataset}, step {step} (no transformer)"
    return pictures.image_sheet(images, captions, zoom=max(1, 96 // side), title=title)


def main(argv):
    cli.prepare(argv)
    _, source = cli.source()
    try:
        sources = datasets.Sources(**fields.given(datasets.Sources))
        picture = demo_picture(source, sources, FLAGS.num)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    print(f"wrote {out}: {FLAGS.num} test examples of {source}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
