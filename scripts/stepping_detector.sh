#!/usr/bin/env bash
# SteppingNet detector on road_signs at the shipped any-width detector's stage MACs, then mAP@0.5
# of both through the runtime (docs/results/steppingnet.md, "Detector").
#   scripts/stepping_detector.sh            (runs resume; THREADS=2 to use both cores)
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/stepping_detector}
THREADS=${THREADS:-1}
SHIPPED=models/road_signs_anywidth
common=(--arch stepping_centernet --data "$DATASETS/road_signs" --threads "$THREADS" --lr 0.02 --resume)
# the shipped detector's cumulative stage MACs, read from its manifest
targets=$(python - "$SHIPPED" <<'PY'
import sys
from anytime_perception.runtime.manifest import load_manifest
macs = [s.macs for s in load_manifest(sys.argv[1]).stages]
print(" ".join(str(sum(macs[: k + 1])) for k in range(len(macs))))
PY
)
python -m anytime_perception.training.stepping_run original "${common[@]}" --epochs 30 --out "$RUNS/original"
python -m anytime_perception.training.stepping_run stepping "${common[@]}" --teacher "$RUNS/original/last.pt" \
  --target-macs $targets --iterations 20 --batches-per-iteration 8 --epochs 30 --out "$RUNS/stepping"
python -m anytime_perception.export --checkpoint "$RUNS/stepping/last.pt" --out "$RUNS/export/road_signs_stepping"
python -m anytime_perception.eval --data "$DATASETS/road_signs" --model "$SHIPPED" "$RUNS/export/road_signs_stepping" \
  --json docs/results/stepping_detector.json --plot docs/results/stepping_detector_map_vs_macs.png
