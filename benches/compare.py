#!/usr/bin/env python3
"""Side-by-side table of one benchmark session, as Markdown.

    python3 benches/compare.py BASELINE.json CPU.json [GPU.json] [--peaks=GFLOPS,GBPS]
    python3 benches/compare.py --dir OUT_DIR --peaks=GFLOPS,GBPS   (benches/side_by_side.sh)

BASELINE.json comes from ../shared/bench/baseline_bench.py --json, CPU.json and
GPU.json from `convpool bench --json PATH` run right after it on the same
machine with the same --quick setting. Times are the best of the timed runs
on both sides (the baseline script reports best-of-N, so convpool's minimum,
not its median, is the like-for-like figure); ratios are onnxruntime time /
convpool time (above 1: convpool is faster). The roofline
column uses the peaks given with --peaks (FMA GFLOP/s, copy GB/s), else the
ones convpool measured.
"""
import json
import os
import sys


ORDER = [
    "seed_gray_valid", "seed_gray_strided", "seed_channels_same", "seed_multi", "seed_pool_max", "seed_pool_avg",
    "cnn_conv3x3", "cnn_conv1x1", "cnn_stem", "cnn_maxpool", "image_blur", "cnn_conv3x3_b64",
]
# The onnxruntime variants the baseline script times (see side_by_side.sh).
ORT_VARIANTS = ["onnxruntime", "onnxruntime_nhwc", "onnxruntime_ext", "onnxruntime_t1", "onnxruntime_t1_nhwc"]


def side_by_side(folder, peaks):
    """The table of benches/side_by_side.sh: one row per workload and pass."""
    fma, bw = (float(v) for v in peaks.split(","))
    print("| workload | pass | convpool CPU ms | % roofline | ORT 2t NHWC ms | ratio | best ORT ms (variant) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    names = sorted({f.rsplit("-", 2)[0] for f in os.listdir(folder) if f.endswith("-cpu.json")}, key=ORDER.index)
    for name in names:
        for p, order in (("a", "ORT, then convpool"), ("b", "convpool, then ORT")):
            try:
                b = json.load(open(os.path.join(folder, f"{name}-{p}-base.json")))[name]
                r = json.load(open(os.path.join(folder, f"{name}-{p}-cpu.json")))[0]
            except (OSError, KeyError, IndexError):
                continue
            t = r["min_s"]
            roof = max(r["flops"] / (fma * 1e9), r["min_bytes"] / (bw * 1e9))
            ort = b.get("onnxruntime_nhwc")
            best = min((b[v], v) for v in ORT_VARIANTS if isinstance(b.get(v), (int, float)))
            print(
                f"| {name} | {order} | {t * 1e3:.2f} | {100 * roof / t:.0f} % | {ort * 1e3:.2f} | {ort / t:.2f}x "
                f"| {best[0] * 1e3:.2f} ({best[1]}) | {best[0] / t:.2f}x |"
            )



def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--peaks")]
    peaks = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--peaks=")), None)
    if args and args[0] == "--dir":
        side_by_side(args[1], peaks or "200,25")
        return
    base = json.load(open(args[0]))
    cpu = {r["workload"]: r for r in json.load(open(args[1]))}
    gpu = {r["workload"]: r for r in json.load(open(args[2]))} if len(args) > 2 else {}
    print("| workload | m | convpool CPU ms | % roofline | ORT 2t NHWC ms | ratio | best ORT ms (variant) | ratio | convpool GPU ms (kernel ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in cpu.items():
        b = base.get(name, {})
        ort = b.get("onnxruntime_nhwc")
        best = min(((b[v], v) for v in ORT_VARIANTS if isinstance(b.get(v), (int, float))), default=None)
        t = r["min_s"]
        ms = t * 1e3
        fraction = r["roofline_s"] / t
        if peaks:
            fma, bw = (float(v) for v in peaks.split(","))
            fraction = max(r["flops"] / (fma * 1e9), r["min_bytes"] / (bw * 1e9)) / t
        cells = [name, str(r["m"]), f"{ms:.2f}", f"{100 * fraction:.0f} %"]
        cells += [f"{ort * 1e3:.2f}", f"{ort / t:.2f}x"] if ort else ["-", "-"]
        cells += [f"{best[0] * 1e3:.2f} ({best[1]})", f"{best[0] / t:.2f}x"] if best else ["-", "-"]
        g = gpu.get(name)
        if g:
            k = g.get("kernel_median_s")
            cells.append(f"{g['min_s'] * 1e3:.1f}" + (f" ({k * 1e3:.1f})" if k else ""))
        else:
            cells.append("-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
