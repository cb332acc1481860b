"""convpool.dask against the single call: chunks along the batch, bands
across height and width (halo, stride alignment, padding at the true edge
only, border modes), pooling options, argmax indices in whole-image
coordinates; on the synchronous scheduler and on a real LocalCluster with
worker processes."""

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import convpool  # noqa: E402
import convpool.dask as cdask  # noqa: E402
from conftest import assert_close, conv_tolerance  # noqa: E402


def same_conv(got, want, kernels):
    """Bands may take a different CPU kernel than the whole image (the
    choice follows the shape), so conv agrees within SPEC's tolerance."""
    assert got.shape == want.shape and got.dtype == np.float32
    assert_close(got, want.astype(np.float64), conv_tolerance(want.astype(np.float64), int(np.prod(kernels.shape[:3]))))


CONV_CASES = [
    dict(),
    dict(padding="same"),
    dict(padding="same", stride=2),
    dict(padding=(3, 1, 0, 2), stride=(3, 2), dilation=(2, 1)),
    dict(padding="seed_same", stride=(2, 3)),
    dict(padding="same_lower", dilation=3),
    dict(padding=2, padding_mode="reflect"),
    dict(padding=(4, 1, 2, 3), padding_mode="circular", stride=2),
    dict(padding="same", padding_mode="symmetric", dilation=2),
    dict(padding=(5, 5), padding_mode="replicate", stride=(1, 3)),
    dict(padding="same", groups=2, bias=True, activation="leaky_relu:0.1"),
    dict(stride=5),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
@pytest.mark.parametrize("chunks", [(2, -1, -1, -1), (1, 7, 9, -1), (3, 5, 4, 2), (1, 1, 1, 1)])
def test_conv2d_matches_the_single_call(case, chunks):
    kw = dict(CONV_CASES[case])
    rng = np.random.default_rng(case)
    x = rng.standard_normal((3, 23, 19, 4)).astype(np.float32)
    groups = kw.get("groups", 1)
    k = rng.standard_normal((3, 4, 4 // groups, 6)).astype(np.float32)
    if kw.pop("bias", False):
        kw["bias"] = rng.standard_normal(6).astype(np.float32)
    want = convpool.conv2d(x, k, device="cpu", **kw)
    lazy = cdask.conv2d(da.from_array(x, chunks=chunks), k, device="cpu", **kw)
    assert lazy.shape == want.shape
    got = lazy.compute(scheduler="synchronous")
    same_conv(got, want, k)


def test_conv2d_grayscale_and_2d_kernels_keep_the_seed_shapes():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 30, 20)).astype(np.float32)
    k = rng.standard_normal((5, 5)).astype(np.float32)
    want = convpool.conv2d(x, k, padding="same", device="cpu")
    got = cdask.conv2d(da.from_array(x, chunks=(2, 8, 6)), k, padding="same", device="cpu")
    assert got.shape == want.shape == (4, 30, 20)
    same_conv(got.compute(scheduler="synchronous"), want, k[..., None, None])


POOL_CASES = [
    dict(window=2),
    dict(window=3, stride=2, padding=1),
    dict(window=(3, 2), stride=(2, 1), padding=(2, 0, 1, 1), mode="avg"),
    dict(window=3, stride=2, padding=1, mode="avg", count_include_pad=True),
    dict(window=3, stride=2, ceil_mode=True),
    dict(window=(4, 3), stride=3, padding=(1, 2, 0, 1), ceil_mode=True, mode="avg", count_include_pad=True),
    dict(window=2, dilation=3, padding=1),
    dict(window=5, stride=1, padding=2),
    dict(output_size=(4, 3), mode="avg"),
    dict(output_size=5),
    dict(window="global", mode="avg"),
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("chunks", [(1, 6, 5, -1), (2, 3, 7, 1), (1, 1, 1, 3)])
def test_pool2d_matches_the_single_call(case, chunks):
    kw = POOL_CASES[case]
    x = np.random.default_rng(100 + case).standard_normal((3, 21, 17, 3)).astype(np.float32)
    x[0, 4, 5, 1] = np.nan
    want = convpool.pool2d(x, device="cpu", **kw)
    got = cdask.pool2d(da.from_array(x, chunks=chunks), device="cpu", **kw).compute(scheduler="synchronous")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kw", [dict(window=3, stride=2, padding=1), dict(window=(2, 3), dilation=2, padding=1),
                                dict(window=3, stride=2, ceil_mode=True), dict(output_size=(5, 4))])
def test_pool2d_indices_are_whole_image_positions(kw):
    x = np.random.default_rng(9).standard_normal((2, 19, 16, 2)).astype(np.float32)
    want_v, want_i = convpool.pool2d(x, return_indices=True, device="cpu", **kw)
    v, i = cdask.pool2d(da.from_array(x, chunks=(1, 5, 6, 1)), return_indices=True, device="cpu", **kw)
    np.testing.assert_array_equal(v.compute(scheduler="synchronous"), want_v)
    got_i = i.compute(scheduler="synchronous")
    assert got_i.dtype == np.int64
    np.testing.assert_array_equal(got_i, want_i)


def test_output_chunks_follow_the_input():
    x = da.zeros((4, 64, 48, 2), chunks=(2, 16, 16, 2), dtype=np.float32)
    out = cdask.conv2d(x, np.ones((3, 3, 2, 5), np.float32), padding="same", stride=2)
    assert out.chunks == ((2, 2), (8, 8, 8, 8), (8, 8, 8), (5,))
    pooled = cdask.pool2d(x, window=2)
    assert pooled.chunks == ((2, 2), (8, 8, 8, 8), (8, 8, 8), (2,))


def test_errors_come_before_any_task():
    x = da.zeros((2, 8, 8, 3), chunks=(1, 4, 4, 3))
    with pytest.raises(ValueError, match="channel mismatch"):
        cdask.conv2d(x, np.zeros((3, 3, 2, 1)))
    with pytest.raises(ValueError, match="bias"):
        cdask.conv2d(x, np.zeros((3, 3, 3, 2)), bias=np.zeros(3))
    with pytest.raises(TypeError, match="bool"):
        cdask.pool2d(x.astype(bool), window=2)
    with pytest.raises(ValueError, match="return_indices"):
        cdask.pool2d(x, window=2, mode="avg", return_indices=True)
    with pytest.raises(ValueError, match="padding"):
        cdask.pool2d(x, window=2, padding=3)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c, distributed.Client(c) as client:
        yield client


def test_on_a_local_cluster_with_worker_processes(cluster):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((4, 40, 36, 3)).astype(np.float32)
    k = rng.standard_normal((5, 3, 3, 8)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    opts = dict(padding="same", stride=(2, 1), padding_mode="reflect", bias=bias, activation="relu")
    want = convpool.conv2d(x, k, device="cpu", **opts)
    lazy = cdask.conv2d(da.from_array(x, chunks=(2, 13, 12, 3)), k, device="cpu", **opts)
    same_conv(cluster.compute(lazy).result(), want, k)
    pool_kw = dict(window=3, stride=2, padding=1, mode="avg")
    got = cluster.compute(cdask.pool2d(da.from_array(x, chunks=(1, 9, 10, 3)), **pool_kw)).result()
    np.testing.assert_array_equal(got, convpool.pool2d(x, **pool_kw))
    # The work ran in the worker processes, each with its own engine.
    pids = cluster.run(lambda: __import__("os").getpid())
    assert len(pids) == 2 and __import__("os").getpid() not in pids.values()
