from convpool import convolve_grayscale  # noqa: F401
