#!/usr/bin/env python3
"""The seed's pipeline from Python: two host calls against a DeviceArray chain.

The chain workload of `convpool bench --suite chain` (uint8 images (m, 32,
32, 3), a 3 x 3 conv to 16 channels with 'same' padding and relu, then a 2 x
2 max pool), in one process, on each device asked for:
  host     convpool.conv2d then convpool.pool2d on numpy arrays (the
           intermediate comes back to the host and goes out again)
  chain    upload, conv2d, pool2d on the DeviceArray, download
The two alternate run by run (which goes first alternates too); medians of
--repeats runs after one warm-up each. The results are compared bit for bit
before timing.

    python benches/python_chain.py --device cpu --device gpu --repeats 15
"""

import argparse
import json
import statistics
import time

import numpy as np

import convpool


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", action="append", help="cpu | gpu (repeatable; default both where a GPU exists)")
    ap.add_argument("--m", type=int, default=1000, help="batch size (the quick batch of the chain workload)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--json")
    args = ap.parse_args()
    devices = args.device or ["cpu", "gpu"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.m, 32, 32, 3), dtype=np.uint8)
    kernels = rng.standard_normal((3, 3, 3, 16)).astype(np.float32) / 27
    conv = dict(padding="same", activation="relu")
    rows = []
    for device in devices:
        try:
            engine = convpool.Engine(device)
        except RuntimeError as e:
            print(f"{device}: skipped ({e})")
            continue

        def host():
            return engine.pool2d(engine.conv2d(images, kernels, **conv), window=2)

        def chain():
            x = engine.upload(images)
            return engine.pool2d(engine.conv2d(x, kernels, **conv), window=2).download()

        assert np.array_equal(host(), chain()), "the chain differs from the host calls"
        times = {"host": [], "chain": []}
        for i in range(args.repeats):
            order = [("host", host), ("chain", chain)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        h, c = statistics.median(times["host"]), statistics.median(times["chain"])
        rows.append({"device": device, "describe": engine.describe(), "m": args.m,
                     "host_ms": h * 1e3, "chain_ms": c * 1e3, "host_over_chain": h / c})
        print(f"{device:4s} m={args.m}: host calls {h * 1e3:8.2f} ms, chain {c * 1e3:8.2f} ms, "
              f"{h / c:.2f}x ({engine.describe()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
