#!/usr/bin/env bash
# Side-by-side timing on a shared machine: per workload, onnxruntime (the
# baseline script) and convpool run back to back, twice, in both orders, so
# that a change in the machine's load between the two sides shows up as a
# disagreement between the passes instead of as a ratio.
#
#   benches/side_by_side.sh OUT_DIR [WORKLOAD...]
#   python3 benches/compare.py --dir OUT_DIR --peaks=GFLOPS,GBPS
#
# Needs the baseline's Python environment in $BASELINE_PYTHON (default
# /tmp/bl/bin/python, see benches/RESULTS.md) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benches/side_by_side.sh OUT_DIR [WORKLOAD...]}
shift
workloads=("$@")
if [ ${#workloads[@]} -eq 0 ]; then
  workloads=(seed_gray_valid seed_gray_strided seed_channels_same seed_multi seed_pool_max seed_pool_avg
    cnn_conv3x3 cnn_conv1x1 cnn_stem cnn_maxpool image_blur)
fi
python=${BASELINE_PYTHON:-/tmp/bl/bin/python}
engines=onnxruntime,onnxruntime_nhwc,onnxruntime_ext,onnxruntime_t1,onnxruntime_t1_nhwc
mkdir -p "$out"
baseline() {
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$python" ../shared/bench/baseline_bench.py --quick --no-peaks \
    --workloads "$1" --engines "$engines" --json "$out/$1-$2-base.json" >"$out/$1-$2-base.log" 2>&1
}
convpool() {
  # Peaks are not measured here (compare.py takes them with --peaks).
  ./target/release/convpool bench --quick --device cpu --repeats 7 --peak-gflops 1 --bandwidth-gbps 1 \
    --workload "$1" --json "$out/$1-$2-cpu.json" >/dev/null
}
for w in "${workloads[@]}"; do
  baseline "$w" a
  convpool "$w" a
  convpool "$w" b
  baseline "$w" b
done
