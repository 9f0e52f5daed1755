#!/bin/sh
# The one device check of issue 20: WebGPU against WASM for every shipped model on the lent GPU.
# Prepare here (once): python -m bench.webgpu --pack .device/webgpu   (32 MB: Node, Dawn, onnxruntime-web)
# Run there: the device tool's `run` with carry [".device"] and the command `sh tools/device_webgpu.sh`.
# The shipped models (114 MB) do not fit the device's 64 MiB per call beside the pack (33 MB): leave
# them out of what travels for the call (git rm --cached -q models/*.onnx; echo '/models/*.onnx'
# >> .git/info/exclude; afterwards git reset -q -- models and drop that line) and carry up to 31 MB
# of them per call as .device/models*.tar.xz (cd models && tar -cf - FILE... | xz -9e >
# ../.device/models.tar.xz): rows of files not there say so. Two or three calls cover them all.
# RUNS (default 5) sets the timed runs per row; each row's first run took ~30 s on the H200.
set -e
for f in .device/models*.tar.xz; do
  if [ -f "$f" ]; then tar -C models -xJf "$f"; fi
done
for f in .device/webgpu/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
ICD=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json 2>/dev/null | head -1)
echo "Vulkan ICD: ${ICD:-none found}"; ldconfig -p | grep -E "libvulkan|libGLdispatch|libGLX_nvidia" || true
if [ -n "$ICD" ]; then
  export VK_DRIVER_FILES="$ICD" VK_ICD_FILENAMES="$ICD"
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
ls models/*.onnx
python3 -m bench.webgpu --unpack .device/webgpu --sizes 512 2048 --runs "${RUNS:-5}" --threads "$(nproc)" \
  --json "${OUT:-.}/webgpu.json" | tee "${OUT:-.}/webgpu.md"
