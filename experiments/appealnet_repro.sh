#!/usr/bin/env bash
# Every run behind docs/results/big_little.md (CPU schedule), then the reports.
#   experiments/appealnet_repro.sh [published|paper|big|big56|cifar10|gtsrb|report|all]   (default all; runs resume)
#
# Two configurations, each named by the options it uses (nets/appeal.py LITTLE_NETS, --predictor-head):
#   published: the rows in docs/results (our options): little networks mobilenet_w05_s2 and shufflenet_s2
#              (width 0.5, stride-2 stem), the paper's linear q head, 10 epochs alone + 3 joint, big ResNet-20;
#   paper:     the paper's little networks (CIFAR-10: mobilenet, full width, stride-1 stem; GTSRB: mobilenet_w05),
#              linear q head, against a ResNet-56 on CIFAR-10 (`big56`: the full-width MobileNet, 46 M MACs, costs
#              more than a ResNet-20, 41 M). Not run on this CPU: docs/results/big_little_epoch_time.json gives the
#              measured step times and the hours it implies.
# `cifar10` / `gtsrb` alone train $LITTLE_NETS (default: the paper's network for that dataset) with $PREDICTOR_HEAD.
# Big networks:
#   CIFAR-10: ResNet-20, the same run as the early-exit backbone (experiments/early_exits_repro.sh resnet20);
#             CIFAR_BIG=runs/exits/cifar10_resnet32/backbone/last.pt after `early_exits_repro.sh resnet32`;
#             `big56` trains a ResNet-56 (CIFAR_BIG=$RUNS/cifar10/resnet56/last.pt);
#   GTSRB:    ResNet-20 (no flips), trained by `big` below.
# Per dataset and little network: the little network alone (also the MSP / Gap / Entropy baseline),
# then AppealNet white-box (against the big network) and black-box (the big network an oracle);
# the two joint runs only need the little one and may run in parallel.
# THREADS=1 by default: on the shared 2-core machine two torch threads next to another job ran
# 3x slower per step than one. Measured there, one thread, under load (s/step of 128 images):
# little mobilenet_w05_s2 0.41, shufflenet_s2 0.30; white-box +ResNet-32 0.93 / 0.80; black-box 0.34 / 0.28.
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/big_little}
THREADS=${THREADS:-1}
LITTLE_EPOCHS=${LITTLE_EPOCHS:-10}
JOINT_EPOCHS=${JOINT_EPOCHS:-3}
PREDICTOR_HEAD=${PREDICTOR_HEAD:-linear}
run() { python -m anytime_perception.training.appeal_run "$@" --threads "$THREADS" --resume; }

pair() {  # pair DATASET DATA BIG_CHECKPOINT ARCH [little flags...]
  local dataset=$1 data=$2 big=$3 arch=$4; shift 4
  local out=$RUNS/$dataset/$arch
  if [[ ! -f $big ]]; then echo "error: $big missing: train the big network first (see the top of $0)" >&2; exit 2; fi
  run little --data "$data" --arch "$arch" --epochs "$LITTLE_EPOCHS" --out "$out/little" "$@"
  local joint=(joint --data "$data" --little "$out/little/last.pt" --epochs "$JOINT_EPOCHS"
               --predictor-head "$PREDICTOR_HEAD")
  run "${joint[@]}" --big "$big" --out "$out/white"
  run "${joint[@]}" --black-box --out "$out/black"
}

CIFAR_BIG=${CIFAR_BIG:-runs/exits/cifar10_resnet20/backbone/last.pt}
GTSRB_BIG=$RUNS/gtsrb/resnet20/last.pt
big() {
  python -m anytime_perception.training.classifier_run --data "$DATASETS/gtsrb/gtsrb32_jpg.zip" --depth 20 --no-flip \
    --epochs 10 --threads "$THREADS" --resume --out "$RUNS/gtsrb/resnet20"
}
big56() {
  python -m anytime_perception.training.classifier_run --data "$DATASETS/cifar10/cifar10_jpg.zip" --depth 56 \
    --epochs "${BIG56_EPOCHS:-30}" --threads "$THREADS" --resume --out "$RUNS/cifar10/resnet56"
}
cifar10() {
  for arch in ${LITTLE_NETS:-mobilenet}; do pair cifar10 "$DATASETS/cifar10/cifar10_jpg.zip" "$CIFAR_BIG" "$arch"; done
}
gtsrb() {
  for arch in ${LITTLE_NETS:-mobilenet_w05}; do
    pair gtsrb "$DATASETS/gtsrb/gtsrb32_jpg.zip" "$GTSRB_BIG" "$arch" --no-flip
  done
}
published() {  # the published rows: our options, explicitly
  LITTLE_NETS="mobilenet_w05_s2 shufflenet_s2" PREDICTOR_HEAD=linear cifar10
  LITTLE_NETS=mobilenet_w05_s2 PREDICTOR_HEAD=linear gtsrb
}
paper() {  # the paper's configuration (long on a CPU: see the top)
  big56
  CIFAR_BIG=$RUNS/cifar10/resnet56/last.pt LITTLE_NETS=mobilenet PREDICTOR_HEAD=linear cifar10
  LITTLE_NETS=mobilenet_w05 PREDICTOR_HEAD=linear gtsrb
}
report() {
  python experiments/appeal_report.py --runs "$RUNS" --out docs/results
  # network selection: shufflenet_s2 -> mobilenet_w05_s2 -> ResNet-20 (rising cost and accuracy), and
  # mobilenet_w05_s2 -> ResNet-20 -> ResNet-32 (flagged: the ResNet-32 is less accurate than the ResNet-20;
  # experiments/early_exits_repro.sh trains both ResNets); both oracles (the paper's, ours), CPU time measured
  local cascade=(python experiments/cascade_report.py --data "$DATASETS/cifar10/cifar10_jpg.zip" --out docs/results
                 --threads 1 --oracle any_correct)
  "${cascade[@]}" --names shufflenet_s2 mobilenet_w05_s2 resnet20 --networks "$RUNS/cifar10/shufflenet_s2/little/last.pt" \
    "$RUNS/cifar10/mobilenet_w05_s2/little/last.pt" runs/exits/cifar10_resnet20/backbone/last.pt
  "${cascade[@]}" --dataset cifar10_r32 --names mobilenet_w05_s2 resnet20 resnet32 \
    --networks "$RUNS/cifar10/mobilenet_w05_s2/little/last.pt" \
    runs/exits/cifar10_resnet20/backbone/last.pt runs/exits/cifar10_resnet32/backbone/last.pt
}
shipped() {  # the shipped pair's ONNX graphs as a two-network cascade (no training needed)
  python experiments/cascade_report.py --data "$DATASETS/cifar10/cifar10_jpg.zip" --out docs/results --threads 1 \
    --dataset cifar10_shipped --names mobilenet_w05_s2_appealnet resnet20 --oracle any_correct \
    --networks models/cifar10_appealnet_mobilenet models/cifar10_resnet20_pteenet
}
epoch_time() {  # measured CPU seconds per training step and the schedules they imply
  python experiments/epoch_time.py --networks mobilenet mobilenet_w05 mobilenet_w05_s2 shufflenet shufflenet_s2 \
    resnet20 resnet56 --steps 3 --warmup 1 --threads 1 --out docs/results/big_little_epoch_time.json
}

export PYTHONPATH=experiments${PYTHONPATH:+:$PYTHONPATH}  # the reports import their analysis modules
case ${1:-all} in
  published) published ;;
  paper) paper ;;
  big) big ;;
  big56) big56 ;;
  cifar10) cifar10 ;;
  gtsrb) gtsrb ;;
  report) report ;;
  shipped) shipped ;;
  epoch_time) epoch_time ;;
  all) big; published; report; shipped; epoch_time ;;
  *) echo "usage: $0 [published|paper|big|big56|cifar10|gtsrb|report|shipped|epoch_time|all]" >&2; exit 2 ;;
esac
