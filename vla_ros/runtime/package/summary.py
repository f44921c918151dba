"""Human-readable summary of a model package (`vla-ros inspect`)."""

from __future__ import annotations

from vla_ros.runtime.package.loader import ModelPackage
from vla_ros.runtime.package.manifest import SpaceSpec


def _size(n: int) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    raise AssertionError('unreachable')


def _space(label: str, s: SpaceSpec) -> list[str]:
    names = ', '.join(s.names[:8]) + (f', ... (+{s.dim - 8})' if s.dim > 8 else '')
    pad = f' padded to {s.model_dim}' if s.model_dim > s.dim else ''
    return [f'{label}: {s.dim}{pad}, normalization {s.normalization.kind}'
            f'{" (clipped)" if s.normalization.clip else ""}', f'  [{names}]']


def describe(pkg: ModelPackage) -> str:
    m = pkg.manifest
    lines = [
        f'{m.name}  ({pkg.root})',
        f'family {m.family}, head {m.head.type}, schema v{m.schema_version}, '
        f'{len(m.files)} files, {_size(pkg.total_bytes)}',
    ]
    if m.embodiment:
        lines.append('embodiment: ' + ', '.join(f'{k}={v}' for k, v in m.embodiment.items()
                                                if not isinstance(v, (list, dict))))
    lines.append('cameras:')
    for c in m.cameras:
        crop = f', center crop {c.crop_scale:g}' if c.crop_scale < 1 else ''
        if c.steps:  # upstream image steps run first (A1's resize_pad replaces the resize)
            crop += ', steps ' + ' + '.join(st['op'] for st in c.steps)
        lines.append(f'  {c.name}: {c.width}x{c.height} {c.channel_order}, {c.resize}{crop}, '
                     f'{len(c.norms)} norm stream(s){"" if c.required else ", optional"}')
    lines += _space('state', m.state)
    lines += _space('action', m.action)
    a = m.action
    lines.append(f'  chunk {a.chunk_len} x {a.dt_s * 1000:g} ms ({a.chunk_len * a.dt_s:g} s), '
                 f'{a.mode}')
    lines.append(f'prompt: "{m.prompt.template}", max {m.prompt.max_length} tokens, '
                 f'tokenizer {m.prompt.tokenizer_file}')
    e = m.exits
    lines.append(f'exits: {len(e.layers)} of {e.num_layers} layers at {list(e.layers)}')
    if not e.threshold_sets:
        lines.append('  no calibrated thresholds (runs full depth; see `vla-ros calibrate`)')
    for ts in e.threshold_sets:
        default = ' [default]' if ts.name == e.default_threshold_set else ''
        values = ', '.join(f'{v:.3g}' for v in ts.values)
        lines.append(f'  {ts.name}{default}: {ts.metric}, expected compute '
                     f'{ts.expected_compute_fraction:.0%}, thresholds [{values}]')
    if m.flow:
        f = m.flow
        lines.append(f'flow: noise at t={f.noise_at} ({f.noise}), {f.num_steps} steps, '
                     f'{f.truncated_steps} per exit when truncated, warm start {f.warm_start}')
    lines.append('graphs:')
    for g in m.graphs:
        sizes = []
        for prec, v in sorted(g.variants.items()):
            n = sum(m.files[f].bytes for f in (v.file, *v.data_files) if f in m.files)
            sizes.append(f'{prec} {_size(n)}')
        span = f' layers {g.layers[0]}-{g.layers[1] - 1}' if g.layers else ''
        ins = ', '.join(f'{t.name}{list(t.shape)}' for t in g.inputs)
        outs = ', '.join(f'{t.name}{list(t.shape)}' for t in g.outputs)
        lines.append(f'  {g.name} ({g.role}{span}; {", ".join(sizes)})')
        lines.append(f'    in: {ins or "-"}')
        lines.append(f'    out: {outs}')
    return '\n'.join(lines)
