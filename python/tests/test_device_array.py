"""DeviceArray: batches kept where their engine computes, chained without a
round trip, against the same calls on numpy arrays (bit for bit)."""

import numpy as np
import pytest

import convpool

from conftest import devices_to_test

DEVICES = devices_to_test()


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_upload_keeps_the_values(device):
    e = convpool.Engine(device)
    x = rand((3, 5, 7, 2), 1)
    d = e.upload(x)
    assert isinstance(d, convpool.DeviceArray)
    assert d.shape == (3, 5, 7, 2) and d.ndim == 4 and len(d) == 3
    assert d.dtype == np.float32 and d.size == x.size and d.nbytes == x.nbytes
    assert d.device == device and d.engine is e
    assert repr(d) == f"convpool.DeviceArray(shape=(3, 5, 7, 2), dtype=float32, device='{device}')"
    back = d.download()
    assert back.dtype == np.float32 and back.shape == x.shape
    assert np.array_equal(back, x)
    assert np.array_equal(np.asarray(d), x)
    assert np.asarray(d, dtype=np.float64).dtype == np.float64
    # Grayscale batches are kept as one channel; strided input is read as is.
    g = e.upload(x[:, ::2, ::-1, 0])
    assert g.shape == (3, 3, 7, 1)
    assert np.array_equal(g.download()[..., 0], x[:, ::2, ::-1, 0])
    # Other real dtypes are converted, as everywhere.
    ints = np.arange(2 * 3 * 3, dtype=np.int64).reshape(2, 3, 3)
    assert np.array_equal(e.upload(ints).download()[..., 0], ints.astype(np.float32))


@pytest.mark.parametrize("device", DEVICES)
def test_a_chain_equals_the_host_calls_bit_for_bit(device):
    e = convpool.Engine(device)
    x = rand((4, 17, 19, 3), 2)
    k1, k2 = rand((3, 3, 3, 8), 3), rand((5, 5, 8, 4), 4)
    bias = rand((8,), 5)

    y = e.conv2d(x, k1, padding="same", bias=bias, activation="relu")
    y = e.pool2d(y, window=2, ceil_mode=True)
    y = e.conv2d(y, k2, padding=(2, 1), stride=2, padding_mode="reflect")
    y = e.pool2d(y, window=2, stride=1, mode="avg")

    d = e.upload(x)
    d = e.conv2d(d, k1, padding="same", bias=bias, activation="relu")
    assert isinstance(d, convpool.DeviceArray) and d.shape == (4, 17, 19, 8)
    d = e.pool2d(d, window=2, ceil_mode=True)
    d = e.conv2d(d, k2, padding=(2, 1), stride=2, padding_mode="reflect")
    d = e.pool2d(d, window=2, stride=1, mode="avg")
    assert d.shape == y.shape
    assert np.array_equal(d.download(), y)


@pytest.mark.parametrize("device", DEVICES)
def test_module_functions_run_on_the_arrays_engine(device):
    x = rand((2, 9, 9, 1), 6)
    k = rand((3, 3), 7)
    d = convpool.upload(x, device=device)
    assert d.engine is convpool.engine(device)
    out = convpool.conv2d(d, k, padding="same")
    # A 2-D kernel still gives an NHWC DeviceArray: a kept batch is 4-D.
    assert isinstance(out, convpool.DeviceArray) and out.shape == (2, 9, 9, 1)
    assert np.array_equal(out.download()[..., 0], convpool.conv2d(x, k, padding="same", device=device))
    pooled = convpool.pool2d(out, window=3, stride=2)
    want = convpool.pool2d(convpool.conv2d(x, k[:, :, None, None], padding="same", device=device), window=3, stride=2)
    assert np.array_equal(pooled.download(), want)


@pytest.mark.parametrize("device", DEVICES)
def test_the_seed_functions_read_a_device_array(device):
    e = convpool.Engine(device)
    x = rand((3, 8, 8, 2), 8)
    d = e.upload(x)
    assert np.array_equal(e.pool(d, (2, 2), (2, 2)), e.pool(x, (2, 2), (2, 2)))
    assert np.array_equal(convpool.pool(d, (2, 2), (2, 2), "avg"), convpool.pool(x, (2, 2), (2, 2), "avg"))


def test_uint8_images_upload_as_their_float32_values():
    pixels = np.random.default_rng(9).integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    for device in ["cpu"] + (["gpu"] if _gpu() else []):
        d = convpool.Engine(device).upload(pixels)
        assert np.array_equal(d.download(), pixels.astype(np.float32))
    wide = np.random.default_rng(10).integers(0, 65536, (2, 6, 6, 3), dtype=np.uint16)
    for device in ["cpu"] + (["gpu"] if _gpu() else []):
        assert np.array_equal(convpool.Engine(device).upload(wide).download(), wide.astype(np.float32))


def _gpu():
    try:
        convpool.engine("gpu")
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("device", DEVICES)
def test_device_array_errors(device):
    e = convpool.Engine(device)
    d = e.upload(rand((2, 6, 6, 3), 11))
    with pytest.raises(ValueError, match=r"another engine"):
        convpool.Engine(device).conv2d(d, rand((3, 3, 3, 1), 12))
    with pytest.raises(ValueError, match=r"another engine"):
        convpool.Engine("cpu" if device == "gpu" else device).pool2d(d, window=2)
    with pytest.raises(ValueError, match=r"channel mismatch.*\(2, 6, 6, 3\).*\(3, 3, 4, 1\)"):
        e.conv2d(d, rand((3, 3, 4, 1), 13))
    with pytest.raises(ValueError, match=r"^return_indices"):
        e.pool2d(d, window=2, return_indices=True)
    with pytest.raises(ValueError, match=r"^bias"):
        e.conv2d(d, rand((3, 3, 3, 2), 14), bias=np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match=r"^copy"):
        d.__array__(copy=False)
    with pytest.raises(TypeError, match=r"images: dtype bool"):
        e.upload(np.zeros((1, 2, 2, 1), bool))
    with pytest.raises(ValueError, match=r"images: expected \(m, h, w\) or \(m, h, w, c\)"):
        e.upload(np.zeros((1, 2, 2, 1, 1), np.float32))
    # The batch is untouched by the failed calls.
    assert d.shape == (2, 6, 6, 3)


def test_an_empty_batch_uploads():
    for device in ["cpu"] + (["gpu"] if _gpu() else []):
        e = convpool.Engine(device)
        d = e.upload(np.zeros((0, 4, 4, 2), np.float32))
        assert d.shape == (0, 4, 4, 2) and d.download().shape == (0, 4, 4, 2)
        out = e.conv2d(d, rand((3, 3, 2, 5), 15))
        assert out.shape == (0, 2, 2, 5) and out.download().shape == (0, 2, 2, 5)
