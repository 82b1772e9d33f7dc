#!/usr/bin/env bash
# What a user who installs the wheel gets, checked from outside the clone:
#   bash tools/wheel_check.sh VENV WHEEL
# VENV has the wheel installed (not -e). From a fresh temporary folder: only
# `stn_tf` imports (`export` and `pipelines` must not), every command prints its
# version, a few training steps on the embedded MNIST sample, the SavedModel
# export, the TFLite conversion and one LiteRT call on a real test digit, and the
# run saved as a preset that the evaluate and demo commands read.
set -euo pipefail
VENV=$(cd "$1" && pwd)
WHEEL=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
BIN="$VENV/bin"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

echo "== the wheel's top-level names"
"$BIN/python" - "$WHEEL" <<'PY'
import sys, zipfile
names = {n.split("/")[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()}
print(sorted(names))
assert (
    len(names) == 2 and "stn_tf" in names
    and all(n == "stn_tf" or n.startswith("stn_tf-") for n in names)
), names
PY

echo "== imports from $WORK"
for name in export pipelines tools; do
  if "$BIN/python" -c "import $name" 2>/dev/null; then
    echo "error: 'import $name' works: the wheel must install only stn_tf" >&2
    exit 1
  fi
done
"$BIN/python" -c "import stn_tf, stn_tf.pipelines, stn_tf.export; print('stn_tf', stn_tf.__version__, 'from', stn_tf.__file__)"
for cmd in stn-train stn-evaluate stn-demo stn-export stn-tflite stn-preview; do
  "$BIN/$cmd" --version
done

echo "== train, export, convert, run"
"$BIN/stn-train" --dataset=mnist_rts --model=st_cnn --steps=4 --batch_size=8 \
  --mnist_source=embedded --log_every=2 --checkpoint_every=2 --workdir=run
"$BIN/python" -m stn_tf.export.saved_model --workdir=run --out=models/stn
"$BIN/stn-tflite" --saved_model=models/stn --out=stn.tflite
"$BIN/stn-preview" --dataset=mnist_rts --mnist_source=embedded --num=4 --out=preview.png
# The run as a preset of the user's own, evaluated and drawn by the commands.
"$BIN/python" -c "from stn_tf import runs; runs.preset_from_run('run', 'my_preset')"
"$BIN/stn-evaluate" --preset=my_preset --mnist_source=embedded
"$BIN/stn-demo" --preset=my_preset --mnist_source=embedded --num=4 --out=demo.png
# The presets that ship in the wheel: every one loads offline, by name, without
# custom_objects; the first is evaluated, drawn and exported by the commands.
PRESET=$("$BIN/python" - <<'PY'
from stn_tf.models import from_preset, list_presets
names = list_presets()
assert names, "the wheel ships no preset"
for name in names:
    from_preset(name)
print(names[0])
PY
)
"$BIN/stn-evaluate" --preset="$PRESET" --mnist_source=embedded
"$BIN/stn-demo" --preset="$PRESET" --mnist_source=embedded --num=4 --out=preset.png
"$BIN/stn-export" --preset="$PRESET" --out=models/preset
"$BIN/stn-tflite" --saved_model=models/preset --out=preset.tflite
"$BIN/python" - <<'PY'
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from stn_tf.pipelines import datasets, mnist

digits = mnist.load_mnist("test", source="embedded")
batch = next(iter(datasets.Pipeline("mnist_rts", digits, batch_size=1, training=False).dataset()))
runner = Interpreter(model_path="stn.tflite").get_signature_runner("serving_default")
outs = runner(images=np.asarray(batch["image"], np.float32))
probs = outs["probabilities"]
assert probs.shape == (1, 10) and abs(float(probs.sum()) - 1) < 1e-4, outs
print("LiteRT: class", int(probs.argmax()), "for label", int(batch["label"][0]))
PY
echo "wheel check passed"
