#!/usr/bin/env bash
# SteppingNet detector on road_signs at the shipped any-width detector's stage MACs (with and
# without KD) and an any-width nesting of the same network trained by the same code (the fair
# baseline), then mAP@0.5 of all of them and the shipped detector through the runtime
# (docs/results/steppingnet.md, "Detector").
#   experiments/stepping_detector_neck.sh       (runs resume; THREADS=2 to use both cores)
# Training budget as the shipped detector's 70 epochs: 30 epochs of the original network,
# construction 40 x 8 batches (about 9 epochs), 30 epochs of retraining.
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/stepping_detector}
THREADS=${THREADS:-1}
ARCH=${ARCH:-stepping_centernet_neck}
SHIPPED=models/road_signs_anywidth
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
run() { python -m anytime_perception.training.stepping_run "$@" --arch "$ARCH" --data "$DATASETS/road_signs" \
  --threads "$THREADS" --lr 0.02 --resume; }
# the shipped detector's cumulative stage MACs, read from its manifest
targets=$(python - "$SHIPPED" <<'PY'
import sys
from anytime_perception.runtime.manifest import load_manifest
macs = [s.macs for s in load_manifest(sys.argv[1]).stages]
print(" ".join(str(sum(macs[: k + 1])) for k in range(len(macs))))
PY
)
run original --epochs 30 --out "$RUNS/original"
# the best LeNet-5 construction (steppingnet.md): ranked per MAC saved, funnel-free, scoped decay
step=(stepping --teacher "$RUNS/original/last.pt" --target-macs $targets --iterations 40 --batches-per-iteration 8
      --ranking importance_per_mac --funnel-free --scoped-decay --epochs 30
      --scale-at output --prune-rule layer_mean --prune-threshold 0.05 --count-pruned-macs)  # our options (recorded rows)
run "${step[@]}" --out "$RUNS/stepping"
run "${step[@]}" --no-kd --construction "$RUNS/stepping" --out "$RUNS/stepping_no_kd"
# the same, every subnet keeping at least 8 head channels (the 8 output maps; the run above keeps 1)
run "${step[@]}" --full-rank-output --out "$RUNS/stepping_full_rank"
# its retraining with the head's increment channels restarted (the construction parks them where the loss has no gradient)
run "${step[@]}" --full-rank-output --restart-output-increments --construction "$RUNS/stepping_full_rank" \
  --out "$RUNS/stepping_full_rank_restarted"
# as many training batches as the construction and the retraining
run anywidth --teacher "$RUNS/original/last.pt" --target-macs $targets --epochs 39 --baseline-recipe stepping --out "$RUNS/anywidth"
models=("$SHIPPED")
for run_name in original stepping stepping_no_kd stepping_full_rank stepping_full_rank_restarted anywidth; do
  python -m anytime_perception.export --checkpoint "$RUNS/$run_name/last.pt" --out "$RUNS/export/road_signs_neck_$run_name"
  models+=("$RUNS/export/road_signs_neck_$run_name")
done
python -m anytime_perception.eval --data "$DATASETS/road_signs" --model "${models[@]}" \
  --json docs/results/stepping_detector.json --plot docs/results/stepping_detector_map_vs_macs.png
