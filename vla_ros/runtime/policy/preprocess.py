"""Observation -> model inputs, as the package's manifest prescribes.

Images: channel conversion from the ROS encoding, optional center crop, one cv2 resize, then
every normalization stream as one fused multiply-add per channel ((x/255 - mean)/std =
x * 1/(255 std) - mean/std), written straight into a preallocated CHW buffer.
State and actions: per-entry normalization of the named (unpadded) entries; padding is zeros.
Prompt: the instruction through the template and tokenizer, laid out with the image, query and
action placeholders; cached per instruction (instructions change rarely, images every cycle).
Imports numpy, cv2 and tokenizers only.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from vla_ros.runtime.package.manifest import CameraSpec, Normalization, PromptSpec, SpaceSpec

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
        self.interp = _INTERP[spec.resize]
        std = np.array([n.std for n in spec.norms], np.float32)  # (streams, 3)
        mean = np.array([n.mean for n in spec.norms], np.float32)
        self.scale = (1.0 / (255.0 * std)).reshape(-1, 1, 1)  # (streams*3, 1, 1)
        self.offset = (-mean / std).reshape(-1, 1, 1)
        self.streams = len(spec.norms)

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
        image = self._crop(image)
        image = cv2.resize(image, (self.spec.width, self.spec.height), interpolation=self.interp)
        conv = (_TO_RGB if self.spec.channel_order == 'rgb' else _TO_BGR)[encoding]
        if conv is not None:
            image = cv2.cvtColor(image, conv)
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
        out = np.empty((1, 3 * self.streams, self.spec.height, self.spec.width), np.float32)
        for s in range(self.streams):
            sl = slice(3 * s, 3 * s + 3)
            np.multiply(chw, self.scale[sl], out=out[0, sl])
            out[0, sl] += self.offset[sl]
        return out

    def _crop(self, image: np.ndarray) -> np.ndarray:
        if self.spec.crop_scale >= 1.0:
            return image
        h, w = image.shape[:2]
        side = math.sqrt(self.spec.crop_scale)  # crop_scale is an area fraction
        ch, cw = max(int(round(h * side)), 1), max(int(round(w * side)), 1)
        top, left = (h - ch) // 2, (w - cw) // 2
        return image[top:top + ch, left:left + cw]

    def blank(self) -> np.ndarray:
        """The input for a missing optional view: zeros, or a black frame normalized."""
        out = np.zeros((1, 3 * self.streams, self.spec.height, self.spec.width), np.float32)
        return out + black_offset(self.offset) if self.spec.blank == 'black' else out


def black_offset(offset: np.ndarray) -> np.ndarray:
    """Evo-1's missing view: its server gets a black frame, so the model sees -mean/std."""
    return offset[None].astype(np.float32)


def _bounds(n: Normalization) -> tuple[np.ndarray, np.ndarray] | None:
    keys = {'bounds': ('min', 'max'), 'bounds_q99': ('q01', 'q99')}.get(n.kind)
    if keys is None:
        return None
    return np.array(n.stats[keys[0]], np.float64), np.array(n.stats[keys[1]], np.float64)


class SpaceNormalizer:
    """Raw vector (named entries) <-> model vector (normalized, zero-padded).

    bounds / bounds_q99: 2 (x - lo) / (hi - lo + 1e-8) - 1 and back as
    0.5 (y + 1)(hi - lo + 1e-8) + lo (Evo-1's and VLA-Adapter's formulas); mean_std: (x - mu)
    / sigma; identity: unchanged."""

    def __init__(self, spec: SpaceSpec) -> None:
        self.spec = spec
        n = spec.normalization
        self.bounds = _bounds(n)
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
            y = 2.0 * (raw - lo) / (hi - lo + 1e-8) - 1.0
        elif kind == 'mean_std':
            y = (raw - self.mean) / self.std
        else:
            y = raw
        if self.spec.normalization.clip:
            y = np.clip(y, -1.0, 1.0)
        out = np.zeros((*raw.shape[:-1], self.spec.model_dim), np.float32)
        out[..., :self.spec.dim] = y
        return out

    def denormalize(self, model: np.ndarray) -> np.ndarray:
        y = np.asarray(model, np.float64)[..., :self.spec.dim]
        if self.bounds is not None:
            lo, hi = self.bounds
            return 0.5 * (y + 1.0) * (hi - lo + 1e-8) + lo
        if self.spec.normalization.kind == 'mean_std':
            return y * self.std + self.mean
        return y.copy()


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
                ids += text_ids + [s.pad_id] * pad
                mask += [1.0] * len(text_ids) + [0.0] * pad
            elif item['kind'] == 'image':
                ids += [item['id']] * item['count']
                # A missing optional view is zero-filled and masked out (Evo-1's image_mask).
                mask += [0.0 if item['camera'] in missing else 1.0] * item['count']
            else:
                run = item['ids'] * item.get('repeat', 1)
                ids += run
                mask += [1.0] * len(run)
        return (np.array([ids], np.int64), np.array([mask], np.float32))

    def truncated(self, instruction: str) -> bool:
        n = len(self.tokenizer.encode(self.spec.template.format(instruction=instruction),
                                      add_special_tokens=False).ids)
        return n > self.spec.max_length
