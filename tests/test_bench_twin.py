"""tools/bench_twin.py: the report of the rounds, and (where the benchmark
environment with PyTorch exists) a twin with exactly our parameter counts."""

import subprocess
from pathlib import Path

import pytest

import stn_tf.train  # noqa: F401  the training flags first: the tools share names
from tools import bench_twin

REPO = Path(__file__).resolve().parents[1]
TORCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"


def _side(framework, rates, params=399_426):
    return {
        "framework": framework,
        "cases": {"st_cnn@128": {"params": params, "rates": rates, "warm_s": 1.0}},
    }


def test_the_table_gives_medians_of_rounds_and_per_round_ratios():
    rounds = [
        {"tf": _side("tf", [900, 1000, 1100]), "torch": _side("torch", [400, 500])},
        {"torch": _side("torch", [800]), "tf": _side("tf", [1200])},
        {"tf": _side("tf", [600]), "torch": _side("torch", [600])},
    ]
    # Rounds: ours 1000, 1200, 600 (median 1000); twin 450, 800, 600 (600).
    # Ratios 2.22, 1.50, 1.00 (median 1.50).
    row = bench_twin.table(rounds).splitlines()[2]
    assert row == (
        "| ST-CNN Aff | 128 | 399,426 | 1,000 (600–1,200) | 600 (450–800) "
        "| 399,426 | 1.50x (1.00x–2.22x) |"
    )


@pytest.mark.slow
@pytest.mark.skipif(not TORCH_PYTHON.exists(), reason="no .venv-bench with PyTorch")
def test_the_pytorch_twin_has_our_parameter_counts():
    from stn_tf import runs

    code = (
        "from tools.bench_twin_torch import build; "
        "print(*(sum(p.numel() for p in build(m).parameters()) "
        "for m in ('cnn', 'st_cnn')))"
    )
    done = subprocess.run(
        [str(TORCH_PYTHON), "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    twin = [int(n) for n in done.stdout.split()]
    ours = [
        runs.build_model(runs.TrainConfig(dataset="mnist_rts", model=m)).count_params()
        for m in ("cnn", "st_cnn")
    ]
    assert twin == ours
