#!/usr/bin/env bash
# Regenerate the tabletop reference artefacts: demonstrations, the vlm_tiny backbone, every policy's
# checkpoint (fixed seeds), and the evaluation store the results tables are made from.
#
#   bash scripts/reference_tabletop.sh            # everything (hours on 2 CPU cores)
#   STEPS=4000 POLICIES="apt_pi0 baseline_pi0" bash scripts/reference_tabletop.sh
#   # the training-seed study (results/tabletop/seeds.md): seeds 0-2 of the pi0 pair with the first
#   # reference recipe (front camera only, one thread, 5000 / 4000 steps), shipped backbone, the four
#   # instruction splits, one store:
#   for s in 0 1 2; do for ps in apt_pi0:5000 baseline_pi0:4000; do SEED=$s CK=checkpoints/tabletop/seeds/seed$s \
#       VLM=checkpoints/tabletop/vlm_tiny STORE=results/tabletop/seeds.sqlite POLICIES=${ps%%:*} STEPS=${ps#*:} \
#       CAMERAS=front THREADS=1 EPISODES_96=3 SPLITS="seen paraphrased unseen compositional" \
#       bash scripts/reference_tabletop.sh; done; done
#
# The pi0 pair and discrete_pi0 see the front and wrist cameras and train alone on both cores
# (--threads 2, one after the other); the GROOT pair sees the front camera and trains
# single-threaded, two side by side. Wall times are recorded in each checkpoint's config.json. Evaluation runs single-threaded
# (OMP_NUM_THREADS=1): two evaluations with torch's default threads on 2 cores oversubscribe them.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BIN=${BIN:-.venv/bin/apt-bench}
VLM_DEMOS=${VLM_DEMOS:-demos/tabletop}      # 50 episodes per task, clean expert labels (--expert-noise 0)
DEMOS=${DEMOS:-demos/tabletop100}           # 100 episodes per task, noisy labels (the default 0.1); the
                                            # first 50 per task start from VLM_DEMOS's layouts
DISCRETE_DEMOS=${DISCRETE_DEMOS:-demos/tabletop100c}  # 100 episodes per task, clean labels (DEMOS' layouts)
CK=${CK:-checkpoints/tabletop}
VLM=${VLM:-$CK/vlm_tiny}                    # the backbone every policy starts from
STEPS=${STEPS:-}                            # empty: each policy's reference step count (below)
LR=${LR:-1e-3}
SEED=${SEED:-0}
CAMERAS=${CAMERAS:-}                        # empty: each policy's reference cameras (below)
THREADS=${THREADS:-}                        # empty: each policy's reference torch threads (below)
POLICIES=${POLICIES:-"apt_pi0 baseline_pi0 discrete_pi0 apt_groot baseline_groot"}
# Layouts are drawn from the episode seed alone (every task of a seed shares its layout), so the
# seed count is the number of layouts a cell sees: 10 on every split (240 episodes per 24-entry
# split, 960 per 96-entry one). The training-seed study used 3 on the 96-entry splits (EPISODES_96=3).
EPISODES=${EPISODES:-10}                    # per entry of the 24-entry splits
EPISODES_96=${EPISODES_96:-10}              # per entry of the 96-entry splits (paraphrased, unseen)
STORE=${STORE:-results/tabletop/store.sqlite}
SPLITS=${SPLITS:-"seen paraphrased unseen compositional blank shuffled swapped"}

# Reference step counts: what fits in ~30 min (pi0 pair: of both cores, with twice the image
# tokens; the others: of one core). apt: Stage 1 on cached frozen features is fast, Stage 2 also
# trains the trunk; discrete decodes tokens autoregressively.
steps_for() {
    if [ -n "$STEPS" ]; then echo "$STEPS"; return; fi
    case "$1" in apt_pi0) echo 4000 ;; baseline_pi0) echo 3000 ;; apt_*) echo 5000 ;; discrete_*) echo 2500 ;;
                 *) echo 4000 ;; esac
}
# The wrist view fixes the pi0 pair's position errors (baseline_pi0 on seen: 70.0% vs 39.6% front-only);
# discrete_pi0 needs it together with 100 clean episodes per task (50.8% on seen vs 25.4% front-only on 50).
cameras_for() {
    if [ -n "$CAMERAS" ]; then echo "$CAMERAS"; return; fi
    case "$1" in apt_pi0|baseline_pi0|discrete_pi0) echo "front wrist" ;; *) echo front ;; esac
}
threads_for() {
    if [ -n "$THREADS" ]; then echo "$THREADS"; return; fi
    case "$1" in apt_pi0|baseline_pi0|discrete_pi0) echo 2 ;; *) echo 1 ;; esac
}
# discrete_pi0 trains on clean labels (hash 0208e53f): FAST tokens of the noisy labels (expert noise
# 0.1) carry the white noise (BPE x2.29 instead of x3.69, per-token loss 3.1 instead of 0.75 after
# ~2000 steps). Under strict decoding that failed outright (100 per task: 72% undecodable, 0% on
# seen); decoded relaxed, noisy and clean labels scored alike (17.9% on seen, both cameras, 50 per
# task; results/tabletop/README.md).
demos_for() {
    case "$1" in discrete_*) echo "$DISCRETE_DEMOS" ;; *) echo "$DEMOS" ;; esac
}
# APT's Stage 2 fine-tunes the VLM trunk jointly (at the base LR): 34.7% vs 31.9% frozen on seen;
# the baseline trains it throughout. The reference flow pairs predate the released expert design
# (`--fusion highway`, the default) and the frozen default of `--vlm-mode`: they use the inserted
# cross-attention layers, `--fusion cross_attention`, and `--vlm-mode full`.
flags_for() {
    case "$1" in
        apt_* | baseline_*) echo "--vlm-mode full --vlm-lr-multiplier 1.0 --fusion cross_attention" ;;
        *) echo "" ;;
    esac
}

[ -f "$VLM_DEMOS/meta.json" ] || "$BIN" demos --suite tabletop --out "$VLM_DEMOS" --episodes-per-task 50 --seed 0 \
    --expert-noise 0
[ -f "$DEMOS/meta.json" ] || "$BIN" demos --suite tabletop --out "$DEMOS" --episodes-per-task 100 --seed 0
[ -f "$DISCRETE_DEMOS/meta.json" ] || "$BIN" demos --suite tabletop --out "$DISCRETE_DEMOS" --episodes-per-task 100 \
    --seed 0 --expert-noise 0
# Backbone: image-text matching on rendered scenes + pointing on the demonstrations (vl_pointing.py).
[ -f "$VLM/vlm.safetensors" ] || "$BIN" train --policy vlm_tiny --demos "$VLM_DEMOS" --steps 1000 \
    --batch-size 64 --lr "$LR" --threads 1 --seed "$SEED" --out "$VLM"
for p in $POLICIES; do
    # shellcheck disable=SC2046
    [ -f "$CK/$p/model.safetensors" ] || "$BIN" train --policy "$p" --demos "$(demos_for "$p")" --steps "$(steps_for "$p")" \
        --lr "$LR" --threads "$(threads_for "$p")" --cameras $(cameras_for "$p") --seed "$SEED" --vlm "$VLM" \
        $(flags_for "$p") --out "$CK/$p"
done
# The tiny flow policies do better sampling from zero noise than from N(0, I) (baseline_pi0 on seen:
# 52.8% vs 31.9%): record that as their inference default (config.json "inference"), fp16 weights.
# Discrete checkpoints decode malformed FAST token sequences as LeRobot's and openpi's decoders do
# (cut / zero-pad the coefficient list): on seen, 44.4% vs 38.9% strict (seeds 0-2).
.venv/bin/python -m apt.training.ship "$CK" --noise-scale 0 --relaxed-decoding on
# Seeds 0.. on every split (paired across policies), counts above.
for p in $POLICIES; do
    for s in $SPLITS; do
        case "$s" in paraphrased|unseen) n=$EPISODES_96 ;; *) n=$EPISODES ;; esac
        "$BIN" run --policy "$CK/$p" --split "$s" --episodes "$n" --workers 0 --store "$STORE"
    done
done
"$BIN" compare --store "$STORE"
# The training-seed table (seeds 0-2 in one store, see the top of this file):
#   apt-bench compare --store results/tabletop/seeds.sqlite \
#       --policies apt_pi0 baseline_pi0 --splits seen paraphrased unseen compositional \
#       --across-checkpoints --versus baseline_pi0 --out results/tabletop/seeds.md
