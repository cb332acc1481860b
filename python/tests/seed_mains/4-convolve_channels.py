from convpool import convolve_channels  # noqa: F401
