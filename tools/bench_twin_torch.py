"""PyTorch's side of ``tools/bench_twin.py``: the RTS CNN and ST-CNN of STN §4.1
written again in PyTorch, layer for layer as ``stn_tf`` builds them for
``--dataset=mnist_rts`` (initialisation aside), trained in a process that imports
no TensorFlow.

A benchmark-only file: PyTorch lives in the separate benchmark environment
(``.venv-bench``, see ``tools/bench_sampler_torch.py``), never in the package.
``tools/bench_twin.py`` starts this module; it is not meant to be run by hand.
"""

from __future__ import annotations

import json
import os
import platform

import numpy as np
from absl import app, flags

from tools import benchlib

flags.DEFINE_list("cases", ["cnn@128", "st_cnn@128"], "model@batch to train.")
flags.DEFINE_integer("steps", 30, "Timed steps per case (after the warm-up).")
flags.DEFINE_integer("warmup", 5, "Untimed steps per case first.")
flags.DEFINE_integer("window", 10, "Steps per timed window (a rate per window).")
flags.DEFINE_string("out", None, "JSON file of the rates.", required=True)
FLAGS = flags.FLAGS

SIDE, CLASSES = 42, 10  # mnist_rts: 42x42 grey digits, 10 classes


def build(model: str):
    """The twin of ``runs.build_model`` for ``--dataset=mnist_rts --model=MODEL``:
    widths as ``stn_tf`` solves them for the 400k budget (CNN 87 filters, ST-CNN's
    classifier 85), the same layers, pools and paddings. Flattening is NCHW here
    and NHWC there: the same parameters, in another order."""
    import torch
    from torch import nn

    class CNN(nn.Module):
        """conv 9x9, pool, conv 7x7, pool, logits; "same" padding below 28 px."""

        def __init__(self, width: int, side: int):
            super().__init__()
            padding = 0 if side >= 28 else "same"
            conv_0 = nn.Conv2d(1, width, 9, padding=padding)
            conv_1 = nn.Conv2d(width, width, 7, padding=padding)
            after = (side - 8) // 2 if padding == 0 else side // 2
            after = (after - 6) // 2 if padding == 0 else after // 2
            self.layers = nn.Sequential(
                conv_0, nn.ReLU(), nn.MaxPool2d(2),
                conv_1, nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(width * after * after, CLASSES),
            )  # fmt: skip

        def forward(self, x):
            return self.layers(x)

    class STCNN(nn.Module):
        """Affine transformer (the ST-CNN localisation net on the 2x down-sampled
        input, θ starting at the identity), 2x2 average pooling, then the CNN."""

        def __init__(self):
            super().__init__()
            self.localization = nn.Sequential(
                nn.MaxPool2d(2),
                nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(20, 20, 5), nn.ReLU(),
                nn.Flatten(), nn.Linear(20 * 4 * 4, 20), nn.ReLU(),
            )  # fmt: skip
            self.theta = nn.Linear(20, 6)
            nn.init.zeros_(self.theta.weight)
            with torch.no_grad():
                self.theta.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
            self.classifier = CNN(85, SIDE // 2)

        def forward(self, x):
            theta = self.theta(self.localization(x)).view(-1, 2, 3)
            grid = nn.functional.affine_grid(theta, x.shape, align_corners=True)
            x = nn.functional.grid_sample(x, grid, align_corners=True)
            return self.classifier(nn.functional.avg_pool2d(x, 2))

    return CNN(87, SIDE) if model == "cnn" else STCNN()


def train_case(model_name: str, batch: int) -> dict:
    """Rates (examples/s) of the windows of one case, and its parameter count."""
    import torch

    torch.manual_seed(0)
    model = build(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(size=(batch, 1, SIDE, SIDE)).astype("f4"))
    labels = torch.from_numpy(rng.integers(0, CLASSES, batch))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    rates, warm_s = benchlib.time_windows(
        step, batch, FLAGS.warmup, FLAGS.steps, FLAGS.window
    )
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "rates": rates, "warm_s": warm_s}


def main(argv):
    del argv
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    result = {
        "framework": f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "python": platform.python_version(),
        "cases": {},
    }
    for case in FLAGS.cases:
        model, batch = case.split("@")
        result["cases"][case] = train_case(model, int(batch))
        rates = result["cases"][case]["rates"]
        print(f"torch {case}: {np.median(rates):,.0f} ex/s", flush=True)
    with open(FLAGS.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    app.run(main)
