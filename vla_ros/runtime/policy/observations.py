"""The observation-set file: recorded (or simulated) observations for calibration and benches.

One `.npz` archive, no pickled objects (loaded with allow_pickle=False):
  image.<camera>   (N, H, W, 3) uint8, RGB
  state            (N, S) float, in the package's state order
  instruction      (N,) unicode strings
  stamp_s          (N,) float, optional
Cameras must match the package's slots by name; sizes may differ from the model's (they are
preprocessed like live images).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from vla_ros.runtime.policy.policy import Observation


def save_observations(path: str | Path, observations: list[Observation]) -> Path:
    if not observations:
        raise ValueError('no observations to save')
    cams = sorted(observations[0].images)
    arrays: dict[str, np.ndarray] = {}
    for cam in cams:
        frames = []
        for o in observations:
            img, enc = o.images[cam]
            if enc != 'rgb8':
                raise ValueError(f'observation sets store rgb8 images; camera {cam} is {enc}')
            frames.append(img)
        arrays[f'image.{cam}'] = np.stack(frames)
    arrays['state'] = np.stack([np.asarray(o.state, np.float64) for o in observations])
    arrays['instruction'] = np.array([o.instruction for o in observations], dtype=np.str_)
    arrays['stamp_s'] = np.array([o.stamp_s for o in observations], np.float64)
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path if path.suffix == '.npz' else path.with_suffix(path.suffix + '.npz')


def load_observations(path: str | Path) -> list[Observation]:
    """Raises ValueError naming what is wrong with the file."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f'{path} is not an observation set (.npz): {e}') from e
    with data:
        keys = set(data.files)
        for required in ('state', 'instruction'):
            if required not in keys:
                raise ValueError(f'{path} has no {required!r} array (has {sorted(keys)})')
        cams = sorted(k[len('image.'):] for k in keys if k.startswith('image.'))
        if not cams:
            raise ValueError(f'{path} has no image.<camera> arrays')
        state = data['state']
        n = state.shape[0]
        images = {c: data[f'image.{c}'] for c in cams}
        for c, arr in images.items():
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != n or arr.shape[3] != 3:
                raise ValueError(f'{path}: image.{c} must be (N={n}, H, W, 3) uint8, got '
                                 f'{arr.dtype} {arr.shape}')
        instr = data['instruction']
        stamps = data['stamp_s'] if 'stamp_s' in keys else np.arange(n, dtype=np.float64)
    return [Observation(images={c: (images[c][i], 'rgb8') for c in cams}, state=state[i],
                        instruction=str(instr[i]), stamp_s=float(stamps[i])) for i in range(n)]
