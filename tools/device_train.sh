#!/bin/sh
# The GPU training run: the leave-one-source-out folds and the all-sources model of the size-aware
# recipe (training.loso.FOLD_VARIANT), side by side on one GPU within one time budget.
# Prepare here (once): python -m training.zoo pack-data .gpu   (the real sets of training.zoo.GRAY_ALL,
# images of nuclei over 40 px shrunk to it, xz-compressed: 74.9 MiB for all six on 2026-12-04, over the
# 64 MiB a call carries; --sets without bitdepth_dapi: 54.9 MiB, and its runs train without that set;
# the tracked models/*.onnx must stay behind for the call, as tools/device_webgpu.sh says)
# Run there: the device tool's `run` with carry [".gpu"] and the command `sh tools/device_train.sh`;
# here afterwards: python -m training.zoo unpack unets_*.pt (folds -> runs/loso, the rest -> runs/zoo,
# each also as model.onnx), then python build.py evaluate --by-source.
# BUDGET (seconds of training per model, default 330), DEVICE (cuda), WORKERS (3), PYTHON override.
set -e
mkdir -p .gpu/data
for f in .gpu/*.tar.xz; do tar -C .gpu/data -xJf "$f"; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
PYTHONUNBUFFERED=1 "${PYTHON:-python3}" -m training.zoo gpu-run --data-root .gpu/data --out "$OUT" --run-dir .gpu/runs \
  --phase1 "${BUDGET:-330}" --variants unet_s2d4_w24_sized --folds --device "${DEVICE:-cuda}" \
  --workers "${WORKERS:-3}"
