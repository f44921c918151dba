"""Cross-field consistency of a parsed manifest, and the error helpers the parser shares.

Every failure is a `PackageError` naming the field, the value and what is allowed. Imports
the schema only.
"""

from __future__ import annotations

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.manifest import (
    FLOW_HEADS,
    LAYERED_ROLES,
    GraphSpec,
    Manifest,
    TensorSpec,
)


def fail(kind: str, where: str, message: str) -> PackageError:
    return PackageError(kind, f'manifest {where}: {message}')



def unique(values: tuple[str, ...], where: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise fail('inconsistent', where, f'name {v!r} appears more than once')
        seen.add(v)


def _check_dim(g: GraphSpec, t: TensorSpec, axis: int, expected: int, what: str) -> None:
    if len(t.shape) < abs(axis):
        raise fail('inconsistent', f'graphs[{g.name}].{t.name}',
                    f'rank {len(t.shape)} is too small for {what}')
    d = t.shape[axis]
    if isinstance(d, int) and d != expected:
        raise fail('inconsistent', f'graphs[{g.name}].{t.name}.shape',
                    f'{list(t.shape)}: dimension {axis} is {d}, but {what} is {expected}')


def _check_tiling(m: Manifest, segments: list[GraphSpec]) -> None:
    if not segments:
        return
    expected_start = 0
    for g in segments:
        if g.layers[0] != expected_start:
            raise fail('inconsistent', f'graphs[{g.name}].layers',
                        f'starts at {g.layers[0]}; {g.role} graphs must tile layers '
                        f'0..{m.exits.num_layers - 1} without gaps or overlap '
                        f'(expected start {expected_start})')
        expected_start = g.layers[1]
    if expected_start != m.exits.num_layers:
        raise fail('inconsistent', 'graphs', f'{segments[0].role} graphs end at layer '
                    f'{expected_start}, the backbone has {m.exits.num_layers} layers')
    ends = {g.layers[1] - 1 for g in segments}
    missing = [layer for layer in m.exits.layers if layer not in ends]
    if missing:
        raise fail('inconsistent', 'exits.layers', f'exit layers {missing} do not end a '
                    f'{segments[0].role} graph; their ends are {sorted(ends)}')


def check_consistency(m: Manifest) -> None:
    """Checks that the parts of a manifest agree with each other."""
    if (m.head.type in FLOW_HEADS) != (m.flow is not None):
        raise fail('inconsistent', 'flow', f'head type {m.head.type!r} '
                    f'{"needs" if m.head.type in FLOW_HEADS else "takes no"} flow settings')
    unique(tuple(g.name for g in m.graphs), 'graphs')
    if not m.graphs:
        raise fail('invalid', 'graphs', 'a package needs at least one graph')
    # Segments (and head segments) tile the backbone exactly, with a boundary after each exit.
    for role in LAYERED_ROLES:
        _check_tiling(m, sorted(m.graphs_with_role(role), key=lambda g: g.layers))
    bounds = {0} | {g.layers[1] for g in m.graphs_with_role('segment')}
    for g in m.graphs_with_role('segment_chain'):
        if not {g.layers[0], g.layers[1]} <= bounds:
            raise fail('inconsistent', f'graphs[{g.name}].layers',
                        f'{list(g.layers)} must start and end where segments do '
                        f'({sorted(bounds)})')
    cams = {c.name: c for c in m.cameras}
    for g in m.graphs:
        for t in g.inputs + g.outputs:
            if t.name.startswith('image.'):
                cam = cams.get(t.name[len('image.'):])
                if cam is None:
                    raise fail('inconsistent', f'graphs[{g.name}].{t.name}',
                                f'names no camera slot; slots are {sorted(cams)}')
                _check_dim(g, t, -1, cam.width, f'camera {cam.name!r} width')
                _check_dim(g, t, -2, cam.height, f'camera {cam.name!r} height')
                _check_dim(g, t, -3, cam.channels, f'camera {cam.name!r} channels')
            elif t.name == 'state':
                _check_dim(g, t, -1, m.state.model_dim, 'state.model_dim')
            elif t.name in ('input_ids', 'attention_mask'):
                _check_dim(g, t, -1, m.prompt.sequence_length, 'the prompt layout length')
            elif t.name in ('actions', 'noisy_actions', 'velocity'):
                _check_dim(g, t, -1, m.action.model_dim, 'action.model_dim')
                _check_dim(g, t, -2, m.action.chunk_len, 'action.chunk_len')
    for ts in m.exits.threshold_sets:
        if len(ts.values) != len(m.exits.layers) - 1:
            raise fail('inconsistent', f'exits.threshold_sets[{ts.name}]',
                        f'{len(ts.values)} values for {len(m.exits.layers)} exits')
