#!/usr/bin/env bash
# Regenerate the tabletop reference artefacts: demonstrations, the vlm_tiny backbone, every policy's
# checkpoint (fixed seeds), and the evaluation store the results tables are made from.
#
#   bash scripts/reference_tabletop.sh            # everything (hours on 2 CPU cores)
#   STEPS=4000 POLICIES="apt_pi0 baseline_pi0" bash scripts/reference_tabletop.sh
#
# Each policy trains single-threaded so two can run side by side on a 2-core machine; wall times
# are recorded in each checkpoint's config.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/apt-bench}
DEMOS=${DEMOS:-demos/tabletop}
CK=${CK:-checkpoints/tabletop}
STEPS=${STEPS:-4000}
LR=${LR:-1e-3}
SEED=${SEED:-0}
POLICIES=${POLICIES:-"apt_pi0 baseline_pi0 discrete_pi0 apt_groot baseline_groot"}
EPISODES=${EPISODES:-50}
STORE=${STORE:-results/tabletop/store.sqlite}

[ -f "$DEMOS/meta.json" ] || "$BIN" demos --suite tabletop --out "$DEMOS" --episodes-per-task 50 --seed 0
# Backbone: image-text matching on rendered scenes + pointing on the demonstrations (vl_pointing.py).
[ -f "$CK/vlm_tiny/vlm.safetensors" ] || "$BIN" train --policy vlm_tiny --demos "$DEMOS" --steps 1000 \
    --batch-size 64 --lr "$LR" --threads 1 --seed "$SEED" --out "$CK/vlm_tiny"
for p in $POLICIES; do
    [ -f "$CK/$p/model.safetensors" ] || "$BIN" train --policy "$p" --demos "$DEMOS" --steps "$STEPS" \
        --lr "$LR" --threads 1 --seed "$SEED" --vlm "$CK/vlm_tiny" --out "$CK/$p"
done
for p in $POLICIES; do
    for s in seen paraphrased unseen compositional blank shuffled swapped; do
        "$BIN" run --policy "$CK/$p" --split "$s" --episodes "$EPISODES" --store "$STORE"
    done
done
"$BIN" compare --store "$STORE"
