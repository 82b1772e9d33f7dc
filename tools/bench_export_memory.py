"""A SavedModel's weights on disk and in a serving process's memory, written by this
checkout and by another (``--baseline``): CUB's ``st_inception`` with 4 transformers
at 448 px (111.3 M parameters) by default.

    python -m tools.bench_export_memory --baseline=/path/to/other/checkout

Each side exports the model with its own ``export_model`` (the writer every export
of ours goes through: trained runs, ``export_model``, ``--keras``) in a process of
its own, run from its checkout. Then, for ``--rounds`` rounds, sides alternating,
a fresh process imports TensorFlow, notes its resident memory (VmRSS), loads the
SavedModel with ``tf.saved_model.load`` as TF Serving's Python twin does, and notes
it again. Writes its section of ``docs/export.md``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

from tools import benchlib

FLAGS = flags.FLAGS
flags.DEFINE_string("baseline", None, "Another checkout to compare with (required).")
flags.DEFINE_integer("num_st", 4, "CUB transformers (0, 2 or 4).", lower_bound=0)
flags.DEFINE_integer("image_size", 448, "CUB input side.", lower_bound=64)
flags.DEFINE_integer("rounds", 2, "Load rounds per side.", lower_bound=1)
flags.DEFINE_string("out", "docs/export.md", "Markdown file whose section to write.")

# Run from a checkout (its folder first on sys.path): that checkout's exporter,
# under either import name it has had.
EXPORT = """
import json, sys
size, num_st, out, one_name = sys.argv[1:]
size, num_st = int(size), int(num_st)
if one_name == "1":
    from stn_tf.export.saved_model import export_model
else:  # a checkout before the one-name release: export/ imports as `export`
    from export.saved_model import export_model
from stn_tf.models import STInception

model = STInception((size, size, 3), 200, num_transformers=num_st)
version = export_model(model, out)
module = sys.modules[export_model.__module__]
print(json.dumps({
    "version": str(version),
    "parameters": model.count_params(),
    "module": f"{module.__name__} from {module.__file__}",
}))
"""

LOAD = """
import json, sys

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

import tensorflow as tf
before = rss_mib()
loaded = tf.saved_model.load(sys.argv[1])
after = rss_mib()
print(json.dumps({"before": before, "after": after}))
"""


def _run(code: str, args: list[str], cwd) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"error in {cwd}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored(version: Path) -> dict:
    """What the SavedModel's checkpoint holds: numbers, and bytes on disk."""
    import tensorflow as tf

    entries = tf.train.list_variables(str(version / "variables" / "variables"))
    files = list((version / "variables").iterdir())
    return {
        "values": sum(math.prod(s) for n, s in entries if "OBJECT_GRAPH" not in n),
        "entries": sum("OBJECT_GRAPH" not in n for n, _ in entries),
        "bytes": sum(f.stat().st_size for f in files),
    }


def measure(checkouts: dict[str, Path], folder: Path) -> dict:
    results = {}
    for side, checkout in checkouts.items():
        print(f"{side}: exporting with {checkout}", flush=True)
        one_name = int((checkout / "setup.py").exists())
        made = _run(
            EXPORT,
            [FLAGS.image_size, FLAGS.num_st, folder / side, one_name],
            cwd=checkout,
        )
        print(f"  with {made['module']}", flush=True)
        version = Path(made["version"])
        if not version.is_absolute():
            version = checkout / version
        results[side] = {**made, **stored(version), "loads": [], "path": version}
    for r in range(FLAGS.rounds):
        for side in checkouts if r % 2 == 0 else list(checkouts)[::-1]:
            print(f"round {r + 1}/{FLAGS.rounds}: loading {side}", flush=True)
            load = _run(LOAD, [results[side]["path"]], cwd=folder)
            results[side]["loads"].append(load)
    return results


def report(results: dict) -> str:
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    rows = []
    for side, r in results.items():
        grown = statistics.median(x["after"] - x["before"] for x in r["loads"])
        after = statistics.median(x["after"] for x in r["loads"])
        rows.append(
            f"| {side} | {r['parameters'] / 1e6:.1f} M | {r['values'] / 1e6:.1f} M "
            f"({r['values'] / r['parameters']:.2f}x) | {mib(r['bytes'])} | "
            f"{after:,.0f} MiB | {grown:,.0f} MiB |"
        )
    return f"""## SavedModel weights: on disk and after loading

`st_inception` with {FLAGS.num_st} transformers at {FLAGS.image_size} px, exported by
`export_model` (the writer of every export: trained runs, `export_model`, `--keras`),
by this checkout and by the code before the fix (`--baseline`). The resident memory
(VmRSS) of a fresh process, after `import tensorflow` and after
`tf.saved_model.load`, median of {FLAGS.rounds} rounds, the sides alternating:

| exporter | parameters | values stored | `variables/` on disk | RSS after load | grown by the load |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- Machine: {benchlib.cpu_model()}, {benchlib.cores()} cores; TensorFlow
  {_tf_version()}. Code: {benchlib.code_version("export", "stn_tf")}.
- Rerun: `python -m tools.bench_export_memory --baseline=CHECKOUT` (for example a
  `git worktree` of a commit before the fix).
"""


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def main(argv):
    del argv
    if not FLAGS.baseline:
        raise app.UsageError("--baseline=CHECKOUT is required")
    baseline = Path(FLAGS.baseline).resolve()
    if not (baseline / "stn_tf").is_dir():
        raise app.UsageError(f"--baseline={baseline} is not a stn_tf checkout")
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(
            {"this checkout": benchlib.REPO, "baseline": baseline}, Path(tmp)
        )
        text = report(results)
    for r in results.values():
        r.pop("path")
    print(json.dumps(results, indent=1))
    path = benchlib.write_section(FLAGS.out, "bench_export_memory", text, title="")
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
