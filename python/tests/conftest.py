"""Shared fixtures: the golden vectors, the devices to test on."""

import json
import os
import pathlib

import numpy as np
import pytest

import convpool

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def golden_cases():
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    return manifest["cases"]


def load_case(case):
    with np.load(GOLDEN / case["file"]) as z:
        return {k: z[k] for k in z.files}


def _has_gpu():
    try:
        convpool.engine("gpu")
        return True
    except RuntimeError:
        return False


def devices_to_test():
    """'cpu' always; 'gpu' where an adapter exists, and required (a failure,
    not a skip) under CONVPOOL_REQUIRE_GPU=1."""
    required = os.environ.get("CONVPOOL_REQUIRE_GPU") == "1"
    gpu = pytest.param("gpu", marks=() if (required or _has_gpu()) else pytest.mark.skip(reason="no GPU adapter"))
    return ["cpu", gpu]


def conv_tolerance(reference, reduction, extra=0.0):
    """SPEC.md "Numbers": 1e-4 * max(1, max|ref|), scaled by
    sqrt(kh*kw*c / 4096) above 4096 taps."""
    finite = np.abs(reference[np.isfinite(reference)])
    scale = max(1.0, float(finite.max()) if finite.size else 1.0)
    return 1e-4 * scale * max(1.0, np.sqrt(reduction / 4096.0)) + extra


def assert_close(got, want, tol):
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert got.dtype == np.float32
    want = np.asarray(want, dtype=np.float64)
    got64 = got.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got64), np.isnan(want))
    inf = np.isinf(want)
    np.testing.assert_array_equal(got64[inf], want[inf])
    ok = np.isfinite(want)
    if ok.any():
        diff = np.abs(got64[ok] - want[ok]).max()
        assert diff <= tol, f"max |diff| {diff:e} > {tol:e}"


def assert_exact(got, want):
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    np.testing.assert_array_equal(got.astype(np.float64), np.asarray(want, dtype=np.float64))
