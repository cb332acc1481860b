"""Random shapes and options against the float64 numpy reference
(reference.py), on the CPU and the GPU."""

import numpy as np
import pytest

import convpool
import reference
from conftest import assert_close, assert_exact, conv_tolerance, devices_to_test

ACTIVATIONS = [None, "relu", "relu6", "leaky_relu:0.2", "sigmoid", "tanh", "clip:-1:0.5"]


def random_conv(rng):
    groups = int(rng.choice([1, 1, 2, 3]))
    c = groups * int(rng.integers(1, 4))
    nc = groups * int(rng.integers(1, 3))
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    dh, dw = (int(v) for v in rng.integers(1, 3, 2))
    h = int(rng.integers((kh - 1) * dh + 1, 14))
    w = int(rng.integers((kw - 1) * dw + 1, 14))
    m = int(rng.integers(0, 3))
    padding_mode = str(rng.choice(["zeros", "reflect", "symmetric", "replicate", "circular"]))
    kind = rng.integers(0, 3)
    if kind == 0:
        padding, pads = "valid", (0, 0, 0, 0)
    elif kind == 1:
        padding = "same"
        pads = reference.same_pads(h, kh, sh, dh) + reference.same_pads(w, kw, sw, dw)
    else:
        limit = min(h, w) - 1 if padding_mode in ("reflect",) else min(h, w)
        pads = tuple(int(v) for v in rng.integers(0, min(limit, 3) + 1, 4))
        padding = pads
    if padding_mode == "reflect" and max(pads) >= min(h, w):
        padding_mode = "zeros"
    return dict(shape=(m, h, w, c), kernels=(kh, kw, c // groups, nc), padding=padding, pads=pads,
                stride=(sh, sw), dilation=(dh, dw), padding_mode=padding_mode, groups=groups,
                activation=ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))], bias=bool(rng.integers(0, 2)))


@pytest.mark.parametrize("device", devices_to_test())
@pytest.mark.parametrize("seed", range(40))
def test_conv2d_random(device, seed):
    rng = np.random.default_rng(seed)
    case = random_conv(rng)
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    k = rng.standard_normal(case["kernels"]).astype(np.float32)
    bias = rng.standard_normal(case["kernels"][3]).astype(np.float32) if case["bias"] else None
    opts = dict(stride=case["stride"], dilation=case["dilation"], padding_mode=case["padding_mode"],
                groups=case["groups"], activation=case["activation"])
    want = reference.conv2d(x, k, case["pads"], bias=bias, **opts)
    got = convpool.conv2d(x, k, padding=case["padding"], bias=bias, device=device, **opts)
    extra = 1e-6 if case["activation"] in ("sigmoid", "tanh") else 0.0
    assert_close(got, want, conv_tolerance(want, int(np.prod(case["kernels"][:3])), extra))


@pytest.mark.parametrize("device", devices_to_test())
@pytest.mark.parametrize("seed", range(40))
def test_pool2d_random(device, seed):
    rng = np.random.default_rng(1000 + seed)
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    sh, sw = (int(v) for v in rng.integers(1, 4, 2))
    dh, dw = (int(v) for v in rng.integers(1, 3, 2))
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    h, w = int(rng.integers(ekh, 13)), int(rng.integers(ekw, 13))
    pads = (int(rng.integers(0, ekh)), int(rng.integers(0, ekh)), int(rng.integers(0, ekw)), int(rng.integers(0, ekw)))
    mode = str(rng.choice(["max", "avg"]))
    ceil_mode, count_include_pad = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
    x = rng.standard_normal((int(rng.integers(1, 3)), h, w, int(rng.integers(1, 4)))).astype(np.float32)
    opts = dict(stride=(sh, sw), mode=mode, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                dilation=(dh, dw))
    want, want_idx = reference.pool2d(x, (kh, kw), pads=pads, **opts)
    if mode == "max":
        got, idx = convpool.pool2d(x, window=(kh, kw), padding=pads, return_indices=True, device=device, **opts)
        assert_exact(got, want)
        np.testing.assert_array_equal(idx, want_idx)
    else:
        got = convpool.pool2d(x, window=(kh, kw), padding=pads, device=device, **opts)
        assert_close(got, want, conv_tolerance(want, 1))


@pytest.mark.parametrize("device", devices_to_test())
def test_adaptive_matches_windows(device):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 11, 7, 3)).astype(np.float32)
    got = convpool.pool2d(x, output_size=(4, 3), mode="avg", device=device)
    want = np.zeros((2, 4, 3, 3))
    for i in range(4):
        for j in range(3):
            a, b = i * 11 // 4, -(-(i + 1) * 11 // 4)
            c, d = j * 7 // 3, -(-(j + 1) * 7 // 3)
            want[:, i, j] = x[:, a:b, c:d].astype(np.float64).mean(axis=(1, 2))
    assert_close(got, want, conv_tolerance(want, 1))


def test_integer_and_float64_inputs_convert_exactly():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 9, 9, 3), dtype=np.uint8)
    kernel = np.array([[[0, 0, 0], [-1, -1, -1], [0, 0, 0]], [[-1, -1, -1], [5, 5, 5], [-1, -1, -1]],
                       [[0, 0, 0], [-1, -1, -1], [0, 0, 0]]])
    got = convpool.convolve_channels(images, kernel, padding="valid")
    want = reference.conv2d(images, kernel[..., None], (0, 0, 0, 0))[..., 0]
    assert_exact(got, want)  # small integers: exact in float32
    for dtype in (np.int16, np.int32, np.int64, np.uint16, np.uint32, np.float16, np.float64):
        again = convpool.convolve_channels(images.astype(dtype), kernel.astype(np.float64), padding="valid")
        np.testing.assert_array_equal(again, got)
    nested = convpool.convolve_grayscale_valid(images[..., 0].tolist(), [[1, 0, -1], [1, 0, -1], [1, 0, -1]])
    assert nested.shape == (2, 7, 7) and nested.dtype == np.float32


def test_conversion_equals_numpy_astype():
    """Every dtype widened in Rust rounds exactly as numpy's astype(float32):
    contiguous, strided, big-endian and the values float32 cannot hold."""
    rng = np.random.default_rng(4)
    one = np.ones((1, 1), np.float32)
    big = np.array([2**24 + 1, 2**53 + 1, -(2**63), 2**63 - 1, 123456789], np.int64)
    cases = [
        rng.integers(0, 256, (3, 5, 7), dtype=np.uint8),
        rng.integers(-128, 128, (3, 5, 7), dtype=np.int8),
        rng.integers(0, 2**16, (3, 5, 7), dtype=np.uint16),
        rng.integers(-2**15, 2**15, (3, 5, 7), dtype=np.int16),
        rng.integers(0, 2**32, (3, 5, 7), dtype=np.uint32),
        rng.integers(-2**31, 2**31, (3, 5, 7), dtype=np.int32),
        np.resize(big, (3, 5, 7)),
        np.resize(big.view(np.uint64), (3, 5, 7)),
        np.resize(np.array([1e39, -1e39, np.nan, np.inf, 1 / 3, 1e-46, 2.5e-45], np.float64), (3, 5, 7)),
        rng.standard_normal((3, 5, 7)).astype(">f8"),
        rng.standard_normal((3, 5, 7)).astype(np.float16),
    ]
    for images in cases:
        for view in (images, images[:, ::2, 1::3], np.asfortranarray(images)):
            with np.errstate(over="ignore"):  # 1e39 -> inf, as intended (numpy would warn)
                got = convpool.conv2d(view, one, device="cpu")
                want = view.astype(np.float32)
            np.testing.assert_array_equal(got, want, err_msg=str(view.dtype))
