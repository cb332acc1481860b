from convpool import convolve  # noqa: F401
