#!/usr/bin/env bash
# On a lent NVIDIA device machine (../shared/device/README.md): the shared
# script first (convpool's GPU benchmark and cuDNN's on the same workloads),
# then convpool again with the other kernel choices (4x4 conv register
# blocks, tiled pooling) on the workloads they change, so that one device
# session settles both defaults. Prepare as that README says, plus:
#
#   cp benches/device-bench.sh .devrun/
#
# and run `bash .devrun/device-bench.sh` with carry [".gl", ".devrun"].
# About 8 minutes at most (the timeouts below and in gpu-bench.sh).
set -u
bash .devrun/gpu-bench.sh
# The shared script sets these for itself only.
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
out=${OUT:-/tmp/out}
CONVPOOL_CONV_BLOCK=4 CONVPOOL_POOL_KERNEL=tiled timeout 120 ./.devrun/convpool bench --device gpu \
  --workload cnn_conv3x3_b64 --workload cnn_conv3x3 --workload cnn_conv1x1 --workload cnn_stem \
  --workload cnn_maxpool --json >"$out/convpool-gpu-alt.json" 2>"$out/convpool-gpu-alt.log"
echo "convpool bench (CONVPOOL_CONV_BLOCK=4 CONVPOOL_POOL_KERNEL=tiled) exit $?"
tail -n 12 "$out/convpool-gpu-alt.log"
