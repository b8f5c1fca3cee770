#!/usr/bin/env bash
# Retrain the embedded default models (srgan/weights/) from the shared training sets.
#
#   bash benchmarks/train_defaults.sh photo-x4     # SRResNet, pixel (L1) loss, bicubic preset
#   bash benchmarks/train_defaults.sh galaxy-x4    # 1-channel, astro preset, synthetic + real galaxies
#   bash benchmarks/train_defaults.sh export NAME  # copy RUN/model.safetensors into srgan/weights and evaluate it
#
# Runs are resumable: rerunning a command continues from RUNS/<name>/checkpoint.safetensors
# (kept outside git), so training can be chunked across sessions or GPU leases. STEPS sets
# the total number of pixel-loss steps the run should reach; BATCH, PATCH (HR px), LR and WORKERS
# override the CPU defaults below (the GPU run of photo-x4: BATCH=64 PATCH=128 WORKERS=6, see its
# model card). Training data: T91, BSD200 and
# General100 (the training sets of ../shared/datasets; Set5/Set14/BSD100 are evaluation sets
# and are only used for the learning curve of photo-x4, never for training or model selection).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/datasets}
RUNS=${RUNS:-$HOME/srgan-runs}
DATA=${DATA:-$HOME/srgan-data}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-0}

resume_flag() { [ -f "$RUNS/$1/checkpoint.safetensors" ] && echo --resume || true; }

case "${1:-}" in
photo-x4)
  STEPS=${STEPS:-3000}; BATCH=${BATCH:-16}; PATCH=${PATCH:-96}; LR=${LR:-2e-4}
  mkdir -p "$DATA/photo-train"
  for s in T91 BSD200 General100; do
    mkdir -p "$DATA/photo-train/$s"
    for f in "$SHARED/$s"/*.png "$SHARED/$s"/*.jpg; do [ -e "$f" ] && ln -sf "$(realpath "$f")" "$DATA/photo-train/$s/"; done
  done
  exec srgan train --hr "$DATA/photo-train" --out "$RUNS/photo-x4" $(resume_flag photo-x4) \
    --val "$SHARED/Set5" --scale 4 --preset bicubic --pretrain-steps "$STEPS" --gan-steps 0 \
    --batch-size "$BATCH" --patch-size "$PATCH" --no-batch-norm --lr "$LR" --schedule cosine --pixel-loss l1 \
    --val-every "${VAL_EVERY:-250}" --checkpoint-every "${CKPT_EVERY:-250}" --log-every "${LOG_EVERY:-25}" \
    --workers "$WORKERS" --seed 0 --device "$DEVICE" --no-progress
  ;;
galaxy-x4)
  STEPS=${STEPS:-2000}
  mkdir -p "$DATA/galaxy-train"
  [ -d "$DATA/galaxy-train/synthetic" ] || srgan make-galaxies "$DATA/galaxy-train/synthetic" --n 256 --size 128 --seed 1
  mkdir -p "$DATA/galaxy-train/real"
  for f in "$SHARED/galaxies-fits"/*.fits; do ln -sf "$(realpath "$f")" "$DATA/galaxy-train/real/"; done
  exec srgan train --hr "$DATA/galaxy-train" --out "$RUNS/galaxy-x4" $(resume_flag galaxy-x4) \
    --scale 4 --preset astro --pretrain-steps "$STEPS" --gan-steps 0 \
    --batch-size 16 --patch-size 64 --blocks 8 --channels 32 --no-batch-norm --lr 2e-4 --schedule cosine \
    --pixel-loss l1 --val-every 250 --checkpoint-every 250 --log-every 25 --seed 0 --device "$DEVICE" --no-progress
  ;;
export)
  name=${2:?usage: train_defaults.sh export NAME}
  cp "$RUNS/$name/model.safetensors" "srgan/weights/$name.safetensors"
  case "$name" in
    galaxy-x4) srgan eval --model "$name" --hr "$SHARED/galaxies-fits" --json "srgan/weights/$name.eval.json" --markdown ;;
    *) srgan eval --model "$name" --hr "$SHARED/Set5" --hr "$SHARED/Set14" --hr "$SHARED/BSD100" \
         --json "srgan/weights/$name.eval.json" --markdown ;;
  esac
  ;;
*)
  sed -n 2,14p "$0"; exit 2 ;;
esac
