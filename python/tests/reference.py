"""A float64 numpy reference written from SPEC.md alone (no convpool code):
what the random-shape tests compare against."""

import math

import numpy as np

NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "symmetric": "symmetric", "replicate": "edge",
             "circular": "wrap"}


def same_pads(n, k, s, d):
    ek = (k - 1) * d + 1
    total = max((math.ceil(n / s) - 1) * s + ek - n, 0)
    return total // 2, total - total // 2


def activate(y, activation):
    if activation is None:
        return y
    name, *args = activation.split(":")
    if name == "relu":
        return np.maximum(y, 0)
    if name == "relu6":
        return np.clip(y, 0, 6)
    if name == "leaky_relu":
        alpha = float(args[0]) if args else 0.01
        return np.where(y >= 0, y, alpha * y)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-y))
    if name == "tanh":
        return np.tanh(y)
    if name == "clip":
        return np.clip(y, float(args[0]), float(args[1]))
    raise ValueError(activation)


def conv2d(x, k, pads, stride=(1, 1), dilation=(1, 1), padding_mode="zeros", groups=1, bias=None, activation=None):
    x = np.asarray(x, np.float64)
    k = np.asarray(k, np.float64)
    pt, pb, pl, pr = pads
    (sh, sw), (dh, dw) = stride, dilation
    kh, kw, cg, nc = k.shape
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), mode=NUMPY_PAD[padding_mode])
    m, hp, wp, c = xp.shape
    oh = (hp - ((kh - 1) * dh + 1)) // sh + 1
    ow = (wp - ((kw - 1) * dw + 1)) // sw + 1
    out = np.zeros((m, oh, ow, nc))
    ncg = nc // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                xs = xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw,
                        g * cg:(g + 1) * cg]
                out[..., g * ncg:(g + 1) * ncg] += np.einsum("mhwc,cn->mhwn", xs, k[i, j, :, g * ncg:(g + 1) * ncg])
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return activate(out, activation)


def pool_size(n, k, s, d, p0, p1, ceil_mode):
    ek = (k - 1) * d + 1
    span = n + p0 + p1 - ek
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= n + p0:
        o -= 1
    return o


def pool2d(x, window, stride, pads=(0, 0, 0, 0), mode="max", ceil_mode=False, count_include_pad=False,
           dilation=(1, 1)):
    x = np.asarray(x, np.float64)
    m, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = window, stride, dilation
    pt, pb, pl, pr = pads
    oh = pool_size(h, kh, sh, dh, pt, pb, ceil_mode)
    ow = pool_size(w, kw, sw, dw, pl, pr, ceil_mode)
    out = np.zeros((m, oh, ow, c))
    idx = np.zeros((m, oh, ow, c), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            cells, padded = [], 0
            for i in range(kh):
                for j in range(kw):
                    y, xx = oy * sh + i * dh - pt, ox * sw + j * dw - pl
                    if -pt <= y < h + pb and -pl <= xx < w + pr:
                        padded += 1
                    if 0 <= y < h and 0 <= xx < w:
                        cells.append((y, xx))
            if mode == "max":
                best = np.full((m, c), -np.inf)
                at = np.full((m, c), -1, np.int64)
                for y, xx in cells:
                    v = x[:, y, xx, :]
                    take = (at < 0) | (v > best) | np.isnan(v)
                    best = np.where(take, v, best)
                    at = np.where(take, y * w + xx, at)
                out[:, oy, ox] = best
                idx[:, oy, ox] = at
            else:
                total = sum((x[:, y, xx, :] for y, xx in cells), np.zeros((m, c)))
                n = padded if count_include_pad else len(cells)
                out[:, oy, ox] = total / n if n else np.nan
    return out, idx
