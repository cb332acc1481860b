"""Bad input: a ValueError or TypeError whose one-line message names the
argument and the shapes; never a crash, a hang or a silently ignored
keyword."""

import numpy as np
import pytest

import convpool

X = np.zeros((2, 8, 8, 3), np.float32)
K = np.zeros((3, 3, 3, 4), np.float32)


def raises(exc, fragments, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text, text
    for f in fragments:
        assert f in text, f"{f!r} not in {text!r}"
    return text


def test_shapes():
    raises(ValueError, ["channel mismatch", "(2, 8, 8, 3)", "(3, 3, 2, 4)"], convpool.conv2d, X, K[:, :, :2])
    raises(ValueError, ["images", "(8, 8)"], convpool.conv2d, X[0, :, :, 0], K)
    raises(ValueError, ["kernels", "(3,)"], convpool.conv2d, X, np.zeros(3))
    raises(ValueError, ["larger than the padded image"], convpool.conv2d, X, np.zeros((9, 9, 3, 1)))
    raises(ValueError, ["images", "height"], convpool.conv2d, np.zeros((1, 0, 4, 3)), K)
    raises(ValueError, ["bias", "(4,)", "(5,)"], convpool.conv2d, X, K, bias=np.zeros(5))
    raises(ValueError, ["bias", "(2, 2)"], convpool.conv2d, X, K, bias=np.zeros((2, 2)))
    raises(ValueError, ["groups"], convpool.conv2d, X, K, groups=2)
    raises(ValueError, ["reflect"], convpool.conv2d, X, K, padding=(8, 8), padding_mode="reflect")


def test_seed_ranks():
    raises(ValueError, ["images", "(m, h, w)", "(2, 8, 8, 3)"], convpool.convolve_grayscale_valid, X, K[:, :, 0, 0])
    raises(ValueError, ["kernel", "(kh, kw)"], convpool.convolve_grayscale_same, X[..., 0], K[:, :, 0])
    raises(ValueError, ["kernel", "(kh, kw, c)"], convpool.convolve_channels, X, K)
    raises(ValueError, ["kernels", "(kh, kw, c, nc)"], convpool.convolve, X, K[..., 0])
    raises(ValueError, ["images", "(m, h, w, c)"], convpool.pool, X[..., 0], (2, 2), (2, 2))
    raises(ValueError, ["padding"], convpool.convolve_grayscale_padding, X[..., 0], K[:, :, 0, 0], "same")
    raises(ValueError, ["padding"], convpool.convolve_grayscale, X[..., 0], K[:, :, 0, 0], padding="bogus")


def test_dtypes():
    for bad, name in ((np.zeros((2, 8, 8, 3), bool), "bool"), (np.zeros((2, 8, 8, 3), complex), "complex128"),
                      (np.full((2, 8, 8, 3), "a"), "<U1"), (np.empty((2, 8, 8, 3), object), "object")):
        raises(TypeError, ["images", name], convpool.conv2d, bad, K)
    raises(TypeError, ["kernels", "bool"], convpool.conv2d, X, K.astype(bool))
    raises(TypeError, ["images"], convpool.conv2d, "not an array", K)


def test_options():
    raises(ValueError, ["stride", "at least 1"], convpool.conv2d, X, K, stride=0)
    raises(ValueError, ["stride", "negative"], convpool.conv2d, X, K, stride=(-1, 1))
    raises(TypeError, ["stride", "bool"], convpool.conv2d, X, K, stride=True)
    raises(TypeError, ["dilation"], convpool.conv2d, X, K, dilation=1.5)
    raises(ValueError, ["stride", "two numbers"], convpool.conv2d, X, K, stride=(1, 2, 3))
    raises(ValueError, ["padding", "bogus"], convpool.conv2d, X, K, padding="bogus")
    raises(ValueError, ["padding", "3 numbers"], convpool.conv2d, X, K, padding=(1, 2, 3))
    raises(ValueError, ["padding_mode"], convpool.conv2d, X, K, padding_mode="mirror")
    raises(ValueError, ["activation"], convpool.conv2d, X, K, activation="gelu")
    raises(ValueError, ["clip"], convpool.conv2d, X, K, activation="clip:2:1")
    raises(ValueError, ["device"], convpool.conv2d, X, K, device="tpu")
    raises(ValueError, ["mode"], convpool.pool2d, X, window=2, mode="median")
    raises(ValueError, ["window"], convpool.pool2d, X)
    raises(ValueError, ["output_size", "not both"], convpool.pool2d, X, window=2, output_size=2)
    raises(ValueError, ["stride", "output_size"], convpool.pool2d, X, output_size=2, stride=1)
    raises(ValueError, ["ceil_mode", "global"], convpool.pool2d, X, window="global", ceil_mode=True)
    raises(ValueError, ["padding", "smaller than the dilated window"], convpool.pool2d, X, window=2, padding=2)
    raises(ValueError, ["return_indices", "max"], convpool.pool2d, X, window=2, mode="avg", return_indices=True)
    raises(ValueError, ["output_size"], convpool.pool2d, X, output_size=0)
    with pytest.raises(TypeError):
        convpool.conv2d(X, K, strides=2)  # a misspelt keyword is not ignored
    with pytest.raises(TypeError):
        convpool.Engine("cpu").pool2d(X, window=2, kernel_size=2)


def test_hostile_numbers_do_not_crash():
    # A huge stride is valid: one window per image.
    assert convpool.conv2d(X, K, stride=2**62).shape == (2, 1, 1, 4)
    for kw in (dict(dilation=2**40), dict(padding=(2**62, 0))):
        with pytest.raises(ValueError):
            convpool.conv2d(X, K, **kw)
    with pytest.raises(ValueError):
        convpool.pool2d(np.zeros((1, 1, 1, 1)), output_size=2**40)
    with pytest.raises((ValueError, TypeError, OverflowError)):
        convpool.conv2d(X, K, stride=2**70)


def test_empty_batch_has_the_right_shape():
    out = convpool.conv2d(np.zeros((0, 8, 8, 3), np.float32), K, padding="same")
    assert out.shape == (0, 8, 8, 4) and out.dtype == np.float32
    assert convpool.pool2d(np.zeros((0, 8, 8, 3)), window=2).shape == (0, 4, 4, 3)


def test_gpu_missing_is_a_runtime_error_or_works():
    try:
        e = convpool.Engine("gpu")
    except RuntimeError as err:
        assert "\n" not in str(err)
        return
    assert e.device == "gpu"
