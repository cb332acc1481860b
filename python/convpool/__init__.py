"""2-D convolution and pooling over batches of images, on the GPU or the CPU.

The seven functions of the classic numpy exercise, with its names, argument
order, defaults and output shapes::

    convolve_grayscale_valid(images, kernel)
    convolve_grayscale_same(images, kernel)
    convolve_grayscale_padding(images, kernel, padding)
    convolve_grayscale(images, kernel, padding='same', stride=(1, 1))
    convolve_channels(images, kernel, padding='same', stride=(1, 1))
    convolve(images, kernels, padding='same', stride=(1, 1))
    pool(images, kernel_shape, stride, mode='max')

and the general calls ``conv2d`` and ``pool2d`` with every option of the
Rust library (padding modes of ONNX/TF, stride, dilation, border modes,
groups, bias and activation, ceil mode, adaptive pooling, argmax indices).

Layouts: images NHWC ``(m, h, w, c)`` or grayscale ``(m, h, w)``; kernels
HWIO ``(kh, kw, c, nc)``, ``(kh, kw, c)`` or ``(kh, kw)``. Convolution is
cross-correlation, as in the exercise and every deep-learning framework.

Numbers: inputs of any real dtype (uint8 images, int64 kernels, float64 ...)
are converted to float32 once; a float32 array is read in place. On a GPU
engine, uint8 and uint16 images are not converted here: a GPU with its own
memory receives their own bytes and widens them (exactly). Outputs are
float32 (argmax indices int64). Results match a float64 reference within
SPEC.md's tolerance (max pooling exactly).

Devices: the module-level functions run on one shared engine per device
(``device=None`` is ``'auto'``: a hardware GPU when one works, else the
CPU). ``Engine(device=..., verify=...)`` builds your own. Every call releases
the GIL; an engine may be used from several threads at once.

Chains: ``upload(images)`` keeps a batch where its engine computes (GPU
memory, or host memory on a CPU engine) as a ``DeviceArray``; ``conv2d`` and
``pool2d`` on one return another, on the same engine, so a chain crosses the
bus once each way. ``.download()`` (or ``numpy.asarray``) reads it back; the
values are those of the same calls on numpy arrays, bit for bit::

    x = convpool.upload(images, device="gpu")
    x = convpool.conv2d(x, kernels, padding="same", activation="relu")
    y = convpool.pool2d(x, window=2).download()

Errors: bad arguments raise ``ValueError`` (wrong dtype or type:
``TypeError``) with a one-line message naming the argument and the shapes;
a missing or failing GPU raises ``RuntimeError``.
"""

import os
import threading

# On a headless machine (no XDG_RUNTIME_DIR: containers, CI, ssh) Mesa's
# device-select Vulkan layer prints "XDG_RUNTIME_DIR is invalid" at every
# GPU instance; it only orders adapters, which convpool chooses itself, so
# it is switched off there (a value the user set is kept), as the CLI does.
if "XDG_RUNTIME_DIR" not in os.environ and "NODEVICE_SELECT" not in os.environ:
    os.environ["NODEVICE_SELECT"] = "1"

from ._convpool import DeviceArray, Engine, __version__, devices  # noqa: E402

__all__ = [
    "DeviceArray",
    "Engine",
    "conv2d",
    "convolve",
    "convolve_channels",
    "convolve_grayscale",
    "convolve_grayscale_padding",
    "convolve_grayscale_same",
    "convolve_grayscale_valid",
    "devices",
    "engine",
    "pool",
    "pool2d",
    "upload",
    "__version__",
]

_engines = {}
_engines_lock = threading.Lock()


def engine(device=None):
    """The shared engine for ``device`` ('auto' when None, 'cpu', 'gpu').

    Built on first use (opening a GPU takes a moment) and reused after.
    """
    key = "auto" if device is None else str(device).strip().lower()
    with _engines_lock:
        found = _engines.get(key)
        if found is None:
            found = Engine(key)
            _engines[key] = found
        return found


def _engine_for(images, device):
    """The engine of a call: a ``DeviceArray``'s own unless ``device`` is
    given, else the shared one for ``device``."""
    if device is None and isinstance(images, DeviceArray):
        return images.engine
    return engine(device)


def upload(images, device=None):
    """``images`` (``(m, h, w, c)`` or ``(m, h, w)``) as a ``DeviceArray``
    kept by the shared engine for ``device``: in GPU memory, or in host
    memory where that engine is the CPU. ``conv2d`` and ``pool2d`` on it
    return ``DeviceArray`` results on the same engine."""
    return engine(device).upload(images)


def conv2d(images, kernels, *, padding="valid", stride=(1, 1), dilation=(1, 1),
           padding_mode="zeros", groups=1, bias=None, activation=None, device=None):
    """2-D convolution (cross-correlation) of images with kernels.

    images: ``(m, h, w, c)`` or ``(m, h, w)``; kernels: ``(kh, kw, c // groups,
    nc)``, ``(kh, kw, c)`` or ``(kh, kw)``. Returns ``(m, oh, ow, nc)`` for a
    4-D kernel and ``(m, oh, ow)`` for a 2-D or 3-D one (the exercise's
    shapes), float32.

    padding: 'valid', 'same' (TF SAME / ONNX SAME_UPPER), 'same_lower',
    'seed_same' (the exercise's strided 'same'), ``p``, ``(ph, pw)`` or
    ``(top, bottom, left, right)``. stride, dilation: ``n`` or ``(a, b)``.
    padding_mode: what padded cells hold: 'zeros', 'reflect', 'symmetric',
    'replicate' or 'circular'. groups: grouped convolution (``groups == c``
    with ``(kh, kw, 1, c * k)`` kernels is depthwise). bias: ``(nc,)`` added
    to every output; activation: 'relu', 'relu6', 'leaky_relu[:alpha]',
    'sigmoid', 'tanh' or 'clip:lo:hi', applied after the bias.

    A ``DeviceArray`` (see ``upload``) gives a ``DeviceArray`` ``(m, oh, ow,
    nc)`` on its own engine (``device`` left as None).
    """
    return _engine_for(images, device).conv2d(
        images, kernels, padding=padding, stride=stride, dilation=dilation,
        padding_mode=padding_mode, groups=groups, bias=bias, activation=activation)


def pool2d(images, *, window=None, stride=None, padding="valid", mode="max",
           ceil_mode=False, count_include_pad=False, dilation=(1, 1),
           output_size=None, return_indices=False, device=None):
    """2-D max or average pooling of ``(m, h, w, c)`` (or ``(m, h, w)``) images.

    Returns ``(m, oh, ow, c)`` float32; with ``return_indices=True`` (max
    only) a pair ``(values, indices)``, indices int64 ``y * w + x`` into each
    image's plane (-1 where a window holds no image cell).

    window: ``(kh, kw)``, ``k`` or 'global'. stride: defaults to the window
    (as PyTorch and TF). padding: as in ``conv2d``; padded cells never win a
    max and are not counted by an average unless ``count_include_pad``.
    ceil_mode: round the output size up (PyTorch/ONNX). output_size:
    ``(oh, ow)`` or ``n`` for adaptive pooling (PyTorch's windows), instead
    of a window; it takes no stride, padding, dilation or ceil_mode.

    A ``DeviceArray`` gives a ``DeviceArray`` on its own engine (not with
    ``return_indices``).
    """
    return _engine_for(images, device).pool2d(
        images, window=window, stride=stride, padding=padding, mode=mode,
        ceil_mode=ceil_mode, count_include_pad=count_include_pad, dilation=dilation,
        output_size=output_size, return_indices=return_indices)


def convolve_grayscale_valid(images, kernel):
    """Task 0: valid convolution of ``(m, h, w)`` images with a ``(kh, kw)``
    kernel; returns ``(m, h - kh + 1, w - kw + 1)``."""
    return engine().convolve_grayscale_valid(images, kernel)


def convolve_grayscale_same(images, kernel):
    """Task 1: same convolution of ``(m, h, w)`` images; returns exactly
    ``(m, h, w)`` (pads ``(kh - 1) // 2`` for odd kernels, ``kh // 2`` for even
    ones, dropping the last rows and columns, as the exercise)."""
    return engine().convolve_grayscale_same(images, kernel)


def convolve_grayscale_padding(images, kernel, padding):
    """Task 2: grayscale convolution with ``padding = (ph, pw)`` zeros on both
    sides of each axis."""
    return engine().convolve_grayscale_padding(images, kernel, padding)


def convolve_grayscale(images, kernel, padding="same", stride=(1, 1)):
    """Task 3: grayscale convolution; padding 'same', 'valid' or ``(ph, pw)``.

    The output size is ``(h + 2 * ph - kh) // sh + 1`` (the exercise forgot
    the stride there; SPEC.md fixes it). 'same' is the exercise's
    ``((h - 1) * sh + kh - h) // 2 + 1`` on each side.
    """
    return engine().convolve_grayscale(images, kernel, padding, stride)


def convolve_channels(images, kernel, padding="same", stride=(1, 1)):
    """Task 4: ``(m, h, w, c)`` images with one ``(kh, kw, c)`` kernel;
    returns ``(m, oh, ow)``."""
    return engine().convolve_channels(images, kernel, padding, stride)


def convolve(images, kernels, padding="same", stride=(1, 1)):
    """Task 5: ``(m, h, w, c)`` images with ``(kh, kw, c, nc)`` kernels;
    returns ``(m, oh, ow, nc)``."""
    return engine().convolve(images, kernels, padding, stride)


def pool(images, kernel_shape, stride, mode="max"):
    """Task 6: 'max' or 'avg' pooling of ``(m, h, w, c)`` images with a
    ``(kh, kw)`` window and ``(sh, sw)`` stride, no padding; returns
    ``(m, (h - kh) // sh + 1, (w - kw) // sw + 1, c)``."""
    return engine().pool(images, kernel_shape, stride, mode)
