#!/usr/bin/env bash
# Every run behind docs/results/big_little.md (CPU schedule), then the reports.
#   experiments/appealnet_repro.sh [big|cifar10|gtsrb|report|all]   (default all; every run resumes)
# Big networks (CPU budget of a 2-core machine; docs/results/big_little.md says why):
#   CIFAR-10: ResNet-20, the same run as the early-exit backbone (experiments/early_exits_repro.sh resnet20);
#             CIFAR_BIG=runs/exits/cifar10_resnet32/backbone/last.pt after `early_exits_repro.sh resnet32`;
#   GTSRB:    ResNet-20 (no flips), trained by `big` below.
# Per dataset and little network: the little network alone (also the MSP / Gap / Entropy baseline),
# then AppealNet white-box (against the big network) and black-box (the big network an oracle);
# the two joint runs only need the little one and may run in parallel.
# THREADS=1 by default: on the shared 2-core machine two torch threads next to another job ran
# 3x slower per step than one. Measured there, one thread, under load (s/step of 128 images):
# little MobileNet 0.41, ShuffleNet 0.30; white-box +ResNet-32 0.93 / 0.80; black-box 0.34 / 0.28.
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/big_little}
THREADS=${THREADS:-1}
LITTLE_EPOCHS=${LITTLE_EPOCHS:-10}
JOINT_EPOCHS=${JOINT_EPOCHS:-3}
LITTLE_NETS=${LITTLE_NETS:-mobilenet shufflenet}
run() { python -m anytime_perception.training.appeal_run "$@" --threads "$THREADS" --resume; }

pair() {  # pair DATASET DATA BIG_CHECKPOINT ARCH [little flags...]
  local dataset=$1 data=$2 big=$3 arch=$4; shift 4
  local out=$RUNS/$dataset/$arch
  if [[ ! -f $big ]]; then echo "error: $big missing: train the big network first (see the top of $0)" >&2; exit 2; fi
  run little --data "$data" --arch "$arch" --epochs "$LITTLE_EPOCHS" --out "$out/little" "$@"
  local joint=(joint --data "$data" --little "$out/little/last.pt" --epochs "$JOINT_EPOCHS")
  run "${joint[@]}" --big "$big" --out "$out/white"
  run "${joint[@]}" --black-box --out "$out/black"
}

CIFAR_BIG=${CIFAR_BIG:-runs/exits/cifar10_resnet20/backbone/last.pt}
GTSRB_BIG=$RUNS/gtsrb/resnet20/last.pt
big() {
  python -m anytime_perception.training.classifier_run --data "$DATASETS/gtsrb/gtsrb32_jpg.zip" --depth 20 --no-flip \
    --epochs 10 --threads "$THREADS" --resume --out "$RUNS/gtsrb/resnet20"
}
cifar10() { for arch in $LITTLE_NETS; do pair cifar10 "$DATASETS/cifar10/cifar10_jpg.zip" "$CIFAR_BIG" "$arch"; done; }
gtsrb() { for arch in $LITTLE_NETS; do pair gtsrb "$DATASETS/gtsrb/gtsrb32_jpg.zip" "$GTSRB_BIG" "$arch" --no-flip; done; }
report() {
  python experiments/appeal_report.py --runs "$RUNS" --out docs/results
  # network selection: ShuffleNet -> MobileNet -> ResNet-20 (rising cost and accuracy), and
  # MobileNet -> ResNet-20 -> ResNet-32 (experiments/early_exits_repro.sh trains both ResNets)
  local cascade=(python experiments/cascade_report.py --data "$DATASETS/cifar10/cifar10_jpg.zip" --out docs/results)
  "${cascade[@]}" --names shufflenet mobilenet resnet20 --networks "$RUNS/cifar10/shufflenet/little/last.pt" \
    "$RUNS/cifar10/mobilenet/little/last.pt" runs/exits/cifar10_resnet20/backbone/last.pt
  "${cascade[@]}" --dataset cifar10_r32 --names mobilenet resnet20 resnet32 --networks "$RUNS/cifar10/mobilenet/little/last.pt" \
    runs/exits/cifar10_resnet20/backbone/last.pt runs/exits/cifar10_resnet32/backbone/last.pt
}

case ${1:-all} in
  big) big ;;
  cifar10) cifar10 ;;
  gtsrb) gtsrb ;;
  report) report ;;
  all) big; cifar10; gtsrb; report ;;
  *) echo "usage: $0 [big|cifar10|gtsrb|report|all]" >&2; exit 2 ;;
esac
