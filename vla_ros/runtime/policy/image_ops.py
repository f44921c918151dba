"""Image operations that reproduce the upstream preprocessing of published checkpoints.

The upstream pipelines resize with TensorFlow (VLA-Adapter's eval: JPEG round trip, lanczos3,
centre crop) and with PIL through torchvision (Prismatic processors: bicubic, letterbox); a
model is sensitive to which, so each is reproduced here to the pixel instead of approximated
with cv2:
  jpeg_roundtrip   libjpeg encode (4:2:0) + decode with the fast integer IDCT and fancy
                   upsampling: what tf.image.encode_jpeg + tf.io.decode_image do (TensorFlow
                   picks JDCT_IFAST for decoding)
  tf_resize        tf.image.resize(method='lanczos3', antialias=True): scale_and_translate's
                   spans and float32 kernel weights, rows then columns, accumulated in order
  tf_center_crop   tf.image.crop_and_resize of the centred box of an area fraction, back to
                   the input size, then convert_image_dtype(uint8, saturate=True)
  pil_resize       PIL's resize (torchvision's Resize on a PIL image)
  letterbox        Prismatic's LetterboxPad: int((max - w) / 2) on both sides, constant fill
  resize_pad       A1 / Molmo's resize_and_pad: aspect-preserving torch bilinear resize with
                   antialias (aten's separable _upsample_bilinear2d_aa: width, then height) on
                   [0, 1] floats, centred on a fill; returns floats (0-255 scale) and the
                   per-patch image fraction
Each takes an (H, W, 3) uint8 RGB array and returns one (resize_pad: float32). Imports numpy,
PIL and simplejpeg.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np

_F32 = np.float32
_PIL_METHODS = {'pil_bicubic': 'BICUBIC', 'pil_bilinear': 'BILINEAR', 'pil_lanczos': 'LANCZOS'}


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    import simplejpeg
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, 'JPEG', quality=quality)  # ISLOW DCT, 4:2:0, as TF
    return simplejpeg.decode_jpeg(buf.getvalue(), colorspace='RGB', fastdct=True,
                                  fastupsample=False)


def _lanczos3(x: np.float32) -> np.float32:
    # TensorFlow's LanczosKernelFunc(3), in float32 like the kernel.
    pi, r = _F32(3.14159265359), _F32(3.0)
    x = abs(x)
    if x > r:
        return _F32(0.0)
    if x <= _F32(1e-3):
        return _F32(1.0)
    return _F32(_F32(r * np.sin(_F32(pi * x))) * np.sin(_F32(_F32(pi * x) / r))) / _F32(
        _F32(_F32(pi * pi) * x) * x)


@lru_cache(maxsize=32)
def _spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(out, span) source indices and float32 weights of scale_and_translate (antialias)."""
    scale = _F32(_F32(out_size) / _F32(in_size))
    inv = _F32(1.0 / float(scale))
    kscale = max(inv, _F32(1.0))
    radius = _F32(3.0)
    width = min(2 * math.ceil(3.0 * float(kscale)) + 1, in_size)
    idx = np.zeros((out_size, width), np.int64)
    wts = np.zeros((out_size, width), _F32)
    for x in range(out_size):
        s = _F32(_F32(x + 0.5) * inv)
        lo = math.ceil(_F32(s - radius * kscale - _F32(0.5)))
        hi = math.floor(_F32(s + radius * kscale - _F32(0.5)))
        lo, hi = min(max(lo, 0), in_size - 1), min(max(hi, 0), in_size - 1) + 1
        w = [_lanczos3(_F32(_F32(_F32(i) + _F32(0.5) - s) / kscale)) for i in range(lo, hi)]
        total = _F32(0.0)
        for v in w:
            total = _F32(total + v)
        n = hi - lo
        idx[x, :n] = np.arange(lo, hi)
        wts[x, :n] = np.array(w, _F32) * _F32(_F32(1.0) / total)
    return idx, wts


def _gather(image: np.ndarray, axis: int, idx: np.ndarray, wts: np.ndarray) -> np.ndarray:
    x = np.moveaxis(image, axis, 0)
    acc = np.zeros((idx.shape[0],) + x.shape[1:], _F32)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for k in range(idx.shape[1]):  # in span order, as the kernel accumulates (zero pads add 0)
        acc += wts[:, k].reshape(shape) * x[idx[:, k]]
    return np.moveaxis(acc, 0, axis)


def tf_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    f = image.astype(_F32)
    f = _gather(f, 0, *_spans(image.shape[0], height))
    f = _gather(f, 1, *_spans(image.shape[1], width))
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


def tf_center_crop(image: np.ndarray, area: float) -> np.ndarray:
    h, w = image.shape[:2]
    f = image.astype(_F32) * _F32(1.0 / 255.0)
    side = _F32(np.sqrt(_F32(area)))
    lo = _F32((_F32(1.0) - side) / _F32(2.0))
    hi = _F32(lo + side)

    def coords(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        step = _F32(_F32(hi - lo) * _F32(n - 1) / _F32(n - 1))
        c = (_F32(lo * _F32(n - 1)) + np.arange(n, dtype=_F32) * step).astype(_F32)
        a = np.floor(c).astype(np.int64)
        return a, np.ceil(c).astype(np.int64), (c - a).astype(_F32)

    t, b, yl = coords(h)
    left, right, xl = coords(w)
    xl = xl[None, :, None]
    top = f[t][:, left] + (f[t][:, right] - f[t][:, left]) * xl
    bottom = f[b][:, left] + (f[b][:, right] - f[b][:, left]) * xl
    out = (top + (bottom - top) * yl[:, None, None]).astype(_F32)
    return np.clip(out * _F32(255.5), 0, 255).astype(np.uint8)  # saturate_cast truncates


def pil_resize(image: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
    from PIL import Image

    mode = getattr(Image.Resampling, _PIL_METHODS[method])
    return np.asarray(Image.fromarray(image).resize((width, height), mode))


def letterbox(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    side = max(h, w)
    ph, pw = int((side - h) / 2), int((side - w) / 2)
    out = np.empty((h + 2 * ph, w + 2 * pw, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    out[ph:ph + h, pw:pw + w] = image
    return out


def is_custom_resize(method: str) -> bool:
    return method in _PIL_METHODS or method == 'tf_lanczos3'


def resize(image: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
    """The PIL / TensorFlow resize methods (cv2's stay in preprocess.py)."""
    if method == 'tf_lanczos3':
        return tf_resize(image, height, width)
    return pil_resize(image, height, width, method)


@lru_cache(maxsize=32)
def _torch_aa_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(out, span) source indices and float32 weights of torch's antialiased bilinear
    (align_corners=False): a triangle filter widened by the downscale factor, normalized per
    output (aten's _compute_weights_aa with interp_size 2). float32 where aten's scalar_t is,
    float64 where it promotes, so the weights match to the bit."""
    scale = _F32(_F32(in_size) / _F32(out_size))
    support = _F32(scale) if scale >= 1.0 else _F32(1.0)
    invscale = _F32(1.0 / float(scale)) if scale >= 1.0 else _F32(1.0)
    span = int(math.ceil(float(support))) * 2 + 1
    idx = np.zeros((out_size, span), np.int64)
    wts = np.zeros((out_size, span), _F32)
    for i in range(out_size):
        center = _F32(float(scale) * (i + 0.5))
        lo = max(int(float(_F32(center - support)) + 0.5), 0)  # C++ casts truncate
        hi = min(int(float(_F32(center + support)) + 0.5), in_size)
        w = [_F32(max(0.0, 1.0 - abs((j - float(center) + 0.5) * float(invscale))))
             for j in range(lo, hi)]
        total = _F32(0.0)
        for v in w:
            total = _F32(total + v)
        n = hi - lo
        idx[i, :n] = np.arange(lo, hi)
        if total != 0:
            wts[i, :n] = np.array(w, _F32) / total
    return idx, wts


def torch_bilinear_aa(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 -> (height, width, C) float32, as torch.nn.functional.interpolate(
    mode='bilinear', antialias=True) (torchvision's Resize on a float tensor): width first,
    then height, each a float32 sum in span order."""
    x = image.astype(_F32, copy=False)
    if x.shape[1] != width:
        x = _gather(x, 1, *_torch_aa_spans(x.shape[1], width))
    if x.shape[0] != height:
        x = _gather(x, 0, *_torch_aa_spans(x.shape[0], height))
    return np.ascontiguousarray(x, dtype=_F32)


def pad_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(scaled height, scaled width, top, left) of resize_and_pad into a size x size square;
    the scale is computed in float32 and truncated, as upstream does (so 40 px at 0.7 is 27)."""
    scale = min(_F32(size) / _F32(height), _F32(size) / _F32(width))
    sh, sw = int(_F32(height) * scale), int(_F32(width) * scale)
    return sh, sw, (size - sh) // 2, (size - sw) // 2


def resize_pad(image: np.ndarray, size: int, fill: float) -> np.ndarray:
    """A1's resize_and_pad ('torch-bilinear'): uint8 RGB -> (size, size, 3) float32 on the
    0-255 scale, unrounded; `fill` (0-1) is the padding before normalization (upstream pads
    with pad_value = 0, then normalizes, so padding becomes -mean/std)."""
    sh, sw, top, left = pad_geometry(image.shape[0], image.shape[1], size)
    x = torch_bilinear_aa(image.astype(_F32) / _F32(255.0), sh, sw)
    out = np.full((size, size, 3), _F32(fill), _F32)
    out[top:top + sh, left:left + sw] = np.clip(x, 0.0, 1.0)
    return out * _F32(255.0)


def patch_fractions(height: int, width: int, size: int, patch: int) -> np.ndarray:
    """(1, (size / patch)^2) float32: the image (non-padding) fraction of each patch after
    resize_pad of a height x width image, patches in row-major order (Molmo's image_masks)."""
    sh, sw, top, left = pad_geometry(height, width, size)
    g = size // patch

    def cover(n: int, start: int) -> np.ndarray:
        cells = np.arange(g)[:, None] * patch + np.arange(patch)[None]
        return ((cells >= start) & (cells < start + n)).mean(axis=1)

    return (cover(sh, top)[:, None] * cover(sw, left)[None]).reshape(1, -1).astype(_F32)
