#!/usr/bin/env bash
# Retrain the embedded default models (srgan/weights/) from the shared training sets.
#
#   bash benchmarks/train_defaults.sh photo-x4     # SRResNet, pixel (L1) loss, bicubic preset
#   bash benchmarks/train_defaults.sh photo-x2     # the same at x2 (INIT=photo-x4 starts from x4's trunk)
#   bash benchmarks/train_defaults.sh galaxy-x4    # 1-channel, astro preset, synthetic + real galaxies
#   bash benchmarks/train_defaults.sh galaxy-x2    # the same at x2 (sized for a CPU)
#   bash benchmarks/train_defaults.sh photo-x4-gan # SRGAN-MSE adversarial phase from the shipped photo-x4
#   bash benchmarks/train_defaults.sh galaxy-heldout # print (and make) the held-out galaxy folder
#   bash benchmarks/train_defaults.sh export NAME [RUN]  # copy RUNS/RUN/model.safetensors into srgan/weights and evaluate it
#
# Runs are resumable: rerunning a command continues from RUNS/<run>/checkpoint.safetensors
# (kept outside git), so training can be chunked across sessions or GPU leases.
#
# Environment: STEPS (total steps of the phase), BATCH, PATCH (HR px), LR, WORKERS, DEVICE,
# VAL_EVERY, CKPT_EVERY, LOG_EVERY override the defaults below; SETS picks the photo training
# sets; photo-x4 and photo-x2 also take RUN (run folder), INIT (--init model) and PRESET; photo-x4-gan takes
# ADV (adversarial weight). Each model card gives the exact command that made the shipped file.
#
# Training data: T91, BSD200 and General100, the training sets of ../shared/datasets, and the
# galaxy FITS minus benchmarks/galaxy-heldout.txt. Set5/Set14/BSD100 are evaluation sets, only
# used for learning curves, never for training or model selection.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/datasets}
RUNS=${RUNS:-$HOME/srgan-runs}
DATA=${DATA:-$HOME/srgan-data}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-0}

# photo training folder: symlinks to the sets named in SETS (default: all three training sets)
photo_data() {
  for s in ${SETS:-T91 BSD200 General100}; do
    mkdir -p "$DATA/photo-train/$s"
    for f in "$SHARED/$s"/*.png "$SHARED/$s"/*.jpg; do [ -e "$f" ] && ln -sf "$(realpath "$f")" "$DATA/photo-train/$s/"; done
  done
  return 0  # (the last unmatched glob must not end the script under set -e)
}

# galaxy folders: the real FITS minus benchmarks/galaxy-heldout.txt for training, the rest held out
galaxy_data() {
  mkdir -p "$DATA/galaxy-train/real" "$DATA/galaxy-heldout"
  for f in "$SHARED/galaxies-fits"/*.fits; do
    if grep -qxF "$(basename "$f")" benchmarks/galaxy-heldout.txt; then ln -sf "$(realpath "$f")" "$DATA/galaxy-heldout/"
    else ln -sf "$(realpath "$f")" "$DATA/galaxy-train/real/"; fi
  done
}

resume_flag() { [ -f "$RUNS/$1/checkpoint.safetensors" ] && echo --resume || true; }

case "${1:-}" in
photo-x4|photo-x2)
  scale=${1#photo-x}
  STEPS=${STEPS:-3000}; BATCH=${BATCH:-16}; PATCH=${PATCH:-96}; LR=${LR:-2e-4}
  photo_data
  RUN=${RUN:-$1}
  exec srgan train --hr "$DATA/photo-train" --out "$RUNS/$RUN" $(resume_flag "$RUN") ${INIT:+--init "$INIT"} \
    --val "$SHARED/Set5" --scale "$scale" --preset "${PRESET:-bicubic}" --pretrain-steps "$STEPS" --gan-steps 0 \
    --batch-size "$BATCH" --patch-size "$PATCH" --no-batch-norm --lr "$LR" --schedule cosine --pixel-loss l1 \
    --val-every "${VAL_EVERY:-250}" --checkpoint-every "${CKPT_EVERY:-250}" --log-every "${LOG_EVERY:-25}" \
    --workers "$WORKERS" --seed 0 --device "$DEVICE" --no-progress
  ;;
galaxy-x4|galaxy-x2)
  # galaxy-x2 is galaxy-x4's recipe at x2: same data, architecture and held-out split
  scale=${1#galaxy-x}
  STEPS=${STEPS:-2000}; BATCH=${BATCH:-16}; PATCH=${PATCH:-64}; LR=${LR:-2e-4}
  galaxy_data
  [ -d "$DATA/galaxy-train/synthetic" ] || srgan make-galaxies "$DATA/galaxy-train/synthetic" --n 256 --size 128 --seed 1
  exec srgan train --hr "$DATA/galaxy-train" --out "$RUNS/$1" $(resume_flag "$1") \
    --val "$DATA/galaxy-heldout" --scale "$scale" --preset astro --pretrain-steps "$STEPS" --gan-steps 0 \
    --batch-size "$BATCH" --patch-size "$PATCH" --blocks 8 --channels 32 --no-batch-norm --lr "$LR" --schedule cosine \
    --pixel-loss l1 --val-every "${VAL_EVERY:-250}" --checkpoint-every "${CKPT_EVERY:-250}" --log-every "${LOG_EVERY:-25}" \
    --workers "$WORKERS" --seed 0 --device "$DEVICE" --no-progress
  ;;
photo-x4-gan)
  # the paper's SRGAN-MSE variant (MSE content + 1e-3 adversarial + 2e-8 TV), from the shipped photo-x4
  STEPS=${STEPS:-2000}; BATCH=${BATCH:-16}; PATCH=${PATCH:-96}; LR=${LR:-1e-4}
  photo_data
  exec srgan train --hr "$DATA/photo-train" --out "$RUNS/photo-x4-gan" $(resume_flag photo-x4-gan) \
    --val "$SHARED/Set5" --init photo-x4 --pretrain-steps 0 --gan-steps "$STEPS" --content-loss mse --gan-loss bce \
    --adversarial-weight "${ADV:-1e-3}" \
    --batch-size "$BATCH" --patch-size "$PATCH" --lr "$LR" --schedule step \
    --val-every "${VAL_EVERY:-250}" --checkpoint-every "${CKPT_EVERY:-250}" --log-every "${LOG_EVERY:-25}" \
    --workers "$WORKERS" --seed 0 --device "$DEVICE" --no-progress
  ;;
galaxy-heldout)
  # print the folder of the 15 held-out galaxy FITS (made if needed): srgan eval --hr "$(...)"
  galaxy_data >/dev/null; echo "$DATA/galaxy-heldout"
  ;;
export)
  name=${2:?usage: train_defaults.sh export NAME}
  cp "$RUNS/${3:-$name}/model.safetensors" "srgan/weights/$name.safetensors"
  case "$name" in
    galaxy-x*) galaxy_data; srgan eval --model "$name" --hr "$DATA/galaxy-heldout" --json "srgan/weights/$name.eval.json" --overwrite --markdown ;;
    *) srgan eval --model "$name" --hr "$SHARED/Set5" --hr "$SHARED/Set14" --hr "$SHARED/BSD100" \
         --json "srgan/weights/$name.eval.json" --overwrite --markdown ;;
  esac
  ;;
*)
  awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 2 ;;
esac
