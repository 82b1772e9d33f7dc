"""Trained weights that ship with the package, in keras-hub's preset layout.

    from stn_tf.models import STCNN, list_presets
    list_presets()                                    # the bundled names
    model = STCNN.from_preset("mnist_rts_st_cnn_affine")
    model.save_to_preset("my_preset")                 # and from_preset("my_preset")

A preset is a directory holding

- ``config.json``: the model as ``keras.saving.serialize_keras_object`` writes it
  (``module``, ``class_name``, ``config``, ``registered_name``), the file keras-hub
  reads;
- ``model.weights.h5``: its weights (``Model.save_weights``), float32 or float16;
  float16 weights load into float32 variables;
- ``metadata.json``: what the weights are. Ours hold the training run's config
  (``train_config``), its dataset's revision, the steps, the test error and the
  paper's, and the record the run came from (its file and its weights' SHA-256):
  ``tools/make_presets.py`` writes them.

Bundled presets live in ``stn_tf/presets/<name>/`` and load offline.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np

__all__ = [
    "PRESETS",
    "from_preset",
    "list_presets",
    "preset_dir",
    "read_metadata",
    "save_to_preset",
]

PRESETS = Path(__file__).resolve().parents[1] / "presets"
FILES = ("config.json", "model.weights.h5", "metadata.json")


def list_presets() -> list[str]:
    """The names of the presets bundled with the package, sorted."""
    if not PRESETS.is_dir():
        return []
    return sorted(p.name for p in PRESETS.iterdir() if (p / "config.json").is_file())


def preset_dir(preset: str | Path) -> Path:
    """A bundled preset's directory, or ``preset`` itself where it is a preset
    directory; anything else is refused with the names there are."""
    if str(preset) in list_presets():
        return PRESETS / str(preset)
    path = Path(preset)
    if path.is_dir():
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a preset directory: it lacks {', '.join(missing)} "
                f"(a preset holds {', '.join(FILES)})"
            )
        return path
    raise ValueError(
        f"Unknown preset {str(preset)!r}. Expected one of "
        f"{', '.join(list_presets()) or '(none bundled)'}, or a directory written "
        "by save_to_preset."
    )


def read_metadata(preset: str | Path) -> dict:
    """A preset's ``metadata.json``."""
    return json.loads((preset_dir(preset) / "metadata.json").read_text())


def from_preset(preset: str | Path, cls=None, **overrides) -> keras.Model:
    """The model of a preset (a bundled name or a directory), with its weights.

    ``cls``: the class the preset must hold (a subclass of it), as
    ``STCNN.from_preset`` asks. ``overrides``: constructor arguments that change
    no weight, such as ``outputs="all"`` or ``name``.
    """
    path = preset_dir(preset)
    serialized = json.loads((path / "config.json").read_text())
    if overrides:
        serialized = {
            **serialized,
            "config": {**serialized["config"], **overrides},
        }
    model = keras.saving.deserialize_keras_object(serialized)
    if cls is not None and not isinstance(model, cls):
        raise TypeError(
            f"Preset {str(preset)!r} holds a {type(model).__name__} "
            f"({serialized.get('registered_name')}), not a {cls.__name__}: load it "
            f"with stn_tf.models.from_preset({str(preset)!r}) or "
            f"{type(model).__name__}.from_preset"
        )
    model.load_weights(path / "model.weights.h5")
    return model


def save_to_preset(
    model: keras.Model,
    directory: str | Path,
    metadata: dict | None = None,
    weights_dtype: str = "float32",
) -> Path:
    """Writes ``model`` as a preset in ``directory`` (created; its three files
    replaced). ``metadata``: what to say about the weights, beside the Keras
    version and the parameter count. ``weights_dtype``: ``float32``, or
    ``float16`` to halve the file (the variables load back as float32)."""
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(
            "weights_dtype must be 'float32' or 'float16'. "
            f"Received: weights_dtype={weights_dtype!r}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)  # weights, not a training setup
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    weights = directory / "model.weights.h5"
    if weights_dtype == "float32":
        model.save_weights(weights)
    else:
        too_large = [
            w.path
            for w in model.weights
            if np.max(np.abs(w.numpy()), initial=0.0) > np.finfo(np.float16).max
        ]
        if too_large:
            raise ValueError(
                "weights_dtype='float16' would turn weights beyond 65504 into inf: "
                f"{', '.join(too_large)}; save them as float32"
            )
        with tempfile.TemporaryDirectory() as tmp:
            full = Path(tmp) / "model.weights.h5"
            model.save_weights(full)
            _copy_h5(full, weights, np.float16)
    facts = {
        "keras_version": keras.__version__,
        "parameter_count": int(model.count_params()),
        "weights_dtype": weights_dtype,
        **(metadata or {}),
    }
    (directory / "metadata.json").write_text(json.dumps(facts, indent=2) + "\n")
    return directory


def _copy_h5(source: Path, target: Path, dtype) -> None:
    """An HDF5 file's groups, attributes and datasets, float32 ones cast to
    ``dtype`` (and compressed)."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                group = dst.require_group(name)
                group.attrs.update(obj.attrs)
                return
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype == np.float32:
                data = data.astype(dtype)
            kwargs = {"compression": "gzip"} if np.ndim(data) else {}
            dst.create_dataset(name, data=data, **kwargs).attrs.update(obj.attrs)

        dst.attrs.update(src.attrs)
        src.visititems(copy)
