#!/usr/bin/env bash
# SteppingNet built on the shipped detector (issue 21): the detector training path
# (anytime_train --model stepping_centernet_patch_s3) with the paper's construction rule and with
# ours, then both, the shipped any-width detector and YOLO11n scored and timed in one run
# (docs/results/stepping_detector_vs_anywidth.{md,json}; docs/results/steppingnet.md, section "Detector").
#   experiments/stepping_detector.sh             (the two trainings run in parallel, one thread each)
# The recipe is the shipped detector's (AdamW at 2e-3, its augmentation, loss and in-place
# distillation) with the suppression beta^(j-i) applied to AdamW's update; MAC targets are the
# shipped stages' (the any-width nesting's, computed: 27.4 / 123.9 / 436.6 M). Budget: 40 x 6
# construction batches (about 7 epochs) + 50 epochs of retraining, against the shipped 70 epochs.
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/stepping_detector}
EPOCHS=${EPOCHS:-50}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$RUNS"
for rule in paper floors; do
  anytime_train --data "$DATASETS/road_signs" --model stepping_centernet_patch_s3 --stepping-rule "$rule" \
    --stepping-iterations 40 --stepping-batches 6 --epochs "$EPOCHS" --val-every 10 --threads 1 \
    --run-dir "$RUNS/$rule" --out "$RUNS/models/road_signs_stepping_$rule" --steps train export eval \
    > "$RUNS/$rule.log" 2>&1 &
done
wait
python bench/bench_detectors.py --model models/road_signs_anywidth --name "any-width (shipped)" \
  --model "$RUNS/models/road_signs_stepping_paper" --name "SteppingNet, paper's rule" \
  --model "$RUNS/models/road_signs_stepping_floors" --name "SteppingNet, floors rule" \
  --model "$DATASETS/../peers/yolo11n_road_signs_320.onnx" --name "YOLO11n" \
  --out docs/results/stepping_detector_vs_anywidth.md
