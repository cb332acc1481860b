#!/usr/bin/env bash
# On a lent NVIDIA device machine (../shared/device/README.md): the shared
# script first (convpool's GPU benchmark and cuDNN's on the same workloads),
# then convpool again with the other kernel choices (4x4 conv register
# blocks, the conv kernel's staging, Winograd, tiled pooling, host-widened
# u8 calls) on the workloads they change, so that one device session settles those
# defaults (each conv workload with 8x8 and with 4x4 blocks forced and with
# each staging, the 3x3 layers with Winograd, overlapping pooling with the
# tiled kernel, the chain suite with u8 widened on the host). Prepare as that
# README says, plus:
#
#   cp benches/device-bench.sh benches/cudnn_v2.py .devrun/
#
# (cudnn_v2.py times cuDNN on the v2 workloads, cnn_depthwise3x3 and
# cnn_conv3x3_bias_relu, which the shared cudnn_bench.py does not know;
# convpool's `bench --suite all` above already includes them, and the three
# chain workloads: chain_seed_u8_resident, the seed's conv then pool of
# 8-bit images uploaded as their own bytes, widened on the device and kept
# there; chain_seed_u8_host, the same as two host calls, the first of the
# 8-bit images (widened on the device chunk by chunk); and
# chain_seed_f32_host, two f32 host calls.)
#
# and run `bash .devrun/device-bench.sh` with carry [".gl", ".devrun"].
# Most likely 3 to 4 minutes. The timeouts (below and in gpu-bench.sh) add
# up to more than one 10-minute command, but each run writes its files
# under $OUT as it ends, and they come back even from a command cut short.
set -u
bash .devrun/gpu-bench.sh
# The shared script sets these for itself only.
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
out=${OUT:-/tmp/out}
conv=(--workload cnn_conv3x3_b64 --workload cnn_conv3x3 --workload cnn_conv1x1 --workload cnn_stem)
alt() { # NAME ENV... -- ARGS...: convpool's GPU benchmark with ENV set, into $out/convpool-gpu-NAME.*
  local name=$1; shift
  local envs=(); while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  env "${envs[@]}" timeout 40 ./.devrun/convpool bench --device gpu "$@" --json \
    >"$out/convpool-gpu-$name.json" 2>"$out/convpool-gpu-$name.log"
  echo "convpool bench (${envs[*]}) exit $?"; tail -n 6 "$out/convpool-gpu-$name.log"
}
alt block8 CONVPOOL_CONV_BLOCK=8 -- "${conv[@]}"
alt block4 CONVPOOL_CONV_BLOCK=4 -- "${conv[@]}"
# The tiled conv kernel's staging (buffers x steps per slice): the default
# on a hardware GPU is the most pipelined that fits (2x16 where the
# workgroup memory allows); these runs say whether that is right.
alt staging1x8 CONVPOOL_CONV_STAGING=1x8 -- "${conv[@]}"
alt staging2x8 CONVPOOL_CONV_STAGING=2x8 -- "${conv[@]}"
alt staging2x16 CONVPOOL_CONV_STAGING=2x16 -- "${conv[@]}"
alt staging1x32 CONVPOOL_CONV_STAGING=1x32 -- "${conv[@]}"
alt staging2x32 CONVPOOL_CONV_STAGING=2x32 -- "${conv[@]}"
# Winograd F(2x2, 3x3) on the 3x3 layers (asked for only: on lavapipe it
# beats the implicit GEMM; this run says whether it does on the card).
alt winograd CONVPOOL_CONV_WINOGRAD=on -- --workload cnn_conv3x3_b64 --workload cnn_conv3x3 --workload cnn_conv3x3_bias_relu
# Every staging once more in verify mode (the GPU result against the CPU
# reference, SPEC's tolerance) on a cnn_conv3x3 batch and a ragged RGB one,
# since the bench does not check values: 2x32 fits only a device with more
# than 32 KiB of workgroup memory, so no CI run has executed it.
if python3 -c "import numpy" 2>/dev/null; then
  python3 - "$out" <<'PY'
import sys, numpy as np
r = np.random.default_rng(0)
out = sys.argv[1]
np.save(f"{out}/v_x.npy", r.standard_normal((8, 56, 56, 64)).astype(np.float32))
np.save(f"{out}/v_k.npy", r.standard_normal((3, 3, 64, 64)).astype(np.float32))
np.save(f"{out}/v_rgb.npy", r.standard_normal((3, 61, 37, 3)).astype(np.float32))
np.save(f"{out}/v_krgb.npy", r.standard_normal((7, 7, 3, 72)).astype(np.float32))
PY
  for s in 1x8 2x8 1x16 2x16 1x32 2x32; do
    CONVPOOL_CONV_STAGING=$s timeout 60 ./.devrun/convpool conv --images "$out/v_x.npy" --kernels "$out/v_k.npy" \
      --padding same --device gpu --verify --out "$out/v_y.npy" >"$out/verify-$s.log" 2>&1
    a=$?
    CONVPOOL_CONV_STAGING=$s timeout 60 ./.devrun/convpool conv --images "$out/v_rgb.npy" --kernels "$out/v_krgb.npy" \
      --padding same --stride 2 --device gpu --verify --out "$out/v_y.npy" >>"$out/verify-$s.log" 2>&1
    echo "verify staging $s: exit $a, $?"
  done
  CONVPOOL_CONV_WINOGRAD=on timeout 60 ./.devrun/convpool conv --images "$out/v_x.npy" --kernels "$out/v_k.npy" \
    --padding same --device gpu --verify --out "$out/v_y.npy" >"$out/verify-winograd.log" 2>&1
  echo "verify winograd: exit $?"
  rm -f "$out"/v_*.npy
fi
# RGB layers (the stem, the seed's colour images) read as four channels, a
# zero fourth appended on the device (the default on a hardware GPU), or
# with three scalar loads per pixel.
alt rgbscalar CONVPOOL_CONV_RGB=scalar -- --workload cnn_stem --workload seed_multi
# Host calls of u8 images widened on the device (the default on a discrete
# GPU) or on the host first.
alt widenhost CONVPOOL_GPU_WIDEN=host -- --suite chain
alt tiledpool CONVPOOL_POOL_KERNEL=tiled -- --workload cnn_maxpool
timeout 90 python3 .devrun/cudnn_v2.py --json "$out/cudnn-v2.json" 2>&1 | tee "$out/cudnn-v2.txt"
