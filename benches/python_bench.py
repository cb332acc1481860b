#!/usr/bin/env python3
"""What the Python layer costs, beside the exercise's numpy loops and scipy.

For each seed workload of `convpool bench` (same shapes; --quick: the
quick batch sizes), in one process, side by side:
  rust     the Rust call alone, timed inside Rust (Engine._time_conv2d /
           _time_pool: float32 inputs already converted, no Python)
  python   the same call from Python (Engine.conv2d / pool2d on float32)
  seed     the exercise's function on the exercise's dtypes (uint8 colour
           images, int64 kernels: includes the conversion to float32)
  numpy    the exercise's loops (one output pixel at a time, vectorised
           over the batch), float64
  scipy    scipy.signal.correlate / scipy.ndimage filters, then the
           stride's slice
Medians of --repeats runs, the rust and python calls alternated run by run
(numpy and scipy: fewer runs, they are slow). Prints a
table; --json writes the figures.

    python benches/python_bench.py --quick --json py.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

import convpool

WORKLOADS = [
    # name, images (m, h, w, c), quick m, kernels (kh, kw, c, nc) or pool, padding, stride
    ("seed_gray_valid", (50000, 28, 28, 1), 5000, (3, 3, 1, 1), "valid", 1),
    ("seed_gray_strided", (50000, 28, 28, 1), 5000, (3, 3, 1, 1), (1, 1), 2),
    ("seed_channels_same", (10000, 32, 32, 3), 1000, (3, 3, 3, 1), "same", 1),
    ("seed_multi", (10000, 32, 32, 3), 1000, (3, 3, 3, 16), "same", 1),
    ("seed_pool_max", (10000, 32, 32, 3), 1000, "max", None, 2),
    ("seed_pool_avg", (10000, 32, 32, 3), 1000, "avg", None, 2),
]


def side_by_side(rust_once, python_once, repeats):
    """Medians of the Rust-timed call and the Python call, alternated run
    by run (after one warm-up of each), so both see the same machine and
    the same allocator state."""
    rust_once()
    python_once()
    rust, python = [], []

    def timed_python():
        start = time.perf_counter()
        python_once()
        python.append(time.perf_counter() - start)

    for i in range(repeats):
        # Which goes first alternates too: the first of a pair inherits the
        # allocator state the previous pair left.
        if i % 2:
            timed_python()
            rust.append(rust_once())
        else:
            rust.append(rust_once())
            timed_python()
    return statistics.median(rust), statistics.median(python)


def fixed_cost(engine):
    """What the Python layer adds to one call, in microseconds: tiny
    inputs, so the computation is negligible (median of 5 x 2000 calls)."""
    x = np.zeros((1, 4, 4, 3), np.float32)
    k = np.ones((3, 3, 3, 1), np.float32)

    def per_call(fn, n=2000):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n

    out = {}
    for name, py, rust in (
        ("conv2d", lambda: engine.conv2d(x, k, padding="same", stride=1),
         lambda: statistics.median(engine._time_conv2d(x, k, 2000, padding="same", stride=1))),
        ("pool2d", lambda: engine.pool2d(x, window=2, stride=2, mode="max"),
         lambda: statistics.median(engine._time_pool(x, (2, 2), (2, 2), "max", 2000))),
    ):
        py()
        out[name] = 1e6 * (statistics.median(per_call(py) for _ in range(5)) - statistics.median(rust() for _ in range(5)))
    return out


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pads_of(padding, h, w, kh, kw, s):
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th = max((-(-h // s) - 1) * s + kh - h, 0)
        tw = max((-(-w // s) - 1) * s + kw - w, 0)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = padding
    return ph, ph, pw, pw


def numpy_loops(x, k, pads, s):
    pt, pb, pl, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    m, hp, wp, _ = xp.shape
    kh, kw, _, nc = k.shape
    oh, ow = (hp - kh) // s + 1, (wp - kw) // s + 1
    out = np.zeros((m, oh, ow, nc))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * s:i * s + kh, j * s:j * s + kw, :]
            for n in range(nc):
                out[:, i, j, n] = np.sum(patch * k[..., n], axis=(1, 2, 3))
    return out


def numpy_pool(x, mode, s):
    m, h, w, c = x.shape
    oh, ow = (h - 2) // s + 1, (w - 2) // s + 1
    out = np.zeros((m, oh, ow, c))
    f = np.max if mode == "max" else np.mean
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = f(x[:, i * s:i * s + 2, j * s:j * s + 2, :], axis=(1, 2))
    return out


def scipy_conv(x, k, pads, s):
    from scipy import signal
    pt, pb, pl, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    outs = [signal.correlate(xp, k[None, ..., n], mode="valid")[:, ::s, ::s, 0] for n in range(k.shape[3])]
    return np.stack(outs, axis=-1)


def scipy_pool(x, mode, s):
    from scipy import ndimage
    f = ndimage.maximum_filter if mode == "max" else ndimage.uniform_filter
    # Windows anchored at their first cell: origin -1 for an even size 2.
    y = f(x, size=(1, 2, 2, 1), origin=(0, -1, -1, 0), mode="constant")
    return y[:, :x.shape[1] - 1:s, :x.shape[2] - 1:s]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick batch sizes of `convpool bench --quick`")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-peers", action="store_true", help="skip the numpy loops and scipy")
    ap.add_argument("--json")
    args = ap.parse_args()
    engine = convpool.Engine(args.device)
    rng = np.random.default_rng(0)
    rows = []
    print(f"# {engine.describe()}; CPU {cpu_name()}, {os.cpu_count()} threads; numpy {np.__version__}")
    print(f"{'workload':<20}{'rust ms':>10}{'python ms':>11}{'overhead':>10}{'seed ms':>10}{'numpy ms':>11}"
          f"{'scipy ms':>10}")
    for name, (m, h, w, c), quick_m, op, padding, s in WORKLOADS:
        m = quick_m if args.quick else m
        colour = c == 3
        x_seed = rng.integers(0, 256, (m, h, w, c), dtype=np.uint8) if colour else rng.random((m, h, w, c),
                                                                                            dtype=np.float32)
        x = x_seed.astype(np.float32)
        row = {"workload": name, "images": [m, h, w, c]}
        if isinstance(op, tuple):
            k_seed = rng.integers(-2, 3, op)  # int64, as np.array([[1, 0, -1], ...]) gives
            k = k_seed.astype(np.float32)
            seed_pad = padding if padding == "valid" or isinstance(padding, tuple) else "same"
            conv_pad = "same" if padding == "same" else padding
            row["rust_s"], row["python_s"] = side_by_side(
                lambda: engine._time_conv2d(x, k, 1, padding=conv_pad, stride=s)[0],
                lambda: engine.conv2d(x, k, padding=conv_pad, stride=s), args.repeats)
            if c == 1:
                seed = lambda: engine.convolve_grayscale(x_seed[..., 0], k_seed[:, :, 0, 0], padding=seed_pad,
                                                         stride=(s, s))
            elif op[3] == 1:
                seed = lambda: engine.convolve_channels(x_seed, k_seed[..., 0], padding=seed_pad, stride=(s, s))
            else:
                seed = lambda: engine.convolve(x_seed, k_seed, padding=seed_pad, stride=(s, s))
            # The seed's 'same' is larger than TF's: it times that call as
            # the exercise's users make it.
            row["seed_s"] = median_time(seed, args.repeats)
            if not args.no_peers:
                pads = pads_of(padding, h, w, op[0], op[1], s)
                row["numpy_s"] = median_time(lambda: numpy_loops(x, k, pads, s), 1)
                row["scipy_s"] = median_time(lambda: scipy_conv(x, k, pads, s), 3)
        else:
            row["rust_s"], row["python_s"] = side_by_side(
                lambda: engine._time_pool(x, (2, 2), (s, s), op, 1)[0],
                lambda: engine.pool2d(x, window=2, stride=s, mode=op), args.repeats)
            row["seed_s"] = median_time(lambda: engine.pool(x_seed, (2, 2), (s, s), mode=op), args.repeats)
            if not args.no_peers:
                row["numpy_s"] = median_time(lambda: numpy_pool(x, op, s), 1)
                row["scipy_s"] = median_time(lambda: scipy_pool(x, op, s), 3)
        row["overhead"] = row["python_s"] / row["rust_s"] - 1
        rows.append(row)
        ms = lambda key: f"{row[key] * 1e3:.2f}" if key in row else "-"
        print(f"{name:<20}{ms('rust_s'):>10}{ms('python_s'):>11}{row['overhead'] * 100:>9.1f}%{ms('seed_s'):>10}"
              f"{ms('numpy_s'):>11}{ms('scipy_s'):>10}")
    fixed = fixed_cost(engine)
    print("fixed cost of the Python layer per call (tiny inputs): "
          + ", ".join(f"{k} {v:.1f} us" for k, v in fixed.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine": engine.describe(), "cpu": cpu_name(), "threads": os.cpu_count(),
                       "quick": args.quick, "repeats": args.repeats, "rows": rows,
                       "fixed_cost_us": fixed}, f, indent=1)


if __name__ == "__main__":
    main()
