"""uint8 and uint16 images: on a GPU their own bytes cross the bus and the
device widens them; the results are those of the same values as float32,
bit for bit, on every device and through every entry point that takes
images."""

import numpy as np
import pytest

import convpool
from conftest import devices_to_test

RNG = np.random.default_rng(7)
U8 = RNG.integers(0, 256, size=(3, 17, 13, 3), dtype=np.uint8)
U16 = (U8.astype(np.uint16) * 257) ^ 0x5A
KERNELS = RNG.standard_normal((3, 3, 3, 5)).astype(np.float32)
BIAS = np.linspace(-1, 1, 5, dtype=np.float32)


@pytest.mark.parametrize("device", devices_to_test())
@pytest.mark.parametrize("pixels", [U8, U16, U8[:, ::2, ::-1], np.asfortranarray(U16)], ids=["u8", "u16", "u8-strided", "u16-fortran"])
def test_integer_images_equal_their_float32_values(device, pixels):
    e = convpool.Engine(device)
    f = pixels.astype(np.float32)
    kw = dict(padding="same", bias=BIAS, activation="relu")
    np.testing.assert_array_equal(e.conv2d(pixels, KERNELS, **kw), e.conv2d(f, KERNELS, **kw))
    for mode in ("max", "avg"):
        np.testing.assert_array_equal(
            e.pool2d(pixels, window=(3, 3), stride=(2, 2), mode=mode),
            e.pool2d(f, window=(3, 3), stride=(2, 2), mode=mode),
        )
        np.testing.assert_array_equal(e.pool(pixels, (2, 2), (2, 2), mode), e.pool(f, (2, 2), (2, 2), mode))
    values, indices = e.pool2d(pixels, window=(2, 2), return_indices=True)
    want_values, want_indices = e.pool2d(f, window=(2, 2), return_indices=True)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(e.convolve(pixels, KERNELS), e.convolve(f, KERNELS))
    gray = pixels[..., 0]
    np.testing.assert_array_equal(
        e.convolve_grayscale_valid(gray, KERNELS[..., 0, 0]),
        e.convolve_grayscale_valid(gray.astype(np.float32), KERNELS[..., 0, 0]),
    )


@pytest.mark.parametrize("device", devices_to_test())
def test_integer_images_keep_their_errors(device):
    e = convpool.Engine(device)
    with pytest.raises(ValueError, match="channel"):
        e.conv2d(U8, KERNELS[:, :, :2])
    with pytest.raises(ValueError, match="bias"):
        e.conv2d(U8, KERNELS, bias=BIAS[:3])
    with pytest.raises(ValueError, match="images"):
        e.convolve(U8[0], KERNELS)
