#!/usr/bin/env python3
"""Blur and pool a batch of images too large for one machine, on a dask cluster.

    # on a real cluster (convpool installed on every worker):
    python examples/dask_cluster.py --scheduler tcp://scheduler:8786 --images 20000
    # or on this machine, with a LocalCluster of worker processes:
    python examples/dask_cluster.py --images 256

Each worker process builds one convpool engine the first time a chunk
reaches it (`convpool.engine(device)`, cached per process) and reuses it for
every chunk after: a GPU is opened once per worker, not once per task. The
images are generated on the workers (dask.array.random), so nothing large
crosses from this process; the result is reduced to a few numbers here.
"""

import argparse

import dask.array as da
import numpy as np
from dask.distributed import Client, LocalCluster

import convpool.dask as cdask


def gaussian(size, sigma):
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r ** 2) / (2 * sigma ** 2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scheduler", help="address of a running dask scheduler (default: a LocalCluster here)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=256, help="height and width of each image")
    ap.add_argument("--device", default=None, help="each worker's convpool device: auto (default), cpu or gpu")
    args = ap.parse_args()
    cluster = None if args.scheduler else LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    with Client(args.scheduler or cluster) as client:
        print(client)
        # 64 images a chunk, each image split into 4 bands of rows: the
        # blur's halo (7 rows) travels between neighbouring bands.
        x = da.random.random((args.images, args.size, args.size, 3), chunks=(64, args.size // 4, -1, 3))
        x = x.astype(np.float32)
        kernel = np.zeros((15, 15, 1, 3), np.float32)
        kernel[:, :, 0, :] = gaussian(15, 5)[..., None]
        blurred = cdask.conv2d(x, kernel, padding="same", padding_mode="reflect", groups=3, device=args.device)
        pooled = cdask.pool2d(blurred, window=2, mode="max", device=args.device)
        print("output:", pooled)
        mean, top = client.compute([pooled.mean(), pooled.max()], sync=True)
        print(f"mean {mean:.6f}, max {top:.6f}")
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    main()
