#!/usr/bin/env bash
# The STN paper's full recipe on an accelerator: CNN and ST-CNN (affine) on RTS,
# 150k steps at batch 256 (plain SGD, rate 0.01 divided by 10 at 50k and 100k),
# distortions on the device, sized to fit a time window.
#
#   tools/gpu_reproduce.sh OUT [WINDOW_S]        # WINDOW_S: default 600 (10 minutes)
#
# 1. Installs the project with its GPU extra into $VENV (default .venv-gpu) unless
#    that environment already imports stn_tf.
# 2. Calibrates: CALIBRATION_STEPS steps of each model; the step rate is the mean
#    of the last half of its metrics.csv rows (past compilation and warm-up).
# 3. Plans: the models whose STEPS (default 150,000) fit in what is left of the
#    window (45 s per run for start, compilation and evaluations), ST-CNN first;
#    if neither fits, the ST-CNN alone with the steps that fit (then it is not the
#    paper's budget, and plan.json says so).
# 4. Trains them with --eval_every (a test-error curve toward the paper's budget)
#    and writes OUT/summary.json, each run's results.json and eval.csv, and the log.
#
# Environment: STEPS, CALIBRATION_STEPS (200), EVALS (test-set evaluations along
# each run, 10), MNIST_DIR (the 60k official MNIST in
# IDX files; default ../shared/data/mnist-full when there, else TFDS's download),
# VENV, EXTRA (pip extras, default gpu,tools; cpu,tools to check it on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: tools/gpu_reproduce.sh OUT [WINDOW_S]}
WINDOW=${2:-600}
STEPS=${STEPS:-150000}
CALIBRATION_STEPS=${CALIBRATION_STEPS:-200}
EVALS=${EVALS:-10}
VENV=${VENV:-.venv-gpu}
EXTRA=${EXTRA:-gpu,tools}
if [ -z "${MNIST_DIR:-}" ] && [ -d ../shared/data/mnist-full ]; then
  MNIST_DIR=../shared/data/mnist-full
fi
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
START=$(date +%s)
echo "gpu_reproduce: window ${WINDOW}s, ${STEPS} steps per model, out ${OUT}, $(date -u)"

source tools/lib.sh
ensure_venv "$VENV" "$EXTRA" stn_tf
PY="$VENV/bin/python"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
"$PY" -c "import tensorflow as tf; print('TensorFlow', tf.__version__, 'devices:', [d.name for d in tf.config.list_physical_devices()])"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none (a CPU check)"

COMMON=(--dataset=mnist_rts --batch_size=256 --augment_on=device --picture_every=1000000000)
if [ -n "${MNIST_DIR:-}" ]; then COMMON+=(--mnist_dir="$MNIST_DIR"); fi

train() {  # model steps workdir [flags...]
  local model=$1 steps=$2 workdir=$3
  shift 3
  "$PY" -m stn_tf.train "${COMMON[@]}" --model="$model" --transform=affine \
    --steps="$steps" --workdir="$workdir" "$@"
}

for model in st_cnn cnn; do
  echo "== calibrating $model: $CALIBRATION_STEPS steps"
  train "$model" "$CALIBRATION_STEPS" "$OUT/calibrate_$model" \
    --log_every=$((CALIBRATION_STEPS / 4 > 0 ? CALIBRATION_STEPS / 4 : 1)) \
    --checkpoint_every=1000000000
done

"$PY" - "$OUT" "$WINDOW" "$START" "$STEPS" <<'EOF'
import csv, json, sys, time
from pathlib import Path
out, window, start, steps = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rate = {}
for model in ("st_cnn", "cnn"):
    rows = list(csv.DictReader((out / f"calibrate_{model}" / "metrics.csv").open()))
    # The last half of the logged rows: past compilation and warm-up.
    tail = rows[len(rows) // 2:] or rows
    per_s = sum(float(r["examples_per_s"]) for r in tail) / len(tail)
    rate[model] = per_s / 256  # steps per second
left = window - (time.time() - start)
OVERHEAD_S = 45  # per run: start, compilation, 11 evaluations on 10k test digits
plan, used = [], 0.0
for model in ("st_cnn", "cnn"):
    need = steps / rate[model] + OVERHEAD_S
    if used + need <= left:
        plan.append({"model": model, "steps": steps})
        used += need
if not plan:
    fit = int((left - OVERHEAD_S) * rate["st_cnn"]) // 100 * 100
    plan = [{"model": "st_cnn", "steps": max(fit, 100)}]
summary = {
    "steps_per_s": rate,
    "window_s": window,
    "left_after_calibration_s": left,
    "plan": plan,
    "paper_budget": all(p["steps"] == steps for p in plan) and steps == 150_000,
}
(out / "plan.json").write_text(json.dumps(summary, indent=2) + "\n")
print("plan:", json.dumps(summary))
with (out / "plan.txt").open("w") as f:
    for p in plan:
        f.write(f"{p['model']} {p['steps']}\n")
EOF

while read -r model steps; do
  echo "== training $model for $steps steps"
  train "$model" "$steps" "$OUT/run_$model" \
    --eval_every=$((steps / EVALS > 0 ? steps / EVALS : 1)) \
    --log_every=$((steps / 20 > 0 ? steps / 20 : 1)) \
    --checkpoint_every=$((steps / 5 > 0 ? steps / 5 : 1))
done < "$OUT/plan.txt"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = json.loads((out / "plan.json").read_text())
summary["runs"] = {}
for run in sorted(out.glob("run_*")):
    results = json.loads((run / "results.json").read_text())
    summary["runs"][run.name[4:]] = {
        k: results.get(k)
        for k in ("test_error", "steps", "parameters", "train_wall_time_s",
                  "train_examples_per_s", "curve", "digits")
    }
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
for model, r in summary["runs"].items():
    print(f"{model}: {100 * r['test_error']:.2f} % test error after {r['steps']:,} steps "
          f"({r['train_wall_time_s'] / 60:.1f} min, {r['train_examples_per_s']:,.0f} ex/s)")
EOF
echo "gpu_reproduce: done in $(( $(date +%s) - START )) s; ${OUT}/summary.json"
