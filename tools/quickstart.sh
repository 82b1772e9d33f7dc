#!/usr/bin/env bash
# The README's main job, end to end on a fresh clone: set up .venv, train an ST-CNN
# on rotated, translated and scaled MNIST, evaluate it, export it for TF Serving
# and as a TFLite model, and say where everything is. Rerunning it resumes the run
# (already finished: just evaluates) and exports a new SavedModel version.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
RUN=${RUN:-runs/quickstart}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[cpu]"
# TF Serving's request protos; --no-deps keeps a second TensorFlow out.
"$VENV/bin/python" -m pip install --quiet --no-deps "tensorflow-serving-api>=2.21,<3"

"$VENV/bin/python" -m stn_tf.train --dataset=mnist_rts --model=st_cnn \
  --steps=1500 --batch_size=128 --learning_rate=0.02 --momentum=0.9 --workdir="$RUN"
"$VENV/bin/python" -m stn_tf.export.saved_model --workdir="$RUN" --out="$RUN/export/stn"
"$VENV/bin/python" -m stn_tf.export.tflite --saved_model="$RUN/export/stn" \
  --out="$RUN/export/stn.tflite"
