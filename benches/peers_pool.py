#!/usr/bin/env python3
"""seed_pool_max and seed_pool_avg of `convpool bench --quick` (1000x32x32x3,
2x2 windows at stride 2) in one process: convpool's Python package (its CPU
engine) and onnxruntime (MaxPool / AveragePool on the NCHW tensor, its
native layout, 2 threads), alternating R rounds (default 8) of best-of-N
(default 100) each, so both see the same machine at the same time; prints
each round's ratio (above 1: convpool is faster) and the median. The shared
scripts time these two workloads one after the other, minutes apart.

  python peers_pool.py [--m M] [--rounds R] [--repeats N]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers_v2 import best  # noqa: E402  (best of N, as every peer script)


def main(argv):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    import convpool

    def arg(name, default):
        return int(argv[argv.index(name) + 1]) if name in argv else default

    m, rounds, rep = arg("--m", 1000), arg("--rounds", 8), arg("--repeats", 100)
    x = np.random.default_rng(0).standard_normal((m, 32, 32, 3)).astype(np.float32)
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    for mode, op in (("max", "MaxPool"), ("avg", "AveragePool")):
        node = helper.make_node(op, ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
        graph = helper.make_graph(
            [node],
            "pool",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xc.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, 3, 16, 16])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        want = sess.run(None, {"x": xc})[0].transpose(0, 2, 3, 1)
        got = convpool.pool2d(x, window=(2, 2), stride=(2, 2), mode=mode, device="cpu")
        assert np.allclose(got, want, atol=1e-6), f"{mode}: convpool and onnxruntime disagree"
        ratios = []
        for r in range(rounds):
            a = best(lambda: convpool.pool2d(x, window=(2, 2), stride=(2, 2), mode=mode, device="cpu"), rep)
            b = best(lambda: sess.run(None, {"x": xc}), rep)
            ratios.append(b / a)
            print(f"seed_pool_{mode} round {r + 1}: convpool {a * 1e3:.3f} ms, onnxruntime NCHW {b * 1e3:.3f} ms, {b / a:.2f}x")
        print(f"seed_pool_{mode} median over {rounds} rounds: {np.median(ratios):.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
