#!/bin/sh
# The one device check of issue 20: WebGPU against WASM for every shipped model on the lent GPU.
# Prepare here (once): python -m bench.webgpu --pack .device/webgpu   (34 MB: Node, Dawn, onnxruntime-web)
# Run there: the device tool's `run` with carry [".device"] and the command `sh tools/device_webgpu.sh`.
set -e
for f in .device/webgpu/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 -m bench.webgpu --unpack .device/webgpu --sizes 512 2048 --runs 5 --threads "$(nproc)" \
  --json "${OUT:-.}/webgpu.json" | tee "${OUT:-.}/webgpu.md"
