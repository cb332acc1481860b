#!/usr/bin/env python3
"""Times the peers on the two v2 workloads of `convpool bench` that the
scripts in ../shared/bench do not know: cnn_depthwise3x3 (depthwise 3x3,
stride 1, same, 112x112x32) and cnn_conv3x3_bias_relu (cnn_conv3x3 with a
bias and relu), at the batch of a `convpool bench --json` file run just
before, 2 threads, best of N runs (as the shared scripts do).

  python peers_v2.py time CONVPOOL.json --out PEERS.json [--repeats N]
      PyTorch (groups=c, channels_last and NCHW; conv2d + bias + relu) and
      onnxruntime (Conv group=c; Conv + Relu, fused by its optimiser; NCHW
      graph and NHWC graph with transposes), whichever of them imports.
  python peers_v2.py compare CONVPOOL.json PEERS.json [PEERS2.json ...]
      per workload: convpool's best time, the best peer, the ratio (above 1:
      convpool is faster), the memory-roofline fraction of the depthwise
      layer and the epilogue's cost over the plain cnn_conv3x3.
  python peers_v2.py interleaved [--m M] [--rounds R] [--repeats N]
      cnn_depthwise3x3 (batch M, default 2: the --quick batch) in one
      process: convpool's Python package (its CPU engine) and PyTorch
      (channels_last), alternating R rounds (default 10) of best-of-N
      (default 100) each, so both see the same machine at the same time;
      prints each round's ratio (above 1: convpool is faster) and the
      median over the rounds. The Python call's own cost is in both.
"""
import json
import sys
import time

import numpy as np

THREADS = 2
# name: (h, w, c, nc, groups, bias_relu)
W = {
    "cnn_depthwise3x3": (112, 112, 32, 32, 32, False),
    "cnn_conv3x3_bias_relu": (56, 56, 64, 64, 1, True),
    "cnn_conv3x3": (56, 56, 64, 64, 1, False),
}


def best(f, rep):
    f()
    ts = []
    for _ in range(rep):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def data(m, h, w, c, nc, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, h, w, c)).astype(np.float32)
    k = rng.standard_normal((3, 3, c // groups, nc)).astype(np.float32)  # HWIO
    b = rng.standard_normal(nc).astype(np.float32)
    return x, k, b


def time_torch(m, spec, rep):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    h, w, c, nc, groups, bias_relu = spec
    x, k, b = data(m, h, w, c, nc, groups)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last view of NHWC memory
    xc = xt.contiguous()
    wt = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()
    bt = torch.from_numpy(b) if bias_relu else None

    def run(inp, last):
        def f():
            y = F.conv2d(inp, wt, bt, stride=1, padding=1, groups=groups)
            if bias_relu:
                y = F.relu(y)
            if last:
                y = y.permute(0, 2, 3, 1).contiguous()
            return y
        return f

    with torch.no_grad():
        return {"torch_nhwc": best(run(xt, True), rep), "torch_nchw": best(run(xc, False), rep)}


def ort_model(m, spec, nhwc):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w, c, nc, groups, bias_relu = spec
    _, k, b = data(m, h, w, c, nc, groups)
    nodes, inits = [], [numpy_helper.from_array(np.ascontiguousarray(k.transpose(3, 2, 0, 1)), "W")]
    cur = "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        cur = "x_nchw"
    inputs = [cur, "W"]
    if bias_relu:
        inits.append(numpy_helper.from_array(b, "B"))
        inputs.append("B")
    nodes.append(helper.make_node("Conv", inputs, ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=groups))
    last = "conv"
    if bias_relu:
        nodes.append(helper.make_node("Relu", ["conv"], ["relu"]))
        last = "relu"
    if nhwc:
        nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 3, 1]))
        in_shape, out_shape = [m, h, w, c], [m, h, w, nc]
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
        in_shape, out_shape = [m, c, h, w], [m, nc, h, w]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def time_ort(m, spec, rep):
    import onnxruntime as ort

    out = {}
    h, w, c, nc, groups, _ = spec
    x, _, _ = data(m, h, w, c, nc, groups)
    for nhwc in (True, False):
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(ort_model(m, spec, nhwc), so, providers=["CPUExecutionProvider"])
        inp = x if nhwc else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out["onnxruntime_nhwc" if nhwc else "onnxruntime"] = best(lambda: sess.run(None, {"x": inp}), rep)
    return out


def main_time(argv):
    cp = {o["workload"]: o for o in json.load(open(argv[0]))}
    rep = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 15
    rows = {}
    for name, spec in W.items():
        if name not in cp:
            continue
        m = cp[name]["m"]
        res = {}
        for timer in (time_torch, time_ort):
            try:
                res.update(timer(m, spec, rep))
            except ImportError:
                pass
        rows[name] = res
        print(name, {k: f"{v * 1e3:.3f} ms" for k, v in res.items()})
    json.dump(rows, open(argv[argv.index("--out") + 1], "w"), indent=1)


def main_compare(argv):
    cp = {o["workload"]: o for o in json.load(open(argv[0]))}
    peers = {}
    for path in argv[1:]:
        for name, res in json.load(open(path)).items():
            peers.setdefault(name, {}).update(res)
    print(f"{'workload':24s} {'convpool ms':>11s} {'best peer':>22s} {'ratio':>6s}  notes")
    for name in W:
        if name not in cp or not peers.get(name):
            continue
        c = cp[name]["min_s"]
        peer, t = min(peers[name].items(), key=lambda kv: kv[1])
        note = ""
        if name == "cnn_depthwise3x3":
            note = f"memory roofline {cp[name].get('roofline_fraction', float('nan')) * 100:.0f} % (median)"
        if name == "cnn_conv3x3_bias_relu" and "cnn_conv3x3" in cp:
            note = f"epilogue {(c / cp['cnn_conv3x3']['min_s'] - 1) * 100:+.1f} % over cnn_conv3x3 (min)"
        print(f"{name:24s} {c * 1e3:11.3f} {peer:>13s} {t * 1e3:8.3f} {t / c:5.2f}x  {note}")


def main_interleaved(argv):
    import torch
    import torch.nn.functional as F

    import convpool

    def arg(name, default):
        return int(argv[argv.index(name) + 1]) if name in argv else default

    m, rounds, rep = arg("--m", 2), arg("--rounds", 10), arg("--repeats", 100)
    torch.set_num_threads(THREADS)
    h, w, c, nc, groups, _ = W["cnn_depthwise3x3"]
    x, k, _ = data(m, h, w, c, nc, groups)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    wt = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()
    want = F.conv2d(xt, wt, None, padding=1, groups=groups).permute(0, 2, 3, 1).numpy()
    got = convpool.conv2d(x, k, padding="same", groups=groups, device="cpu")
    assert np.allclose(got, want, atol=1e-4), "convpool and PyTorch disagree"

    def ours():
        return convpool.conv2d(x, k, padding="same", groups=groups, device="cpu")

    def theirs():
        with torch.no_grad():
            return F.conv2d(xt, wt, None, padding=1, groups=groups).permute(0, 2, 3, 1).contiguous()

    ratios = []
    for r in range(rounds):
        a, b = best(ours, rep), best(theirs, rep)
        ratios.append(b / a)
        print(f"round {r + 1}: convpool {a * 1e3:.3f} ms, torch_nhwc {b * 1e3:.3f} ms, {b / a:.2f}x")
    print(f"median over {rounds} rounds: {sorted(ratios)[rounds // 2]:.2f}x")


if __name__ == "__main__":
    modes = {"time": main_time, "compare": main_compare, "interleaved": main_interleaved}
    if len(sys.argv) < 2 or sys.argv[1] not in modes or (sys.argv[1] != "interleaved" and len(sys.argv) < 3):
        sys.exit(__doc__)
    modes[sys.argv[1]](sys.argv[2:])
