#!/usr/bin/env bash
# Regenerates every run behind docs/results/steppingnet.md (CPU schedule; see that page).
#   scripts/steppingnet_repro.sh [lenet5|lenet_3c1l|gtsrb|all]   (default all; runs resume)
# The runs of one set after its original network are independent: they may run in parallel.
# then: python -m anytime_perception.eval.stepping_report --runs runs/steppingnet --out docs/results
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/steppingnet}
THREADS=${THREADS:-1}
run() { python -m anytime_perception.training.stepping_run "$@" --threads "$THREADS" --resume; }

# run_set NAME DATA ARCH ORIGINAL_EPOCHS ITERATIONS BATCHES_PER_ITERATION RETRAIN_EPOCHS BASELINE_EPOCHS [extra...]
# Baselines get the same number of training batches as SteppingNet's construction + retraining.
run_set() {
  local name=$1 data=$2 arch=$3 orig=$4 iters=$5 m=$6 retrain=$7 base=$8; shift 8
  local out=$RUNS/$name common=(--data "$data" --arch "$arch" "$@")
  run original "${common[@]}" --epochs "$orig" --out "$out/original"
  local teacher=(--teacher "$out/original/last.pt")
  run stepping "${common[@]}" "${teacher[@]}" --iterations "$iters" --batches-per-iteration "$m" --epochs "$retrain" --out "$out/stepping"
  run anywidth "${common[@]}" "${teacher[@]}" --epochs "$base" --out "$out/anywidth"
  run slimmable "${common[@]}" "${teacher[@]}" --epochs "$base" --out "$out/slimmable"
}

ablation() {  # Fig. 8: without LR suppression, without KD, without both (LeNet-5, CIFAR-10)
  local out=$RUNS/cifar10_lenet5 common=(--data "$DATASETS/cifar10/cifar10_jpg.zip" --arch lenet5)
  local step=("${common[@]}" --teacher "$out/original/last.pt" --iterations 40 --batches-per-iteration 50 --epochs 10)
  run stepping "${step[@]}" --no-suppression --out "$out/stepping_no_suppression"
  run stepping "${step[@]}" --no-kd --out "$out/stepping_no_kd"
  run stepping "${step[@]}" --no-suppression --no-kd --out "$out/stepping_no_both"
  # not in the paper: neurons ranked by importance per MAC the move saves
  run stepping "${step[@]}" --ranking importance_per_mac --out "$out/stepping_per_mac"
}

case ${1:-all} in
  lenet5) run_set cifar10_lenet5 "$DATASETS/cifar10/cifar10_jpg.zip" lenet5 20 40 50 10 15; ablation ;;
  lenet_3c1l) run_set cifar10_lenet_3c1l "$DATASETS/cifar10/cifar10_jpg.zip" lenet_3c1l 12 40 25 8 10 ;;
  gtsrb) run_set gtsrb_lenet5 "$DATASETS/gtsrb/gtsrb32_jpg.zip" lenet5 15 40 40 8 12 --no-flip ;;
  all) "$0" lenet5; "$0" lenet_3c1l; "$0" gtsrb ;;
  *) echo "usage: $0 [lenet5|lenet_3c1l|gtsrb|all]" >&2; exit 2 ;;
esac
