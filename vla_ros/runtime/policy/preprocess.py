"""Observation -> model inputs, as the package's manifest prescribes.

Images: channel conversion from the ROS encoding, the camera's upstream image steps (JPEG round
trip, TF resize, centre crop, A1's resize-and-pad with its per-patch image fraction:
image_ops.py), optional center crop, one resize (cv2, or PIL /
TensorFlow's where the checkpoint was trained on those), per-stream letterbox, then every
normalization stream as one fused multiply-add per channel ((x/255 - mean)/std =
x * 1/(255 std) - mean/std), written straight into a preallocated CHW buffer.
State and actions: per-entry normalization of the named (unpadded) entries, entries outside
the mask left raw; padding is zeros. Actions: gripper post-processing after de-normalization.
Prompt: the instruction through the template and tokenizer, laid out with the image, query and
action placeholders; cached per instruction (instructions change rarely, images every cycle).
Imports numpy, cv2, tokenizers (and PIL / simplejpeg through image_ops).
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from vla_ros.runtime.package.manifest import (
    CameraSpec,
    GripperSpec,
    Normalization,
    PromptSpec,
    SpaceSpec,
)
from vla_ros.runtime.policy import image_ops

ENCODINGS = ('rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8')
_INTERP = {'bicubic': cv2.INTER_CUBIC, 'bilinear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA,
           'lanczos': cv2.INTER_LANCZOS4, 'nearest': cv2.INTER_NEAREST}
# Converts an encoding to the model's channel order in one cv2 call (None: already right).
_TO_RGB = {'rgb8': None, 'bgr8': cv2.COLOR_BGR2RGB, 'mono8': cv2.COLOR_GRAY2RGB,
           'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB}
_TO_BGR = {'rgb8': cv2.COLOR_RGB2BGR, 'bgr8': None, 'mono8': cv2.COLOR_GRAY2BGR,
           'rgba8': cv2.COLOR_RGBA2BGR, 'bgra8': cv2.COLOR_BGRA2BGR}


class ImagePreprocessor:
    """One camera slot. `__call__` returns (1, C, H, W) float32; a new array each call (the
    previous result may still be in use by a backend)."""

    def __init__(self, spec: CameraSpec) -> None:
        self.spec = spec
        self.interp = _INTERP.get(spec.resize)
        std = np.array([n.std for n in spec.norms], np.float32)  # (streams, 3)
        mean = np.array([n.mean for n in spec.norms], np.float32)
        self.scale = (1.0 / (255.0 * std)).reshape(-1, 1, 1)  # (streams*3, 1, 1)
        self.offset = (-mean / std).reshape(-1, 1, 1)
        self.streams = len(spec.norms)
        self._masks: dict[tuple[int, int], np.ndarray | None] = {}

    def __call__(self, image: np.ndarray, encoding: str) -> np.ndarray:
        if encoding not in ENCODINGS:
            raise ValueError(f'camera {self.spec.name!r}: encoding {encoding!r} is not one of '
                             f'{ENCODINGS}')
        expected_channels = 1 if encoding == 'mono8' else (4 if encoding[-2] == 'a' else 3)
        shape_ok = image.ndim == 2 if expected_channels == 1 else (
            image.ndim == 3 and image.shape[2] == expected_channels)
        if image.dtype != np.uint8 or not shape_ok or min(image.shape[:2]) < 2:
            raise ValueError(f'camera {self.spec.name!r}: expected a {encoding} uint8 image, got '
                             f'{image.dtype} {image.shape}')
        conv = (_TO_RGB if self.spec.channel_order == 'rgb' else _TO_BGR)[encoding]
        if conv is not None:  # per pixel, so it commutes with the resize
            image = cv2.cvtColor(image, conv)
        image = apply_steps(image, self.spec.steps)
        image = self._crop(image)
        out = np.empty((1, 3 * self.streams, self.spec.height, self.spec.width), np.float32)
        if self.spec.letterbox:
            for s, norm in enumerate(self.spec.norms):
                fill = norm.fill or tuple(int(round(m * 255)) for m in norm.mean)
                self._normalize(self._resize(image_ops.letterbox(image, fill)), s, out)
            return out
        chw = self._resize(image)
        for s in range(self.streams):
            self._normalize(chw, s, out)
        return out

    def patch_mask(self, height: int, width: int) -> np.ndarray | None:
        """(1, P) float32 image fraction per ViT patch of a height x width input, from the
        camera's resize_pad step (None without one). It depends on the input size only."""
        key = (height, width)
        if key not in self._masks:  # a camera's frame size rarely changes
            self._masks[key] = _patch_mask(self.spec.steps, height, width)
        mask = self._masks[key]
        return None if mask is None else mask.copy()

    def _resize(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, height, width) float32."""
        h, w = self.spec.height, self.spec.width
        if image.dtype != np.uint8:  # resize_pad's unrounded output, already (h, w)
            return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        if image_ops.is_custom_resize(self.spec.resize):
            image = image_ops.resize(image, h, w, self.spec.resize)
        else:
            image = cv2.resize(image, (w, h), interpolation=self.interp)
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)

    def _normalize(self, chw: np.ndarray, s: int, out: np.ndarray) -> None:
        sl = slice(3 * s, 3 * s + 3)
        np.multiply(chw, self.scale[sl], out=out[0, sl])
        out[0, sl] += self.offset[sl]

    def _crop(self, image: np.ndarray) -> np.ndarray:
        if self.spec.crop_scale >= 1.0:
            return image
        h, w = image.shape[:2]
        side = math.sqrt(self.spec.crop_scale)  # crop_scale is an area fraction
        ch, cw = max(int(round(h * side)), 1), max(int(round(w * side)), 1)
        top, left = (h - ch) // 2, (w - cw) // 2
        return image[top:top + ch, left:left + cw]

    def blank(self) -> np.ndarray:
        """The input for a missing optional view: zeros in the model's space, or (`missing`
        = 'black') a black image normalized per stream, -mean/std (Evo-1's blank view)."""
        out = np.zeros((1, 3 * self.streams, self.spec.height, self.spec.width), np.float32)
        if self.spec.missing == 'black':
            out += self.offset[None]
        return out


def apply_steps(image: np.ndarray, steps) -> np.ndarray:
    """The camera's upstream image steps (manifest IMAGE_STEPS), in order, on uint8 RGB
    (a last resize_pad step returns float32 on the 0-255 scale)."""
    for step in steps:
        op = step['op']
        if op == 'resize_pad':
            image = image_ops.resize_pad(image, step['size'], step['fill'])
        elif op == 'jpeg':
            image = image_ops.jpeg_roundtrip(image, step['quality'])
        elif op == 'resize':
            h, w, method = step['height'], step['width'], step['method']
            image = (image_ops.resize(image, h, w, method) if image_ops.is_custom_resize(method)
                     else cv2.resize(image, (w, h), interpolation=_INTERP[method]))
        else:
            image = image_ops.tf_center_crop(image, step['area'])
    return image


def _patch_mask(steps, height: int, width: int) -> np.ndarray | None:
    for step in steps:
        if step['op'] == 'resize':
            height, width = step['height'], step['width']
        elif step['op'] == 'resize_pad':  # the last step (parse_parts checks)
            return image_ops.patch_fractions(height, width, step['size'], step['patch'])
    return None


def _bounds(n: Normalization) -> tuple[np.ndarray, np.ndarray] | None:
    keys = {'bounds': ('min', 'max'), 'bounds_q99': ('q01', 'q99')}.get(n.kind)
    if keys is None:
        return None
    return np.array(n.stats[keys[0]], np.float64), np.array(n.stats[keys[1]], np.float64)


class SpaceNormalizer:
    """Raw vector (named entries) <-> model vector (normalized, zero-padded).

    bounds / bounds_q99: 2 (x - lo) / (hi - lo + eps) - 1 and back as
    0.5 (y + 1)(hi - lo + eps) + lo (Evo-1's and VLA-Adapter's formulas, eps = 1e-8; EdgeVLA
    un-normalizes with eps = 0); mean_std: (x - mu) / sigma; identity: unchanged. Entries
    whose `mask` is False pass through raw both ways (and are not clipped)."""

    def __init__(self, spec: SpaceSpec) -> None:
        self.spec = spec
        n = spec.normalization
        self.bounds = _bounds(n)
        self.eps = n.eps
        self.mask = np.array(n.mask, bool) if n.mask else None
        if n.kind == 'mean_std':
            self.mean = np.array(n.stats['mean'], np.float64)
            self.std = np.array(n.stats['std'], np.float64)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float64)
        if raw.shape[-1] != self.spec.dim:
            raise ValueError(f'expected {self.spec.dim} values ({", ".join(self.spec.names)}), '
                             f'got {raw.shape[-1]}')
        kind = self.spec.normalization.kind
        if self.bounds is not None:
            lo, hi = self.bounds
            y = 2.0 * (raw - lo) / (hi - lo + self.eps) - 1.0
        elif kind == 'mean_std':
            y = (raw - self.mean) / self.std
        else:
            y = raw
        if self.spec.normalization.clip:
            y = np.clip(y, -1.0, 1.0)
        if self.mask is not None:
            y = np.where(self.mask, y, raw)
        out = np.zeros((*raw.shape[:-1], self.spec.model_dim), np.float32)
        out[..., :self.spec.dim] = y
        return out

    def denormalize(self, model: np.ndarray) -> np.ndarray:
        y = np.asarray(model, np.float64)[..., :self.spec.dim]
        if self.bounds is not None:
            lo, hi = self.bounds
            x = 0.5 * (y + 1.0) * (hi - lo + self.eps) + lo
        elif self.spec.normalization.kind == 'mean_std':
            x = y * self.std + self.mean
        else:
            return y.copy()
        return np.where(self.mask, x, y) if self.mask is not None else x


def postprocess_gripper(actions: np.ndarray, g: GripperSpec | None) -> np.ndarray:
    """The gripper entry of (H, A) robot-space actions, as the checkpoint's client expects it:
    rescale [0, 1] -> [-1, 1], then sign, then negate (each if enabled)."""
    if g is None:
        return actions
    out = np.array(actions, np.float64)
    v = out[..., g.index]
    if g.rescale:
        v = 2.0 * v - 1.0
    if g.binarize:
        v = np.sign(v)
    if g.invert:
        v = -v
    out[..., g.index] = v
    return out


class PromptBuilder:
    """Instruction -> (input_ids, attention_mask), each (1, T); cached per instruction and
    set of present cameras."""

    def __init__(self, spec: PromptSpec, tokenizer_path: str) -> None:
        from tokenizers import Tokenizer

        self.spec = spec
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.length = spec.sequence_length
        self._build = lru_cache(maxsize=64)(self._build_uncached)

    def __call__(self, instruction: str, missing_cameras: frozenset[str] = frozenset()
                 ) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self._build(instruction, missing_cameras)
        return ids.copy(), mask.copy()

    def _build_uncached(self, instruction: str, missing: frozenset[str]
                        ) -> tuple[np.ndarray, np.ndarray]:
        s = self.spec
        text = s.template.format(instruction=instruction.lower() if s.lowercase else instruction)
        text_ids = self.tokenizer.encode(text, add_special_tokens=False).ids[:s.max_length]
        ids, mask = [], []
        for item in s.layout:
            if item['kind'] == 'text':
                pad = s.max_length - len(text_ids)
                if s.padding_side == 'left':
                    ids += [s.pad_id] * pad + text_ids
                    mask += [0.0] * pad + [1.0] * len(text_ids)
                else:
                    ids += text_ids + [s.pad_id] * pad
                    mask += [1.0] * len(text_ids) + [0.0] * pad
            elif item['kind'] == 'image':
                run = [item['id']] * item['count']
                if 'cols' in item:  # Molmo's rows: <im_col> after every `cols` patches
                    run = ([item['id']] * item['cols'] + [item['col_id']]) * (
                        item['count'] // item['cols'])
                ids += run
                # A missing optional view is zero-filled and masked out (Evo-1's image_mask).
                mask += [0.0 if item['camera'] in missing else 1.0] * len(run)
            else:
                run = item['ids'] * item.get('repeat', 1)
                ids += run
                mask += [1.0] * len(run)
        return (np.array([ids], np.int64), np.array([mask], np.float32))

    def truncated(self, instruction: str) -> bool:
        n = len(self.tokenizer.encode(self.spec.template.format(instruction=instruction),
                                      add_special_tokens=False).ids)
        return n > self.spec.max_length
