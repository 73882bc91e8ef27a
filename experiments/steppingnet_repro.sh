#!/usr/bin/env bash
# Regenerates every run behind docs/results/steppingnet.md (CPU schedule; see that page).
#   experiments/steppingnet_repro.sh [lenet5|gtsrb|lenet_3c1l|variants|gtsrb_variants|paper|gtsrb_paper|paper_reduced|all]
#   (default all; runs resume)
# Runs one process at a time (THREADS torch threads each); the runs of a set after its original
# network are independent and may also run in parallel.
# then: python experiments/stepping_report.py --runs runs/steppingnet --out docs/results
set -euo pipefail
DATASETS=${DATASETS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/datasets}
RUNS=${RUNS:-runs/steppingnet}
THREADS=${THREADS:-1}
# The CLI defaults are the paper's formulation. Every recorded run names its departures from it:
# - OURS: what every recorded SteppingNet run used: r on the neuron's output after BN/ReLU/pool (the
#   paper: on the weighted sum, Eq. 1-2), pruning below 0.05 x the layer's mean |w| (the paper: |w| <
#   1e-5), MAC targets met counting the pruned weights too (what the dense graphs execute);
# - RANKING: neurons ranked by importance per MAC saved (the paper's "importance" empties whole layers
#   on LeNet-5, docs/results/steppingnet.md); --funnel-free and --scoped-decay where a run used them;
# - BASELINE_OURS: the baselines trained with SteppingNet's KD and LR suppression (the default: plain
#   cross-entropy, the paper gives the baselines none of SteppingNet's techniques).
OURS=(--scale-at output --prune-rule layer_mean --prune-threshold 0.05 --count-pruned-macs)
RANKING=(--ranking importance_per_mac)
BASELINE_OURS=(--baseline-recipe stepping)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
CIFAR10=$DATASETS/cifar10/cifar10_jpg.zip
GTSRB=$DATASETS/gtsrb/gtsrb32_jpg.zip
run() { python -m anytime_perception.training.stepping_run "$@" --threads "$THREADS" --resume; }

# run_set NAME DATA ARCH ORIGINAL_EPOCHS ITERATIONS BATCHES_PER_ITERATION RETRAIN_EPOCHS BASELINE_EPOCHS CONSTRUCTIONS [extra...]
# BASELINE_EPOCHS: as many training batches as SteppingNet's construction (N_t x m) + retraining.
# CONSTRUCTIONS: "all" (per MAC saved; funnel-free; each also with scoped decay) or "best" (only the
# recommended funnel-free + scoped-decay one, retrained with KD and without: LeNet-3C1L, 19x the MACs)
run_set() {
  local name=$1 data=$2 arch=$3 orig=$4 iters=$5 m=$6 retrain=$7 base=$8 constructions=$9; shift 9
  local out=$RUNS/$name common=(--data "$data" --arch "$arch" "$@")
  run original "${common[@]}" --epochs "$orig" --out "$out/original"
  local teacher=(--teacher "$out/original/last.pt")
  local step=(stepping "${common[@]}" "${teacher[@]}" --iterations "$iters" --batches-per-iteration "$m"
              --epochs "$retrain" "${RANKING[@]}" "${OURS[@]}")
  local best=$out/stepping_funnel_free_scoped_decay
  run "${step[@]}" --funnel-free --scoped-decay --out "$best"
  if [[ $constructions == all ]]; then
    run "${step[@]}" --out "$out/stepping"
    # the same with funnel-free moves (no increment reaches the logits through fewer later neurons than it adds)
    run "${step[@]}" --funnel-free --out "$out/stepping_funnel_free"
    # weight decay scoped to the trained subnet (unscoped decay kills the neurons moved up; steppingnet.md)
    run "${step[@]}" --scoped-decay --out "$out/stepping_scoped_decay"
    run anywidth "${common[@]}" "${teacher[@]}" --epochs "$base" "${BASELINE_OURS[@]}" --scoped-decay \
      --out "$out/anywidth_scoped_decay"
  else
    run "${step[@]}" --funnel-free --scoped-decay --no-kd --construction "$best" --out "${best}_no_kd"
  fi
  run anywidth "${common[@]}" "${teacher[@]}" --epochs "$base" "${BASELINE_OURS[@]}" --out "$out/anywidth"
  run slimmable "${common[@]}" "${teacher[@]}" --epochs "$base" "${BASELINE_OURS[@]}" --out "$out/slimmable"
}

# paper NAME DATA ORIGINAL_EPOCHS ITERATIONS BATCHES_PER_ITERATION RETRAIN_EPOCHS BASELINE_EPOCHS [extra...]: the
# paper's formulation (every CLI default: ranking by M_j, r on the weighted sum, pruning |w| < 1e-5, MACs
# of kept weights) and the baselines on plain cross-entropy, next to the recorded runs of the same set
paper() {
  local name=$1 data=$2 orig=$3 iters=$4 m=$5 retrain=$6 base=$7; shift 7
  local out=$RUNS/$name common=(--data "$data" --arch lenet5 "$@")
  run original "${common[@]}" --epochs "$orig" --out "$out/original"
  local teacher=(--teacher "$out/original/last.pt")
  run stepping "${common[@]}" "${teacher[@]}" --iterations "$iters" --batches-per-iteration "$m" --epochs "$retrain" \
    --out "$out/stepping_paper"
  run anywidth "${common[@]}" "${teacher[@]}" --epochs "$base" --out "$out/anywidth_plain"
  run slimmable "${common[@]}" "${teacher[@]}" --epochs "$base" --out "$out/slimmable_plain"
}

# paper_reduced: a short CPU check of the paper's formulation against the recommended construction on
# CIFAR-10 LeNet-5 (original 3 epochs; construction N_t = 20 x m = 10 batches; 1 retraining epoch);
# its own set, cifar10_lenet5_reduced, so nothing is compared with a run of another schedule
paper_reduced() {
  local out=$RUNS/cifar10_lenet5_reduced common=(--data "$CIFAR10" --arch lenet5)
  run original "${common[@]}" --epochs 3 --out "$out/original"
  local step=(stepping "${common[@]}" --teacher "$out/original/last.pt" --iterations 20 --batches-per-iteration 10
              --epochs 1)
  run "${step[@]}" --out "$out/stepping_paper"
  run "${step[@]}" "${RANKING[@]}" "${OURS[@]}" --funnel-free --scoped-decay --out "$out/stepping_funnel_free_scoped_decay"
}

# CIFAR-10 LeNet-5: N_t = 300 (the paper's) x m = 125 (paper: 250), 30 retraining epochs;
# baselines 126 epochs = (37,500 + 30 x 390) / 390 batches.
LENET5=(300 125 30 126)
# GTSRB LeNet-5 (306 batches/epoch, no flips): N_t = 300 x m = 30, 15 retraining epochs; baselines 44 epochs
GTSRB_LENET5=(300 30 15 44)
# CIFAR-10 LeNet-3C1L (19x LeNet-5's MACs, ~0.6 s per batch of four subnets on one thread): N_t = 100 x
# m = 10, 8 retraining epochs; baselines 10 epochs = (1,000 + 8 x 390) / 390 batches (rounded down)
LENET_3C1L=(100 10 8 10)

# ablate RUN_DIR STEPPING_ARGS...: the ablation of Fig. 8 of the construction in RUN_DIR (without LR
# suppression: its own construction; KD is used by retraining only, so "without KD" and "without
# both" retrain the constructions of RUN_DIR and of the run without suppression)
ablate() {
  local run_dir=$1; shift
  run stepping "$@" --no-suppression --out "${run_dir}_no_suppression"
  run stepping "$@" --no-kd --construction "$run_dir" --out "${run_dir}_no_kd"
  run stepping "$@" --no-suppression --no-kd --construction "${run_dir}_no_suppression" --out "${run_dir}_no_both"
}

# variants NAME DATA ITERATIONS BATCHES_PER_ITERATION RETRAIN_EPOCHS BASELINE_EPOCHS [extra...]: on one
# LeNet-5 set, SteppingNet with the paper's ranking, the ablation of Fig. 8 of two constructions
# (ranked per MAC saved; also funnel-free with scoped decay, the best one), and the baselines without KD
variants() {
  local name=$1 data=$2 iters=$3 m=$4 retrain=$5 base=$6; shift 6
  local out=$RUNS/$name
  local common=(--data "$data" --arch lenet5 "$@" --teacher "$out/original/last.pt")
  local step=("${common[@]}" --iterations "$iters" --batches-per-iteration "$m" --epochs "$retrain")
  # the paper's ranking with the rest of the recorded construction (OURS)
  run stepping "${step[@]}" --ranking importance "${OURS[@]}" --out "$out/stepping_paper_ranking"
  ablate "$out/stepping" "${step[@]}" "${RANKING[@]}" "${OURS[@]}"
  ablate "$out/stepping_funnel_free_scoped_decay" "${step[@]}" "${RANKING[@]}" "${OURS[@]}" --funnel-free --scoped-decay
  # the baselines without KD too (the fair comparison for the runs above without KD); any-width keeps LR
  # suppression, slimmable has none (no owned weights), so slimmable_no_kd trains as the plain default does
  run anywidth "${common[@]}" --epochs "$base" "${BASELINE_OURS[@]}" --no-kd --out "$out/anywidth_no_kd"
  run slimmable "${common[@]}" --epochs "$base" "${BASELINE_OURS[@]}" --no-kd --out "$out/slimmable_no_kd"
}

case ${1:-all} in
  lenet5) run_set cifar10_lenet5 "$CIFAR10" lenet5 30 "${LENET5[@]}" all ;;
  gtsrb) run_set gtsrb_lenet5 "$GTSRB" lenet5 15 "${GTSRB_LENET5[@]}" all --no-flip ;;
  lenet_3c1l) run_set cifar10_lenet_3c1l "$CIFAR10" lenet_3c1l 12 "${LENET_3C1L[@]}" best ;;
  variants) variants cifar10_lenet5 "$CIFAR10" "${LENET5[@]}" ;;
  gtsrb_variants) variants gtsrb_lenet5 "$GTSRB" "${GTSRB_LENET5[@]}" --no-flip ;;
  paper) paper cifar10_lenet5 "$CIFAR10" 30 "${LENET5[@]}" ;;
  gtsrb_paper) paper gtsrb_lenet5 "$GTSRB" 15 "${GTSRB_LENET5[@]}" --no-flip ;;
  paper_reduced) paper_reduced ;;
  all) "$0" lenet5; "$0" gtsrb; "$0" lenet_3c1l; "$0" variants; "$0" gtsrb_variants; "$0" paper; "$0" gtsrb_paper ;;
  *) echo "usage: $0 [lenet5|gtsrb|lenet_3c1l|variants|gtsrb_variants|paper|gtsrb_paper|paper_reduced|all]" >&2
     exit 2 ;;
esac
