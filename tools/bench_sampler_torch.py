"""PyTorch's side of ``tools/bench_sampler.py``: ``F.affine_grid`` + ``F.grid_sample``
timed in a process that imports PyTorch and not TensorFlow, as a PyTorch user runs it.

PyTorch is a benchmark dependency only, never one of the package; it lives in its
own environment (the pin takes the CPU build)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e ".[cpu]" "torch==2.13.0+cpu"

``tools/bench_sampler.py`` starts this module with that environment's Python
(``--torch_python``); it is not meant to be run by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from absl import app, flags

from tools import sampler_cases  # framework-free: no TensorFlow here

# How PyTorch is given several grids per image (W3: 4 transformers, W4: 3 steps):
VARIANTS = {
    # One grid_sample call over the B images, the grids of one image stacked along
    # the output height ([B, grids * H', W', 2]), as ours.
    "torch": "grids stacked along H' (one call over B images)",
    # Each image repeated for its grids as a view (expand: stride 0, no copy), one
    # call over B * grids images; its backward sums the grids' image gradients.
    "torch_expand": "images expanded to B * grids (a view), one grid each",
}

flags.DEFINE_list("variants", list(VARIANTS), "PyTorch forms to time.")
flags.DEFINE_list("workloads", list(sampler_cases.WORKLOADS), "Workloads.")
flags.DEFINE_integer("repeats", 15, "Timed calls per case.")
flags.DEFINE_integer("warmup", 2, "Untimed calls per case first.")
flags.DEFINE_integer("seed", 0, "Seed of the inputs.")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: the cores).")
flags.DEFINE_string("out", None, "JSON file of the times.", required=True)
flags.DEFINE_string("dump", "", "Folder for each variant's check arrays (.npz).")
flags.DEFINE_string("device", "cpu", "torch device: cpu, or cuda on an accelerator.")
FLAGS = flags.FLAGS


def make_steps(wl: sampler_cases.Workload, variant: str, inputs):
    """The three timed steps and the check of one PyTorch form.

    Convention: bilinear, zeros outside, ``align_corners=True`` (as ours). The
    inputs are converted once, here: images and upstream NHWC -> contiguous NCHW,
    θ ``[B * grids, 6]`` -> ``[B * grids, 2, 3]``.
    """
    import torch

    fn = torch.nn.functional
    images_np, theta_np, upstream_np = inputs
    device = torch.device(FLAGS.device)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous().to(device)
    theta = torch.from_numpy(theta_np).reshape(-1, 2, 3).to(device)
    upstream = torch.from_numpy(upstream_np).permute(0, 3, 1, 2).contiguous()
    upstream = upstream.to(device)
    n = wl.batch * wl.grids
    size = (n, wl.channels, *wl.out_hw)
    h, w = wl.out_hw

    def forward(x, t):
        grid = fn.affine_grid(t, size, align_corners=True)  # [B * grids, H', W', 2]
        if variant == "torch":
            grid = grid.reshape(wl.coords_shape)  # a view: [B, grids * H', W', 2]
            source = x
        else:  # [B, C, H, W] -> [B * grids, C, H, W], a view
            source = x[:, None].expand(-1, wl.grids, -1, -1, -1)
            source = source.reshape(n, wl.channels, *wl.in_hw)
        out = fn.grid_sample(
            source, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        if variant == "torch_expand":  # [B * grids, C, H', W'] -> [B, C, grids H', W']
            out = out.reshape(wl.batch, wl.grids, wl.channels, h, w)
            out = out.permute(0, 2, 1, 3, 4).reshape(upstream.shape)
        return grid, out, torch.sum(out * upstream)

    def fwd():
        with torch.no_grad():
            return forward(images, theta)[2].item()

    def theta_grad():
        t = theta.detach().requires_grad_()
        loss = forward(images, t)[2]
        (grad,) = torch.autograd.grad(loss, [t])
        return loss.item(), grad.sum().item()

    def full_grad():
        x, t = images.detach().requires_grad_(), theta.detach().requires_grad_()
        loss = forward(x, t)[2]
        grad_images, grad_theta = torch.autograd.grad(loss, [x, t])
        return loss.item(), grad_images.sum().item(), grad_theta.sum().item()

    def check():
        x, t = images.detach().requires_grad_(), theta.detach().requires_grad_()
        grid, out, loss = forward(x, t)
        grads = torch.autograd.grad(loss, [x, t, grid])
        coords = grid.detach().reshape(wl.coords_shape)
        arrays = {
            "out": out.detach().permute(0, 2, 3, 1),
            "grad_images": grads[0].permute(0, 2, 3, 1),
            "grad_theta": grads[1].reshape(-1, 6),
            "grad_coords": grads[2].reshape(wl.coords_shape),
            "coords": coords,
        }
        return {k: v.cpu().numpy() for k, v in arrays.items()}

    steps: dict[str, Callable] = {
        "fwd": fwd,
        "theta_grad": theta_grad,
        "full_grad": full_grad,
    }
    return {**steps, "check": check}


def main(argv):
    del argv
    import torch

    unknown = set(FLAGS.variants) - set(VARIANTS)
    if unknown:
        raise app.UsageError(
            f"Unknown --variants {sorted(unknown)}; known: {list(VARIANTS)}"
        )
    torch.set_num_threads(FLAGS.threads or len(os.sched_getaffinity(0)))
    sampler_cases.run_side(
        make_steps,
        framework=(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name()}" if FLAGS.device == "cuda" else "")
        ),
        variants=FLAGS.variants,
        workloads=FLAGS.workloads,
        repeats=FLAGS.repeats,
        warmup=FLAGS.warmup,
        seed=FLAGS.seed,
        out=FLAGS.out,
        dump=FLAGS.dump,
        # With one grid per image both forms are the same call.
        applies=lambda wl, variant: variant == "torch" or wl.grids > 1,
    )


if __name__ == "__main__":
    app.run(main)
