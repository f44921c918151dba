"""Parsing of the manifest's spaces and cameras: normalization (with masks), state and
action spaces (with gripper post-processing), camera slots (with their image steps).

Every failure is a `PackageError` naming the field. No file access; standard library only.
"""

from __future__ import annotations

from typing import Any

from vla_ros.runtime.package.consistency import fail, unique
from vla_ros.runtime.package.manifest import (
    ACTION_MODES,
    IMAGE_STEPS,
    MISSING_VIEW,
    NORM_KINDS,
    RESIZE_MODES,
    ActionSpec,
    CameraSpec,
    ChannelNorm,
    GripperSpec,
    Normalization,
    SpaceSpec,
)
from vla_ros.runtime.package.reader import Reader


def parse_norm(r: Reader, length: int) -> Normalization:
    kind = r.choice('kind', tuple(NORM_KINDS))
    stats_r = r.sub('stats', default={})
    stats = {}
    for key in NORM_KINDS[kind]:
        stats[key] = stats_r.floats(key, length)
    # Extra statistics (e.g. mean/std beside bounds) are kept for reference, also validated.
    for key in list(stats_r.data):
        if key not in stats:
            stats[key] = stats_r.floats(key, length)
    clip = r.get('clip', bool, False)
    mask = r.get('mask', list, [])
    if mask and (len(mask) != length or not all(isinstance(m, bool) for m in mask)):
        raise fail('inconsistent', f'{r.where}.mask', f'expected {length} booleans (one per '
                    f'named entry), got {mask!r:.80}')
    eps = r.number('eps', lo=0.0, hi=1e-3, default=1e-8)
    r.done()
    if kind == 'mean_std' and any(s <= 0 for s in stats['std']):
        raise fail('invalid', f'{r.where}.stats.std', 'every std must be > 0')
    lo_hi = {'bounds': ('min', 'max'), 'bounds_q99': ('q01', 'q99')}.get(kind)
    if lo_hi:
        lo, hi = stats[lo_hi[0]], stats[lo_hi[1]]
        bad = [i for i, (a, b) in enumerate(zip(lo, hi, strict=True)) if a > b]
        if bad:
            raise fail('inconsistent', f'{r.where}.stats',
                        f'{lo_hi[0]} > {lo_hi[1]} at indices {bad}')
    return Normalization(kind=kind, stats=stats, clip=clip, mask=tuple(mask), eps=eps)


def parse_space(r: Reader, action: bool) -> SpaceSpec:
    names = r.strings('names')
    if not names:
        raise fail('invalid', f'{r.where}.names', 'must name at least one entry')
    unique(names, f'{r.where}.names')
    model_dim = r.int_in('model_dim', len(names))
    norm = parse_norm(r.sub('normalization'), len(names))
    if not action:
        r.done()
        return SpaceSpec(names=names, model_dim=model_dim, normalization=norm)
    chunk_len = r.int_in('chunk_len', 1, 10_000)
    dt_s = r.number('dt_s', lo=0.0, hi=10.0, lo_open=True)
    mode = r.choice('mode', ACTION_MODES)
    gripper = None
    gr = r.sub('gripper', None)
    if gr is not None:
        gripper = GripperSpec(index=gr.int_in('index', 0, len(names) - 1),
                              rescale=gr.get('rescale', bool, False),
                              binarize=gr.get('binarize', bool, False),
                              invert=gr.get('invert', bool, False))
        gr.done()
    r.done()
    return ActionSpec(names=names, model_dim=model_dim, normalization=norm,
                      chunk_len=chunk_len, dt_s=dt_s, mode=mode, gripper=gripper)


def parse_camera(r: Reader) -> CameraSpec:
    name = r.get('name', str)
    norms = []
    for nr in r.items('norms'):
        fill = nr.get('fill', (list, type(None)), None)
        if fill is not None and (len(fill) != 3 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in fill)):
            raise fail('invalid', f'{nr.where}.fill', f'expected 3 ints in [0, 255], got {fill}')
        norms.append(ChannelNorm(mean=nr.floats('mean', 3), std=nr.floats('std', 3),
                                 fill=tuple(fill) if fill is not None else None))
        if any(s <= 0 for s in norms[-1].std):
            raise fail('invalid', f'{nr.where}.std', 'every std must be > 0')
        nr.done()
    if not norms:
        raise fail('invalid', f'{r.where}.norms', 'needs at least one normalization stream')
    cam = CameraSpec(
        name=name,
        height=r.int_in('height', 8, 4096),
        width=r.int_in('width', 8, 4096),
        channel_order=r.choice('channel_order', ('rgb', 'bgr'), 'rgb'),
        resize=r.choice('resize', RESIZE_MODES, 'bicubic'),
        crop_scale=r.number('crop_scale', lo=0.0, hi=1.0, default=1.0, lo_open=True),
        norms=tuple(norms),
        required=r.get('required', bool, True),
        steps=tuple(parse_step(st) for st in r.items('steps', [])),
        letterbox=r.get('letterbox', bool, False),
        missing=r.choice('missing', MISSING_VIEW, 'zeros'),
    )
    r.done()
    pads = [i for i, st in enumerate(cam.steps) if st['op'] == 'resize_pad']
    if pads and (pads != [len(cam.steps) - 1] or cam.crop_scale < 1.0 or cam.letterbox
                 or (cam.height, cam.width) != (cam.steps[-1]['size'],) * 2):
        # Its float output and patch mask are what the model sees: nothing may resample them.
        raise fail('invalid', f'{r.where}.steps', 'a resize_pad step must be the last step, '
                   'with height = width = its size, no crop_scale and no letterbox')
    return cam


def parse_step(r: Reader) -> dict[str, Any]:
    op = r.choice('op', tuple(IMAGE_STEPS))
    step: dict[str, Any] = {'op': op}
    if op == 'jpeg':
        step['quality'] = r.int_in('quality', 1, 100)
    elif op == 'resize':
        step['height'] = r.int_in('height', 8, 4096)
        step['width'] = r.int_in('width', 8, 4096)
        step['method'] = r.choice('method', RESIZE_MODES)
    elif op == 'resize_pad':
        step['size'] = r.int_in('size', 8, 4096)
        step['patch'] = r.int_in('patch', 1, 4096)
        step['fill'] = r.number('fill', lo=0.0, hi=1.0)
        step['method'] = r.choice('method', ('torch_bilinear',))
        if step['size'] % step['patch']:
            raise fail('invalid', f'{r.where}.patch', f'{step["patch"]} does not divide size '
                       f'{step["size"]}')
    else:
        step['area'] = r.number('area', lo=0.0, hi=1.0, lo_open=True)
        step['method'] = r.choice('method', ('tf_bilinear',))
    r.done()
    return step
