from convpool import convolve_grayscale_same  # noqa: F401
