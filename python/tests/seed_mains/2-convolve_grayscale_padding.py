from convpool import convolve_grayscale_padding  # noqa: F401
