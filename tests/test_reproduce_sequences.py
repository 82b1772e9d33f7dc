"""tools/reproduce_sequences.py, the paper's protocol: settings chosen on the
validation set, the seeds run at the chosen settings, the verdicts from the seeds
(training replaced by a fake that gives known errors)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from tools import reproduce_sequences, reprolib

# The fake runs' errors: validation of the grid runs; test of the seeds' runs.
GRID = {("rnn_spn", 1.0): 0.05, ("rnn_spn", 2.0): 0.03, ("ffn_spn", 1.0): 0.04}
GRID[("ffn_spn", 2.0)] = 0.06
SEEDS = {
    "rnn_spn": [0.020, 0.022],
    "ffn_spn": [0.030, 0.031],
    "conv_net": [0.025, 0.028],
}


def test_the_protocol_runs_each_models_seeds_at_its_setting_chosen_on_validation(
    tmp_path, monkeypatch
):
    trained = []

    def train(config, workdir):
        workdir = Path(workdir)
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
        trained.append(config)
        d = None if config.model == "conv_net" else config.downsample
        if workdir.name.endswith("_select"):
            test = validation = GRID[(config.model, d)]
        else:
            test = SEEDS[config.model][config.seed]
            validation = test + 0.001
        curve = [
            {"step": s, "validation_error": validation + 0.01 * (s == 4)}
            for s in (2, 4)
        ]
        return {
            "test_error": test + 0.002,  # the last step's
            "test_sequence_error": 3 * test,
            "validation_error": curve[-1]["validation_error"],
            "early_stopping": {
                "step": 2,
                "validation_error": validation,
                "test_error": test,
                "test_sequence_error": 3 * test,
            },
            "curve": curve,
            "parameters": 1000,
            "train_wall_time_s": 60.0,
            "digits": {"train": "tr", "validation": "va", "test": "te"},
        }

    monkeypatch.setattr(reprolib, "train_and_evaluate", train)
    argv = [
        "reproduce_sequences",
        "--validation_digits=200",
        "--train_examples=300",
        "--downsamples=1,2",
        "--ffn_downsamples=1,2",
        "--dropouts=0.25",
        "--select_steps=4",
        "--seeds=0,1",
        "--steps=4",
        "--eval_every=2",
        "--batch_size=4",
        "--mnist_dir=",
        f"--root={tmp_path / 'runs' / 'sequences_protocol'}",
        f"--records={tmp_path / 'records'}",
        f"--out={tmp_path / 'r.md'}",
        f"--figure={tmp_path / 'curves.png'}",
        "--section=sequences_protocol",
    ]
    with flagsaver.flagsaver():
        flags.FLAGS(argv)
        reproduce_sequences.main([])
    grid = [c for c in trained if c.steps == 4 and c.seed == 0][:4]
    assert [(c.model, c.downsample) for c in grid] == [
        ("rnn_spn", 1.0),
        ("rnn_spn", 2.0),
        ("ffn_spn", 1.0),
        ("ffn_spn", 2.0),
    ]
    seeds = trained[4:]
    # The conv net has one setting: no grid run. The seeds run at the choice.
    assert [(c.model, c.downsample, c.seed) for c in seeds] == [
        ("rnn_spn", 2.0, 0),
        ("rnn_spn", 2.0, 1),
        ("ffn_spn", 1.0, 0),
        ("ffn_spn", 1.0, 1),
        ("conv_net", 2.0, 0),
        ("conv_net", 2.0, 1),
    ]
    for c in trained:
        assert (c.validation_digits, c.train_examples, c.eval_every) == (200, 300, 2)
        assert (c.dropout, c.dataset) == (0.25, "mnist_sequence")
    text = (tmp_path / "r.md").read_text()
    assert "| RNN-SPN **(chosen)** | 2 | 0.25 | 3.00 (step 2) | 1,000 | 1.0 |" in text
    assert "| FFN-SPN | 2 | 0.25 | 6.00 (step 2) |" in text
    # Early-stopped test errors, mean ± sd over the 2 seeds; last step's beside.
    assert (
        "| RNN-SPN | 2 | 0.25 | 2 | 2.10 ± 0.14 | 1.5 | 6.30 ± 0.42 | 2, 2 | 2.30 ± 0.14 |"
        in text
    )
    assert "| FFN-SPN | 1 | 0.25 | 2 | 3.05 ± 0.07 | 4.4 |" in text
    assert (
        "RNN-SPN below FFN-SPN (paper: 1.5 < 2.0): yes: 2.10 ± 0.14 vs 3.05 ± 0.07"
        in text
    )
    assert "FFN-SPN below Conv. net (paper: 2.0 < 2.9): **no**" in text
    assert "RNN-SPN below Conv. net (paper: 1.5 < 2.9): yes" in text
    assert "- Validation: va." in text and "(curves.png)" in text
    curves = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB")).astype(int)
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # one per model
        assert np.sum(np.all(np.abs(curves - rgb) < 10, axis=-1)) > 30, rgb
    # A second invocation reads every run back from its record.
    monkeypatch.setattr(reprolib, "train_and_evaluate", None)
    with flagsaver.flagsaver():
        flags.FLAGS(argv)
        reproduce_sequences.main([])
