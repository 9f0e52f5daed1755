#!/bin/sh
# The whole-cell GPU run (issue 21): the shipped variant of training.cells.RECIPE and its three
# leave-one-source-out folds side by side on one GPU, each for training.cells.GPU_BUDGET seconds of
# training in one schedule (training.cells.train_run), within one lease of the lent machine.
# Prepare here (once): python -m training.cells pack-data .gpu   (the three whole-cell sets, cells over
# PACK_MAX_DIAMETER shrunk to it, 16-bit images as 8 bits: 56.2 MiB on 2026-12-07; the tracked models/*.onnx must stay behind
# for the call, as tools/device_webgpu.sh says).
# and the recipe's pretrained encoder weights: python -c "from training.cells import RECIPE as R; from
# training.models.weights import fetch_weights; fetch_weights(R['encoder'], R['encoder_kwargs']['weights'])"
# (into .cache/weights; that machine reaches no registry). Untried: the 13.6 MiB of MobileNetV2 weights
# and the 56.2 MiB pack together pass the device tool's 64 MiB carry, so one of them must shrink first.
# Run there: the device tool's `run` with carry [".gpu", ".cache/weights"] and the command
# `sh tools/device_train_cells.sh`.
# Here afterwards: python -m training.cells unpack unets_*.pt (into runs/cells, each with model.onnx),
# then python build.py cells-export and python build.py cells-evaluate --record.
# BUDGET (seconds of training per run), DEVICE (cuda), WORKERS (per run, default 3), PYTHON override.
set -e
mkdir -p .gpu/data
for f in .gpu/cells_*.tar.xz; do tar -C .gpu/data -xJf "$f"; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT"
PYTHONUNBUFFERED=1 "${PYTHON:-python3}" -m training.cells gpu-run --data-root .gpu/data --out "$OUT" \
  ${BUDGET:+--budget "$BUDGET"} --device "${DEVICE:-cuda}" --workers "${WORKERS:-3}"
