#!/usr/bin/env bash
# Regenerates every run behind docs/results/early_exits.md (CPU schedule; see that page).
#   experiments/early_exits_repro.sh [resnet20|resnet32|report|all]   (default all)
# Backbones resume (--resume); exit runs are short and retrain from scratch.
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
CIFAR=$DATASETS/cifar10/cifar10_jpg.zip
RUNS=${RUNS:-runs/exits}
THREADS=${THREADS:-2}
EXIT_EPOCHS=${EXIT_EPOCHS:-2}
WARMUP_EPOCHS=${WARMUP_EPOCHS:-2}  # PTEEnet: branch classifiers first (see training/early_exits.py)

backbone() {  # backbone DEPTH EPOCHS
  python -m anytime_perception.training.classifier_run --data "$CIFAR" --depth "$1" --epochs "$2" \
    --threads "$THREADS" --resume --out "$RUNS/cifar10_resnet$1/backbone"
}
exits() {  # exits DEPTH NAME METHOD [args...]
  local depth=$1 name=$2 method=$3; shift 3
  python -m anytime_perception.training.exits_run "$method" --data "$CIFAR" --threads "$THREADS" \
    --backbone "$RUNS/cifar10_resnet$depth/backbone/last.pt" --epochs "$EXIT_EPOCHS" --warmup-epochs "$WARMUP_EPOCHS" \
    --out "$RUNS/cifar10_resnet$depth/$name" "$@"
}

resnet20() {  # ResEEnet20/3: placements, a lambda sweep, and d-gates (hinge vs CE) on the same exits
  backbone 20 20
  exits 20 pteenet pteenet --exits 3 --placement fine --lam 0.5
  for placement in pareto golden linear; do
    exits 20 "pteenet_$placement" pteenet --exits 3 --placement "$placement" --lam 0.5
  done
  for lam in 0.1 2.0; do exits 20 "pteenet_linear_l$lam" pteenet --exits 3 --placement linear --lam "$lam"; done
  exits 20 gates_hinge gates --exits 3 --placement linear --loss hinge
  exits 20 gates_ce gates --exits 3 --placement linear --loss ce
}

resnet32() {  # ResEEnet32/5
  backbone 32 8
  exits 32 pteenet pteenet --exits 5 --placement fine --lam 0.5
  exits 32 pteenet_linear pteenet --exits 5 --placement linear --lam 0.5
}

report() {
  python experiments/exits_report.py --runs "$RUNS" --data "$CIFAR" --out docs/results \
    --default pteenet pteenet_linear
}

case ${1:-all} in
  resnet20) resnet20 ;;
  resnet32) resnet32 ;;
  report) report ;;
  all) resnet20; resnet32; report ;;
  *) echo "usage: $0 [resnet20|resnet32|report|all]" >&2; exit 2 ;;
esac
