"""convpool on dask arrays: batches and images larger than one machine.

``conv2d(x, kernels, **kw)`` and ``pool2d(x, **kw)`` take a dask array of
NHWC images ``(m, h, w, c)`` (or ``(m, h, w)``) and the keywords of
``convpool.conv2d`` / ``convpool.pool2d``, and return a lazy dask array equal
to the single call on the whole array: pooling bit for bit, convolution
within SPEC.md's tolerance (a band may take a different CPU kernel than the
whole image, since the choice follows the shape).

How the work is split:

- along the batch, the input's own chunks (``map_blocks``);
- across height and width, bands of rows and columns with exactly the halo
  the window needs (``map_overlap`` with depth ``extent - stride`` after each
  band, none before). Band edges are placed on multiples of the stride in
  padded coordinates, so output chunks line up with input chunks; a band
  whose halo would reach past its neighbour is merged with it. Padding is
  given only to the bands at the true image edge; border modes other than
  zeros pad the whole array first (``dask.array.pad``), so a reflection or
  wrap-around sees the real opposite edge;
- channels are never split (each chunk holds every channel);
- adaptive and global pooling, whose windows do not follow a stride, split
  the batch only.

Work runs wherever dask sends it: with ``dask.distributed`` each worker
process builds one ``convpool`` engine (``convpool.engine(device)``, cached
per process) and reuses it for every chunk it gets.
"""

import numpy as np
import dask.array as da

from . import _convpool
from . import engine as _engine

__all__ = ["conv2d", "pool2d"]

_NUMPY_PAD = {"reflect": "reflect", "symmetric": "symmetric", "replicate": "edge", "circular": "wrap"}


def _as_nhwc(x, name="x"):
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name}: dtype {x.dtype} is not a real number type (expected float or integer values)")
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim != 4:
        raise ValueError(f"{name}: expected (m, h, w) or (m, h, w, c), got an array of shape {x.shape} "
                         f"({x.ndim} dimensions)")
    # Every chunk holds every channel.
    return x.rechunk({3: -1})


def _bands(chunks, n, pad_before, extent, stride, n_out):
    """Input bands (core sizes) and output chunk sizes along one axis.

    Output chunk j covers outputs ``[y[j], y[j+1])``; its input band starts at
    ``y[j] * stride - pad_before`` (0 for the first) and reads ``extent -
    stride`` cells into the next band. Boundaries come from the input's own
    chunk edges, rounded to the stride; one that would leave a band shorter
    than the halo (or empty) is dropped.
    """
    halo = max(extent - stride, 0)
    least = max(halo, 1)
    ys, starts = [0], [0]
    edge = 0
    for size in chunks[:-1]:
        edge += size
        y = int(round((edge + pad_before) / stride))
        start = y * stride - pad_before
        if y <= ys[-1] or y >= n_out or start - starts[-1] < least or n - start < least:
            continue
        ys.append(y)
        starts.append(start)
    ys.append(n_out)
    starts.append(n)
    band_sizes = tuple(b - a for a, b in zip(starts, starts[1:]))
    out_sizes = tuple(b - a for a, b in zip(ys, ys[1:]))
    return band_sizes, out_sizes, halo, starts


def _split(x, plan, whole_image=False):
    """Rechunks ``x`` into stride-aligned bands; returns the pieces the
    block function needs."""
    m, h, w, _ = x.shape
    pt, pb, pl, pr = plan["pads"]
    (eh, ew), (sh, sw) = plan["extent"], plan["stride"]
    _, oh, ow, _ = plan["output_shape"]
    if whole_image:
        rows = ((h,), (oh,), 0, [0, h])
        cols = ((w,), (ow,), 0, [0, w])
    else:
        rows = _bands(x.chunks[1], h, pt, eh, sh, oh)
        cols = _bands(x.chunks[2], w, pl, ew, sw, ow)
    x = x.rechunk((x.chunks[0], rows[0], cols[0], x.chunks[3]))
    return x, rows, cols


def _run(x, rows, cols, pads, out_channels, block_fn, dtype):
    """``block_fn(block, pads, origin)`` over the bands of
    ``x``, each with its halo; ``pads`` are given only at the true image
    edges, ``origin`` is the band's first cell in image coordinates."""
    pt, pb, pl, pr = pads
    (_, out_rows, halo_h, row_starts), (_, out_cols, halo_w, col_starts) = rows, cols

    def per_block(block, block_info=None):
        (i, j), (ni, nj) = block_info[0]["chunk-location"][1:3], block_info[0]["num-chunks"][1:3]
        block_pads = (pt if i == 0 else 0, pb if i == ni - 1 else 0, pl if j == 0 else 0, pr if j == nj - 1 else 0)
        return block_fn(block, block_pads, (row_starts[i], col_starts[j]))

    chunks = (x.chunks[0], out_rows, out_cols, (out_channels,))
    meta = np.empty((0, 0, 0, 0), dtype=dtype)
    if halo_h == 0 and halo_w == 0:
        return x.map_blocks(per_block, chunks=chunks, dtype=dtype, meta=meta)
    return da.map_overlap(per_block, x, depth={0: 0, 1: (0, halo_h), 2: (0, halo_w), 3: 0},
                          boundary="none", trim=False, chunks=chunks, dtype=dtype, meta=meta)


def conv2d(x, kernels, *, padding="valid", stride=(1, 1), dilation=(1, 1), padding_mode="zeros",
           groups=1, bias=None, activation=None, device=None):
    """``convpool.conv2d`` on a dask array of images; returns a dask array.

    Keywords as ``convpool.conv2d``; ``kernels`` and ``bias`` are small
    numpy arrays sent with every task. Everything is validated here, before
    any task runs. ``device`` is each worker's (``None``: 'auto').
    """
    x = _as_nhwc(x)
    kernels = np.asarray(kernels)
    kernel_rank = kernels.ndim
    spec = dict(stride=stride, dilation=dilation, groups=groups, activation=activation)
    plan = _convpool._conv_plan(x.shape, kernels.shape, padding=padding, padding_mode=padding_mode, **spec)
    nc = plan["output_shape"][3]
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (nc,):
            raise ValueError(f"bias: expected shape ({nc},), one value per output channel of kernels "
                             f"{kernels.shape}, got {bias.shape}")
    if kernel_rank < 4:
        kernels = kernels.reshape(kernels.shape[:2] + (-1, 1))
    pads = plan["pads"]
    mode = str(padding_mode).strip().lower()
    if mode != "zeros" and any(pads):
        # The border cells come from the real opposite edges: pad once, then
        # every band runs unpadded.
        pt, pb, pl, pr = pads
        x = da.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), mode=_NUMPY_PAD[mode]).rechunk({3: -1})
        pads = (0, 0, 0, 0)
        plan = _convpool._conv_plan(x.shape, kernels.shape, padding="valid", **spec)
    x, rows, cols = _split(x, plan)

    def block_fn(block, block_pads, origin):
        return _engine(device).conv2d(block, kernels, padding=block_pads, bias=bias, **spec)

    out = _run(x, rows, cols, pads, nc, block_fn, np.float32)
    return out[..., 0] if kernel_rank < 4 else out


def pool2d(x, *, window=None, stride=None, padding="valid", mode="max", ceil_mode=False,
           count_include_pad=False, dilation=(1, 1), output_size=None, return_indices=False, device=None):
    """``convpool.pool2d`` on a dask array of images; returns a dask array
    (a pair of them with ``return_indices=True``: values float32, indices
    int64 ``y * w + x`` in whole-image coordinates; computing both runs the
    pooling once for each).

    Adaptive (``output_size``) and global windows split the batch only.
    """
    x = _as_nhwc(x)
    spec = dict(window=window, stride=stride, mode=mode, count_include_pad=count_include_pad,
                dilation=dilation, output_size=output_size)
    plan = _convpool._pool_plan(x.shape, padding=padding, ceil_mode=ceil_mode, **spec)
    if return_indices and str(mode).strip().lower() != "max":
        raise ValueError(f"return_indices: needs mode='max', got mode={mode!r}")
    whole_image = plan["adaptive"] or (isinstance(window, str) and window.strip().lower() == "global")
    if not whole_image:
        # Stride spelled out: a band's call must not default it to its window.
        spec["stride"] = plan["stride"]
    c = x.shape[3]
    x, rows, cols = _split(x, plan, whole_image)
    w = x.shape[2]
    pads = plan["pads"]

    def call(block, block_pads, indices):
        # ceil_mode goes to every band: only the last band's count changes
        # with it (an inner band ends exactly where its last window does,
        # or the rounded-up window starts past its rows and is dropped).
        block_spec = dict(spec, padding=padding if whole_image else block_pads, ceil_mode=ceil_mode)
        return _engine(device).pool2d(block, return_indices=indices, **block_spec)

    def values(block, block_pads, origin):
        return call(block, block_pads, False)

    out = _run(x, rows, cols, pads, c, values, np.float32)
    if not return_indices:
        return out

    def indices(block, block_pads, origin):
        _, found = call(block, block_pads, True)
        # Band-local y * w_band + x into whole-image coordinates.
        y, xx = np.divmod(found, block.shape[2])
        return np.where(found < 0, -1, (y + origin[0]) * w + xx + origin[1]).astype(np.int64)

    return out, _run(x, rows, cols, pads, c, indices, np.int64)
