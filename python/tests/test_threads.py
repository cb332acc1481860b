"""One Engine from several Python threads: identical results, the GIL
released while Rust computes, float32 inputs read in place."""

import threading
import tracemalloc

import numpy as np
import pytest

import convpool
from conftest import devices_to_test


def calls(seed):
    """Twelve mixed calls: plain and strided conv, depthwise with bias,
    activation and a border mode, max and average pooling."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(12):
        x = rng.standard_normal((2, 10 + i % 5, 9, 3)).astype(np.float32)
        if i % 3 == 0:
            k = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
            out.append(("conv", x, k, dict(padding="same", stride=(1 + i % 2, 1))))
        elif i % 3 == 1:
            k = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)
            out.append(("conv", x, k, dict(groups=3, bias=np.arange(6, dtype=np.float32), activation="relu",
                                           padding_mode="reflect", padding=1)))
        else:
            out.append(("pool", x, None, dict(window=(2, 3), mode="avg" if i % 2 else "max", padding=1)))
    return out


def run(engine, work):
    return [engine.conv2d(x, k, **kw) if op == "conv" else engine.pool2d(x, **kw) for op, x, k, kw in work]


@pytest.mark.parametrize("device", devices_to_test())
def test_threads_share_one_engine(device):
    engine = convpool.Engine(device)
    work = [calls(seed) for seed in range(8)]
    alone = [run(engine, w) for w in work]
    together = [None] * 8
    errors = []

    def worker(i):
        try:
            for _ in range(5):
                got = run(engine, work[i])
                for a, b in zip(got, alone[i]):
                    np.testing.assert_array_equal(a, b)
            together[i] = True
        except Exception as e:  # reported below, with the thread's index
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert all(together)


def test_gil_is_released_during_a_call():
    """Python keeps running in another thread while Rust computes."""
    x = np.random.default_rng(0).standard_normal((16, 256, 256, 8)).astype(np.float32)
    k = np.ones((7, 7, 8, 8), np.float32)
    engine = convpool.Engine("cpu")
    started, done = threading.Event(), threading.Event()
    ticks = []

    def busy():
        started.set()
        while not done.is_set():
            ticks.append(1)

    t = threading.Thread(target=busy)
    t.start()
    started.wait()
    before = len(ticks)
    for _ in range(3):
        engine.conv2d(x, k, padding="same")
    during = len(ticks) - before
    done.set()
    t.join()
    # With the GIL held for the whole call, the other thread would only run
    # at the switch points between calls (a handful of ticks).
    assert during > 1000, during


def test_float32_input_is_not_copied():
    """A float32 array is read in place: numpy allocates nothing for the
    call (tracemalloc sees numpy's allocations, not Rust's); another dtype
    goes through numpy's astype and shows its copy, so the measurement does
    see copies."""
    x = np.zeros((8, 512, 512, 1), np.float32)  # 8 MiB
    k = np.ones((512, 512), np.float32)
    engine = convpool.Engine("cpu")
    engine.conv2d(x, k)
    tracemalloc.start()
    engine.conv2d(x, k)
    engine.conv2d(x[:, ::2, ::2], k[:256, :256])  # strided: read in place too
    _, peak_f32 = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    x16 = x.astype(np.float16)
    tracemalloc.start()
    engine.conv2d(x16, k)
    _, peak_f16 = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak_f32 < 1 << 20, peak_f32
    assert peak_f16 >= x.nbytes, peak_f16
