"""tools/config_trip.py: where a training run's config goes."""

from absl import flags
from absl.testing import flagsaver

from tools import config_trip


def _counts(section: str) -> dict[str, int]:
    """``{name: count}`` of a section's indented ``count  name`` lines."""
    rows = [line.split() for line in section.splitlines()[1:] if line.startswith(" ")]
    return {name: int(n) for n, name in rows}


def test_it_counts_the_modules_the_config_enters_and_the_dataset_lookups(capsys):
    with flagsaver.flagsaver():
        flags.FLAGS(["config_trip", "--steps=1"])
        config_trip.main([])
    out = capsys.readouterr().out
    calls, lookups = out[out.index("calls that received") :].split("dataset spec")
    entered, looked_up = _counts(calls), _counts("dataset spec" + lookups)
    # The loop and its step take the config; runs resolves it (its checks, the
    # width, the one Run); the dataset's spec is read by that Run and by the
    # checks of the config with its width.
    assert entered["stn_tf.training.loop"] >= 1 and entered["stn_tf.runs"] >= 3
    assert looked_up["stn_tf.runs.dataset_spec"] == 2
    assert f"dataset spec lookups: {sum(looked_up.values())}" in out
