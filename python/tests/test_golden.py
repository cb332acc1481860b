"""Every golden vector (v1 and v2) through the Python API, on the CPU and
the GPU: the seed functions by their own names, conv2d / pool2d with the
case's keywords."""

import numpy as np
import pytest

import convpool
from conftest import assert_close, assert_exact, conv_tolerance, devices_to_test, golden_cases, load_case

CASES = golden_cases()


def _padding(p):
    return tuple(p) if isinstance(p, list) else p


def run_case(engine, case, data):
    op, p = case["op"], case["params"]
    x = data["images"]
    k = data.get("kernels")
    if op in ("convolve_grayscale_valid", "convolve_grayscale_same"):
        return getattr(engine, op)(x, k)
    if op == "convolve_grayscale_padding":
        return engine.convolve_grayscale_padding(x, k, tuple(p["padding"]))
    if op in ("convolve_grayscale", "convolve_channels", "convolve"):
        return getattr(engine, op)(x, k, padding=_padding(p["padding"]), stride=tuple(p["stride"]))
    if op == "pool":
        return engine.pool(x, tuple(p["kernel_shape"]), tuple(p["stride"]), p["mode"])
    if op == "conv2d":
        kw = dict(padding=_padding(p["padding"]), stride=tuple(p["stride"]), dilation=tuple(p.get("dilation", [1, 1])))
        for key in ("padding_mode", "groups", "activation"):
            if p.get(key) is not None:
                kw[key] = p[key]
        if p.get("bias"):
            kw["bias"] = data["bias"]
        return engine.conv2d(x, k, **kw)
    if op == "pool2d":
        return engine.pool2d(
            x, window=tuple(p["window"]), stride=tuple(p["stride"]), mode=p["mode"], padding=_padding(p["padding"]),
            ceil_mode=p["ceil_mode"], count_include_pad=p["count_include_pad"],
            dilation=tuple(p.get("dilation", [1, 1])), return_indices=p.get("return_indices", False))
    if op == "adaptive_pool2d":
        return engine.pool2d(x, output_size=tuple(p["output_size"]), mode=p["mode"],
                             return_indices=p.get("return_indices", False))
    raise AssertionError(f"unknown op {op}")


@pytest.mark.parametrize("device", devices_to_test())
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden(device, case):
    engine = convpool.engine(device)
    data = load_case(case)
    got = run_case(engine, case, data)
    want = data["expected"]
    if case["params"].get("return_indices"):
        got, indices = got
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, data["expected_indices"])
    tolerance = case.get("tolerance", "")
    if case["exact"] or tolerance == "exact":
        assert_exact(got, want)
    else:
        ks = case.get("kernels_shape")
        reduction = int(np.prod(ks[:3])) if ks else 1
        extra = 1e-6 if "1e-6" in tolerance else 0.0
        assert_close(got, want, conv_tolerance(want, reduction, extra))
