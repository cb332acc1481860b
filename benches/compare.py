#!/usr/bin/env python3
"""Side-by-side table of one benchmark session, as Markdown.

    python3 benches/compare.py BASELINE.json CPU.json [GPU.json] [--peaks GFLOPS,GBPS]

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
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--peaks")]
    peaks = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--peaks=")), None)
    base = json.load(open(args[0]))
    cpu = {r["workload"]: r for r in json.load(open(args[1]))}
    gpu = {r["workload"]: r for r in json.load(open(args[2]))} if len(args) > 2 else {}
    ort_variants = ["onnxruntime", "onnxruntime_nhwc", "onnxruntime_ext", "onnxruntime_t1", "onnxruntime_t1_nhwc"]
    print("| workload | m | convpool CPU ms | % roofline | ORT 2t NHWC ms | ratio | best ORT ms (variant) | ratio | convpool GPU ms (kernel ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in cpu.items():
        b = base.get(name, {})
        ort = b.get("onnxruntime_nhwc")
        best = min(((b[v], v) for v in ort_variants if isinstance(b.get(v), (int, float))), default=None)
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
