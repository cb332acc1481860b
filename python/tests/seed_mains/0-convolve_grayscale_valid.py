from convpool import convolve_grayscale_valid  # noqa: F401
