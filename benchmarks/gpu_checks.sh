#!/usr/bin/env bash
# Every GPU check and timing of recsim-ft in one run, for a machine with a CUDA GPU, torch and
# triton (GPU time is scarce: one prepared run, not a session of small ones):
#
#     bash benchmarks/gpu_checks.sh [OUT_DIR]        # default results/gpu; PYTHON=python3
#
# 1. correctness: the Triton kernels against the float64 reference, compiled for this GPU; the
#    CUDA-graph trainer's reproducibility and resume (pytest);
# 2. figures: benchmarks/train_step.py (batch 32 and 2048, CUDA graphs; and eager at batch 32)
#    and benchmarks/feature_scaling.py on the GPU;
# 3. the paper protocol (160,000 logged events, 5,000 steps) on Spotify for both embedders,
#    FT-Mamba twice (bit-identical results expected), with its fit time and metrics;
# 4. feature scaling, eager steps, and the Triton tile settings (benchmarks/triton_tiles.py).
# OUT_DIR gets the log and one JSON file per benchmark; run directories go to a temporary folder.
set -u
cd "$(dirname "$0")/.."
out=${1:-results/gpu}
py=${PYTHON:-python3}
runs=$(mktemp -d)
mkdir -p "$out"
log="$out/gpu_checks.log"
: >"$log"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, and record its status and time
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$log" 2>&1
  local status=$?
  echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$log"
  tail -n 3 "$log" | grep -v "^== " | sed 's/^/   /'
}

last_json() {  # the last JSON line that step NAME printed, into OUT_DIR/NAME.json
  awk -v header="== $1: " 'index($0, header) == 1 {inside = !inside; next} inside && /^\{/ {line = $0}
    END {if (line) print line}' "$log" >"$out/$1.json"
}

export PYTHONUNBUFFERED=1
step info 20 "$py" -m recsim_ft info
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv >>"$log" 2>&1

step tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_train.py tests/test_models.py \
  -k "(triton or cuda or kernel) and not compile"  # CI compiles for sm_90 already

step train_step 120 "$py" benchmarks/train_step.py --device cuda --batch-sizes 32 2048 --steps 10 --block 10 \
  --candidates transformer mamba --profile 2
last_json train_step

for run in ${TRAIN_RUNS:-mamba transformer mamba_again}; do
  step "train_$run" 45 "$py" -m recsim_ft train --env Spotify-v0 --embedder "${run%_again}" --seed 0 \
    --device cuda --quiet --out "$runs/$run"
done
"$py" - "$runs" >"$out/train_runs.json" 2>>"$log" <<'EOF'
import hashlib, json, pathlib, sys
from safetensors.numpy import load_file
runs = pathlib.Path(sys.argv[1])
report = {}
for run in sorted(runs.iterdir()):
    if not (run / "metrics.json").exists():
        report[run.name] = "did not finish"
        continue
    metrics = json.loads((run / "metrics.json").read_text())
    weights = load_file(run / "model.safetensors")  # the tensors: the header's key order varies
    digest = hashlib.sha256(b"".join(weights[k].tobytes() for k in sorted(weights))).hexdigest()[:16]
    report[run.name] = {**metrics, "weights_sha256": digest}
if all(isinstance(report.get(k), dict) for k in ("mamba", "mamba_again")):
    a, b = report["mamba"], report["mamba_again"]
    report["mamba_bit_identical"] = a["weights_sha256"] == b["weights_sha256"] and a["metrics"] == b["metrics"]
print(json.dumps(report))
EOF
cat "$out/train_runs.json" | tee -a "$log"
rm -rf "$runs"

step feature_scaling 60 "$py" benchmarks/feature_scaling.py --device cuda --tokens ${TOKENS:-1024 4096 16384} --steps 3
last_json feature_scaling
step train_step_eager 40 "$py" benchmarks/train_step.py --device cuda --batch-sizes 32 --steps 5 --block 10 \
  --no-cuda-graph --candidates transformer mamba
last_json train_step_eager
step triton_tiles 80 "$py" benchmarks/triton_tiles.py
last_json triton_tiles
