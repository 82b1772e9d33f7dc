"""tools/bench_sampler.py: the variants agree, a wrong one is caught, and the report
takes medians of the rounds and PyTorch's faster form, as written by hand here."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stn_tf.train  # noqa: F401  the training flags first: the tools share --seed
from tools import bench_sampler, sampler_cases

TINY = sampler_cases.Workload("T", "tiny", 2, (9, 11), 2, (5, 7), grids=2)
REPO = Path(__file__).resolve().parents[1]


def _checks(variants):
    inputs = sampler_cases.make_inputs(TINY, seed=0)
    return {
        v: bench_sampler.make_functions(TINY, v, inputs)["check"]() for v in variants
    }


def test_every_tensorflow_variant_agrees_with_the_autodiff_sampler():
    variants = ["autodiff", "ours_xla", "ours_xla_per_grid", "ours_xla_unfused", "ours"]
    results = _checks(variants)
    line = bench_sampler.check_agreement(TINY, results)
    assert line.startswith(f"T: {', '.join(variants)} agree")


def test_the_separable_idea_samples_attention_windows_as_float64_does():
    """The measured separable form against the package's sampler in float64:
    the values, and θ's gradient on the entries an attention window has."""
    import tensorflow as tf

    from stn_tf import sampler

    wl = dataclasses.replace(sampler_cases.WORKLOADS["A1"], batch=6, grids=2)
    images, theta, upstream = sampler_cases.make_inputs(wl, seed=0)
    assert np.all(theta[:, [1, 3]] == 0) and np.all(theta[:, 0] == theta[:, 4])
    matrix = theta.reshape(6, 2, 2, 3)
    upstream = upstream.reshape(6, 2, *wl.out_hw, 1)

    def run(fn, dtype):
        m = tf.constant(matrix, dtype)
        with tf.GradientTape() as tape:
            tape.watch(m)
            out = fn(tf.constant(images, dtype), m)
            loss = tf.reduce_sum(tf.cast(out, tf.float64) * upstream)
        return out.numpy(), tape.gradient(loss, m).numpy()

    got, got_grad = run(
        lambda i, m: bench_sampler.separable_attention_sample(i, m, wl.out_hw),
        tf.float32,
    )
    want, want_grad = run(
        lambda i, m: sampler.sample_affine(i, m, wl.out_hw), tf.float64
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    used = want_grad.reshape(-1, 6)[:, [0, 2, 4, 5]]
    np.testing.assert_allclose(
        got_grad.reshape(-1, 6)[:, [0, 2, 4, 5]], used, rtol=1e-4, atol=1e-3
    )


@pytest.mark.parametrize("key", ["out", "grad_images", "grad_theta"])
def test_a_variant_that_is_off_is_not_timed(key):
    results = _checks(["autodiff", "ours_xla"])
    wrong = dict(results["ours_xla"])
    wrong[key] = wrong[key].copy()
    wrong[key].flat[3] += 0.01 + 0.01 * np.abs(wrong[key]).max()
    with pytest.raises(SystemExit, match=f"ours_xla disagrees with autodiff on {key}"):
        bench_sampler.check_agreement(TINY, {**results, "ours_xla": wrong})


def test_the_timed_steps_return_what_the_check_computes():
    inputs = sampler_cases.make_inputs(TINY, seed=0)
    steps = bench_sampler.make_functions(TINY, "ours_xla", inputs)
    full = steps["check"]()
    loss, grad_images_sum, grad_theta_sum = steps["full_grad"]()
    assert np.isclose(loss, np.sum(full["out"] * inputs[2]), rtol=1e-5)
    assert np.isclose(grad_images_sum, full["grad_images"].sum(), rtol=1e-4)
    assert np.isclose(grad_theta_sum, full["grad_theta"].sum(), rtol=1e-4)
    _, theta_only = steps["theta_grad"]()
    assert np.isclose(theta_only, full["grad_theta"].sum(), rtol=1e-4)


def test_the_report_takes_medians_of_rounds_and_the_faster_pytorch_form():
    def side(framework, times):
        return {"framework": framework, "times": {"W4": times}}

    def cases(fwd, theta, full):  # each a round's calls, in ms
        return {"fwd": fwd, "theta_grad": theta, "full_grad": full}

    rounds = [
        {
            "tf": side("tf", {"ours_xla": cases([2, 4, 3], [5], [8])}),
            "torch": side(
                "torch",
                {
                    "torch": cases([1, 1, 9], [4], [10]),
                    "torch_expand": cases([2], [6], [4]),
                },
            ),
        },
        {
            "tf": side("tf", {"ours_xla": cases([5], [7], [6])}),
            "torch": side(
                "torch",
                {"torch": cases([3], [8], [12]), "torch_expand": cases([2], [3], [6])},
            ),
        },
    ]
    medians = bench_sampler.aggregate(rounds)
    assert medians["W4"]["ours_xla"] == cases([3, 5], [5, 7], [8, 6])
    # fwd: torch's rounds 1 and 3 (median 2), expand's 2 and 2: a tie, the first.
    # θ: torch 4 and 8 (6), expand 6 and 3 (4.5). Both: torch 11, expand 5.
    assert bench_sampler.best_torch(medians, "W4", "fwd") == "torch"
    assert bench_sampler.best_torch(medians, "W4", "theta_grad") == "torch_expand"
    assert bench_sampler.best_torch(medians, "W4", "full_grad") == "torch_expand"
    wl = dataclasses.replace(sampler_cases.WORKLOADS["W4"])
    table = bench_sampler.ratio_table(medians, [wl], bandwidth=1e12)
    rows = table.splitlines()[2:]
    # Forward: ours 4 (3-5) against torch 2 (1-3); per-round ratios 3 and 5/3.
    assert rows[0].startswith(
        "| W4 | forward | 4.00 (3.00–5.00) | 2.00 (1.00–3.00) (`torch`) "
        "| 2.33x (1.67x–3.00x) |"
    )
    # θ: 6 (5-7) against expand's 4.5 (3-6): ratios 5/6 and 7/3.
    assert "| 6.00 (5.00–7.00) | 4.50 (3.00–6.00) (`torch_expand`) | 1.58x" in rows[1]
    # Both gradients: 7 (6-8) against expand's 5 (4-6): ratios 2 and 1.
    assert "| 7.00 (6.00–8.00) | 5.00 (4.00–6.00) (`torch_expand`) | 1.50x" in rows[2]


@pytest.mark.slow
def test_the_rounds_run_each_side_in_its_own_process(tmp_path):
    out = tmp_path / "bench.md"
    variants = "ours_xla,autodiff"
    torch_python = REPO / ".venv-bench" / "bin" / "python"
    if torch_python.exists():  # the benchmark environment, where it was set up
        variants += ",torch"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.bench_sampler",
            "--workloads=W2",
            f"--variants={variants}",
            "--rounds=2",
            "--repeats=1",
            "--warmup=1",
            f"--baseline={REPO}",  # this tree against itself: before and after
            f"--out={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "W2: autodiff, ours_xla" in text and "agree with autodiff" in text
    if torch_python.exists():  # PyTorch's grid_sample computed the same, checked
        assert "torch" in text.split("agree with autodiff")[0].splitlines()[-1]
    assert "ours_xla@baseline" in text.split("agree with")[0]  # checked too
    assert "| W2 | image and θ gradients |" in text
    assert "(`ours_xla@baseline`) |" in text and "--rounds=2" in text
