#!/usr/bin/env python3
"""Times PyTorch (cuDNN) on convpool's v2 workloads, which ../shared/device/cudnn_bench.py
does not know: cnn_depthwise3x3 (8x112x112x32, groups=32, 3x3, same) and
cnn_conv3x3_bias_relu (cnn_conv3x3 with bias and ReLU). Same method as that
script: channels_last, cudnn.benchmark, median of CUDA-event timings after
warm-up, FP32 with TF32 off (and on, for reference).

Usage: python3 cudnn_v2.py [--device cuda|cpu] [--json OUT.json]
(--device cpu only checks the script where no GPU is lent; its times are
wall clock, not comparable with the GPU figures.)
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

# name: (m, h, w, c, kh, kw, nc, groups, bias_relu)
WORKLOADS = {
    "cnn_depthwise3x3": (8, 112, 112, 32, 3, 3, 32, 32, False),
    "cnn_conv3x3_bias_relu": (8, 56, 56, 64, 3, 3, 64, 1, True),
}


def time_one(spec, device, repeats=20):
    m, h, w, c, kh, kw, nc, groups, bias_relu = spec
    x = torch.randn(m, c, h, w, device=device).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(nc, c // groups, kh, kw, device=device).contiguous(memory_format=torch.channels_last)
    b = torch.randn(nc, device=device) if bias_relu else None

    def run():
        y = F.conv2d(x, wt, b, padding="same", groups=groups)
        return F.relu(y) if bias_relu else y

    for _ in range(3):
        y = run()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            y = run()
            e.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(e) / 1e3)
        else:
            start = time.perf_counter()
            y = run()
            times.append(time.perf_counter() - start)
    times.sort()
    sec = times[len(times) // 2]
    _, _, oh, ow = y.shape
    gflops = 2.0 * m * oh * ow * kh * kw * (c // groups) * nc / sec / 1e9
    gbps = 4.0 * (x.numel() + y.numel() + wt.numel()) / sec / 1e9
    return {"m": m, "seconds_median": sec, "seconds_min": times[0], "gflops": gflops, "gbps": gbps}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--json")
    a = p.parse_args()
    name = torch.cuda.get_device_properties(0).name if a.device == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}
    torch.backends.cudnn.benchmark = True
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        key = "tf32" if tf32 else "fp32"
        result[key] = {n: time_one(s, a.device) for n, s in WORKLOADS.items()}
        for n, r in result[key].items():
            print(f"{key:5} {n:22} m={r['m']:<3} {r['seconds_median'] * 1e3:9.3f} ms  "
                  f"{r['gflops']:.0f} GFLOP/s  {r['gbps']:.0f} GB/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
