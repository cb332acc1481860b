from convpool import pool  # noqa: F401
