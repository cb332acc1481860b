"""The exercise's own usage: its main files run unchanged against one-line
task modules re-exporting convpool, and the seven functions agree with the
exercise's numpy loops (a typical solution, written here from the task text)."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import convpool
from conftest import assert_close, conv_tolerance

MAINS = pathlib.Path(__file__).parent / "seed_mains"

STUB_PYPLOT = '''
import json, os
import numpy as np
_log = os.environ["PLOT_LOG"]
def imshow(image, cmap=None):
    a = np.asarray(image)
    with open(_log, "a") as f:
        f.write(json.dumps([list(a.shape), str(a.dtype), bool(np.isfinite(a.astype(float)).all())]) + "\\n")
def show():
    pass
'''


@pytest.fixture(scope="module")
def exercise(tmp_path_factory):
    """The exercise's folder layout: mains in a/b, datasets in
    ../../supervised_learning/data, matplotlib stubbed (no display)."""
    root = tmp_path_factory.mktemp("exercise")
    work = root / "math" / "convolutions_and_pooling"
    shutil.copytree(MAINS, work)
    data = root / "supervised_learning" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(data / "MNIST.npz", X_train=rng.random((300, 28, 28)).astype(np.float32))
    np.savez(data / "animals_1.npz", data=rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8))
    stub = root / "stub" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    (stub / "pyplot.py").write_text(STUB_PYPLOT)
    return work, root / "stub"


EXPECTED = {
    "0": ["(300, 28, 28)", "(300, 26, 26)"],
    "1": ["(300, 28, 28)", "(300, 28, 28)"],
    "2": ["(300, 28, 28)", "(300, 30, 34)"],
    "3": ["(300, 28, 28)", "(300, 13, 13)"],
    "4": ["(120, 32, 32, 3)", "(120, 30, 30)"],
    "5": ["(120, 32, 32, 3)", "(120, 30, 30, 3)"],
    "6": ["(120, 32, 32, 3)", "(120, 16, 16, 3)"],
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_main_file_runs_unchanged(exercise, task, tmp_path):
    work, stub = exercise
    log = tmp_path / "plots.jsonl"
    env = {"PYTHONPATH": f"{stub}", "PLOT_LOG": str(log), "PATH": "/usr/bin:/bin"}
    import os
    env.update({k: v for k, v in os.environ.items() if k.startswith(("CONVPOOL", "XDG", "VK_", "WGPU"))})
    run = subprocess.run([sys.executable, f"{task}-main.py"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == EXPECTED[task]
    assert run.stderr == ""
    plots = [line for line in log.read_text().splitlines()]
    assert len(plots) >= 2 and all('true]' in p for p in plots)


# The exercise's loops, as students write them (float64, loops over output
# pixels, vectorised over the batch).
def loop_conv(images, kernel, padding, stride):
    m, h, w, c = images.shape
    kh, kw, _, nc = kernel.shape
    sh, sw = stride
    if padding == "valid":
        ph = pw = 0
    elif padding == "same":
        ph = ((h - 1) * sh + kh - h) // 2 + 1
        pw = ((w - 1) * sw + kw - w) // 2 + 1
    else:
        ph, pw = padding
    x = np.pad(images.astype(np.float64), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((m, oh, ow, nc))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            for k in range(nc):
                out[:, i, j, k] = np.sum(patch * kernel[..., k], axis=(1, 2, 3))
    return out


def loop_pool(images, kernel_shape, stride, mode):
    m, h, w, c = images.shape
    (kh, kw), (sh, sw) = kernel_shape, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((m, oh, ow, c))
    f = np.max if mode == "max" else np.mean
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = f(images[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :].astype(np.float64), axis=(1, 2))
    return out


def test_seven_functions_match_the_exercise_loops():
    rng = np.random.default_rng(11)
    gray = rng.random((5, 13, 11)).astype(np.float32)
    colour = rng.integers(0, 256, (4, 12, 10, 3), dtype=np.uint8)
    k2 = rng.standard_normal((3, 3)).astype(np.float32)
    k_even = rng.standard_normal((4, 2)).astype(np.float32)
    k3 = rng.integers(-2, 3, (3, 2, 3))
    k4 = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)

    def check(got, want, taps):
        assert_close(got, want, conv_tolerance(want, taps))

    g4 = gray[..., None]
    check(convpool.convolve_grayscale_valid(gray, k2), loop_conv(g4, k2[..., None, None], "valid", (1, 1))[..., 0], 9)
    # Task 1 centres: (kh - 1) // 2 pads for odd kernels, kh // 2 for even, last rows dropped.
    for k in (k2, k_even):
        kh, kw = k.shape
        ph, pw = (kh - 1) // 2 if kh % 2 else kh // 2, (kw - 1) // 2 if kw % 2 else kw // 2
        want = loop_conv(g4, k[..., None, None], (ph, pw), (1, 1))[:, :13, :11, 0]
        check(convpool.convolve_grayscale_same(gray, k), want, k.size)
    check(convpool.convolve_grayscale_padding(gray, k2, (2, 4)),
          loop_conv(g4, k2[..., None, None], (2, 4), (1, 1))[..., 0], 9)
    for padding in ("same", "valid", (1, 3)):
        for stride in ((1, 1), (2, 3)):
            check(convpool.convolve_grayscale(gray, k2, padding=padding, stride=stride),
                  loop_conv(g4, k2[..., None, None], padding, stride)[..., 0], 9)
            check(convpool.convolve_channels(colour, k3, padding=padding, stride=stride),
                  loop_conv(colour, k3[..., None], padding, stride)[..., 0], 18)
            check(convpool.convolve(colour, k4, padding, stride), loop_conv(colour, k4, padding, stride), 18)
    # The exercise's defaults: padding='same', stride=(1, 1).
    check(convpool.convolve(colour, k4), loop_conv(colour, k4, "same", (1, 1)), 18)
    for mode in ("max", "avg"):
        got = convpool.pool(colour, (3, 2), (2, 2), mode=mode)
        want = loop_pool(colour, (3, 2), (2, 2), mode)
        if mode == "max":
            np.testing.assert_array_equal(got, want)
        else:
            check(got, want, 1)
    np.testing.assert_array_equal(convpool.pool(colour, (2, 2), (2, 2)), loop_pool(colour, (2, 2), (2, 2), "max"))


def test_engine_has_the_seven_functions():
    e = convpool.Engine("cpu")
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    k = np.ones((3, 3), np.float32)
    np.testing.assert_array_equal(e.convolve_grayscale_valid(x, k), convpool.convolve_grayscale_valid(x, k))
    assert e.convolve_grayscale(x, k).shape == (2, 8, 8)
    assert e.pool(x[..., None], (2, 2), (2, 2), "avg").shape == (2, 3, 3, 1)
