"""The distribution as users install it: one import name, every subpackage and data
file in the wheel, commands with versions, and ``import stn_tf`` enough to load any
of our ``.keras`` files in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python
from test_models import CONTRACT, _inputs

REPO = Path(__file__).resolve().parents[1]
# Repository folder -> the name it installs as.
INSTALLED_AS = {
    "stn_tf": "stn_tf",
    "pipelines": "stn_tf.pipelines",
    "export": "stn_tf.export",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from this checkout as ``pip install <clone>`` builds one, and
    what the build printed."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            out,
            REPO,
        ],
        capture_output=True,
        text=True,
        cwd=out,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = out.glob("stn_tf-*.whl")
    return zipfile.ZipFile(path), build.stdout + build.stderr


def test_the_wheel_installs_one_import_name(wheel):
    archive, _ = wheel
    tops = {name.split("/")[0] for name in archive.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"stn_tf"}
    assert len(tops) == 2


def test_every_package_and_data_file_of_the_clone_is_in_the_wheel(wheel):
    archive, _ = wheel
    names = set(archive.namelist())
    want = set()
    for folder, installed in INSTALLED_AS.items():
        for path in (REPO / folder).rglob("*"):
            data = path.suffix in (".py", ".gz", ".md", ".h5") or path.name in (
                "config.json",  # a preset's (stn_tf/presets/<name>/)
                "metadata.json",
            )
            if data and "__pycache__" not in path.parts:
                inner = path.relative_to(REPO / folder).as_posix()
                want.add(f"{installed.replace('.', '/')}/{inner}")
    assert "stn_tf/training/loop.py" in want  # the subpackage once left out
    assert "stn_tf/pipelines/data/mnist/train-images-idx3-ubyte.gz" in want
    assert want <= names, sorted(want - names)


def test_the_build_warns_of_nothing_about_packages_or_data(wheel):
    _, log = wheel
    for warning in ("would be ignored", "Deprecat", "is absent from the `packages`"):
        assert warning not in log, log


def test_metadata_commands_and_license(wheel):
    archive, _ = wheel
    info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = archive.read(info).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert any(n.endswith("licenses/LICENSE") for n in archive.namelist())
    entry = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
    scripts = archive.read(entry).decode()
    for line in (
        "stn-train = stn_tf.cli:train",
        "stn-evaluate = stn_tf.cli:evaluate",
        "stn-demo = stn_tf.cli:demo",
        "stn-export = stn_tf.cli:export",
        "stn-tflite = stn_tf.cli:tflite",
        "stn-preview = stn_tf.cli:preview",
    ):
        assert line in scripts


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.mark.slow
def test_every_command_prints_its_version(tmp_path):
    import stn_tf

    for module in (
        "stn_tf.train",
        "stn_tf.evaluate",
        "stn_tf.demo",
        "stn_tf.export.saved_model",
        "stn_tf.export.tflite",
        "stn_tf.pipelines.preview",
    ):
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"stn_tf {stn_tf.__version__}"


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 kernels"
)
def test_stn_tf_imported_first_turns_on_the_onednn_kernels_unless_the_user_chose(
    tmp_path,
):
    """TensorFlow leaves its oneDNN CPU kernels off on AVX2 CPUs (1.7-2.5x slower
    training steps there); ``import stn_tf`` asks for them, and a user's explicit
    ``TF_ENABLE_ONEDNN_OPTS`` wins."""
    code = (
        "import os, stn_tf\n"
        "from tensorflow.python.util import _pywrap_util_port as port\n"
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for chosen, expected in ((None, "1 True"), ("0", "0 False"), ("1", "1 True")):
        run_env = {**env, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if chosen is not None:
            run_env["TF_ENABLE_ONEDNN_OPTS"] = chosen
        done = run_python(code, cwd=tmp_path, env=run_env)
        assert done.stdout.split()[-2:] == expected.split(), (chosen, done.stdout)


def test_the_version_comes_from_the_package_metadata():
    from importlib import metadata

    import stn_tf

    assert stn_tf.__version__ == metadata.version("stn_tf")


@pytest.mark.slow
def test_import_stn_tf_alone_loads_a_saved_model_of_every_class(tmp_path):
    saved = {}
    for name, (cls, args, kwargs, _) in CONTRACT.items():
        model = cls(*args, **kwargs)
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", np.asarray(model(_inputs(args))))
        saved[name] = [cls.__name__, list(args[0])]
    (tmp_path / "saved.json").write_text(json.dumps(saved))
    # A fresh process that imports keras, numpy and stn_tf, nothing else of ours.
    code = """
import json, sys
import keras, numpy as np
import stn_tf

saved = json.load(open("saved.json"))
for name, (cls, shape) in saved.items():
    model = keras.saving.load_model(f"{name}.keras")
    assert type(model).__name__ == cls, (name, type(model))
    x = np.random.default_rng(0).uniform(size=(2, *shape)).astype("f4")
    np.testing.assert_allclose(model(x), np.load(f"{name}.npy"), atol=1e-6)
mods = sorted(m for m in sys.modules if m.startswith("stn_tf."))
assert "stn_tf.models" in mods
print("loaded", len(saved))
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"loaded {len(CONTRACT)}"
