#!/usr/bin/env bash
# Times each workload with an earlier build and with this build forced to
# each instruction set the CPU has, one process right after the other, for
# ROUNDS rounds; prints the min and the median of the rounds' minima (ms).
#
#   benches/isa_side_by_side.sh BASE_BINARY ROUNDS WORKLOAD...
#
# e.g. with e32a9d6 built in a worktree:
#   git worktree add /tmp/base e32a9d6 && (cd /tmp/base && cargo build --release)
#   benches/isa_side_by_side.sh /tmp/base/target/release/convpool 5 seed_multi cnn_stem
set -euo pipefail
base=$1; rounds=$2; shift 2
new="$(dirname "$0")/../target/release/convpool"
tmp=$(mktemp -d)
isas=$(python3 - <<'PY'
import re
flags = open('/proc/cpuinfo').read()
isas = ['portable']
if re.search(r'\bavx2\b', flags) and re.search(r'\bfma\b', flags):
    isas.append('avx2')
if re.search(r'\bavx512f\b', flags):
    isas.append('avx512')
print(' '.join(isas[1:]))
PY
)
for w in "$@"; do
  for r in $(seq 1 "$rounds"); do
    "$base" bench --quick --device cpu --repeats 15 --workload "$w" --peak-gflops 1 --bandwidth-gbps 1 \
      --json "$tmp/j.json" >/dev/null 2>&1
    echo "$w base $(python3 -c "import json; print(json.load(open('$tmp/j.json'))[0]['min_s'] * 1e3)")" >>"$tmp/t"
    for isa in $isas; do
      CONVPOOL_CPU_ISA=$isa "$new" bench --quick --device cpu --repeats 15 --workload "$w" --peak-gflops 1 \
        --bandwidth-gbps 1 --json "$tmp/j.json" >/dev/null 2>&1
      echo "$w $isa $(python3 -c "import json; print(json.load(open('$tmp/j.json'))[0]['min_s'] * 1e3)")" >>"$tmp/t"
    done
  done
done
python3 - "$tmp/t" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    w, v, t = line.split()
    d[w][v].append(float(t))
for w, vs in d.items():
    b = vs.pop('base')
    cols = [f"base {min(b):.3f}"]
    for v, t in vs.items():
        cols.append(f"{v} {min(t):.3f} (base/{v} min {min(b) / min(t):.2f}, median {statistics.median(b) / statistics.median(t):.2f})")
    print(f"{w:20} " + "  ".join(cols))
PY
rm -r "$tmp"
