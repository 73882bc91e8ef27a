#!/usr/bin/env bash
# Bring-your-own-data report (docs/results/own_data.md), with the package's own commands:
#   1. road_signs with the full recipe (the shipped detector's), random flips off (the default) and on;
#   2. a 2-class relabelled subset of road_signs (150 images: 120 from the training split, 30 from
#      the validation split, classes sign = speedlimit + crosswalk + stop, light = trafficlight),
#      fine-tuned from the shipped model vs trained from scratch, at equal epochs.
# Then: python experiments/own_data/report.py --runs runs/own_data > docs/results/own_data_tables.md
# Usage: [THREADS=N] experiments/own_data/run.sh [full|two_class|all]   (from the repository root, venv active)
set -euo pipefail
D="${ANYTIME_DATASETS:-../shared/datasets}/road_signs"
R=runs/own_data
RENAME=speedlimit=sign,crosswalk=sign,stop=sign,trafficlight=light

full() {
    anytime_train --data "$D" --out "$R/models/road_signs_noflip" --run-dir "$R/road_signs_noflip" --threads "${THREADS:-2}"
    anytime_train --data "$D" --out "$R/models/road_signs_flip" --run-dir "$R/road_signs_flip" --flip 0.5 --threads "${THREADS:-2}"
}

two_class() {
    python -m anytime_perception.data.convert --data "$D" --split train --limit 120 --rename "$RENAME" \
        --to coco --out "$R/sets/two_class_train/instances.json"
    python -m anytime_perception.data.convert --data "$D" --split val --limit 30 --rename "$RENAME" \
        --to coco --out "$R/sets/two_class_val/instances.json"
    local common=(--data "$R/sets/two_class_train/instances.json" --val-data "$R/sets/two_class_val/instances.json"
                  --epochs 30 --val-every 3 --threads "${THREADS:-2}")
    anytime_train "${common[@]}" --out "$R/models/two_class_scratch" --run-dir "$R/two_class_scratch"
    anytime_train "${common[@]}" --out "$R/models/two_class_finetuned" --run-dir "$R/two_class_finetuned" \
        --init models/road_signs_anywidth
}

case "${1:-all}" in
    full) full ;;
    two_class) two_class ;;
    all) full; two_class ;;
    *) echo "usage: $0 [full|two_class|all]" >&2; exit 2 ;;
esac
