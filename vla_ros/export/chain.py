"""Segment chains: a package's consecutive decoder segments fused into one ONNX graph.

Where no exit decision falls between segments (full depth, a fixed exit at the last layer),
the runtime runs the chain instead of the segments one by one: one graph call instead of
one per segment, and ONNX Runtime optimizes across the old boundaries (the attention mask's
bias, computed from the same input in every segment, is computed once). The chain is built
from the segment files already written, node for node, so it holds the same weights and
computes the same outputs: `hidden_out` of the last segment and every segment's extra
outputs (keys/values, bridge features) under their own names. It repeats the segments'
weights, so it is written only for packages whose segments are small (where per-call cost
matters; `CHAIN_MAX_BYTES`) unless asked for. Needs onnx (offline side).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla_ros.runtime.package.loader import ModelPackage, load_package, write_manifest
from vla_ros.runtime.package.manifest import GraphFile, GraphSpec, Manifest

CHAIN_NAME = 'segment_chain'
CHAIN_MAX_BYTES = 32 << 20  # segment weights up to this get a chain by default


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.name == old:
            vi.name = new


def _topological(nodes, known: set[str]) -> list:
    """Nodes in an order where each input is made before it is used (fp16 conversion appends
    its input casts at the end; ONNX Runtime sorts on load, the checker does not)."""
    known, pending, ordered = set(known) | {''}, list(nodes), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ValueError(f'segment graph has a cycle or a missing input near '
                             f'{pending[0].name!r}')
        for n in ready:
            known.update(n.output)
        ordered.extend(ready)
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
    return ordered


def compose_segments(paths: list[Path], out: Path) -> None:
    """Writes one graph that runs the segment graphs at `paths` in order."""
    import onnx
    from onnx import compose

    models = [onnx.load(str(p)) for p in paths]
    base = models[0]
    nodes, inits, infos, outputs, functions = [], [], [], [], {}
    inputs = [vi for vi in base.graph.input]  # hidden, attention_mask
    for i, m in enumerate(models):
        keep = {vi.name for vi in m.graph.input} | {vi.name for vi in m.graph.output}
        keep.discard('hidden')
        keep.discard('hidden_out')
        m = compose.add_prefix(m, f's{i}/', rename_inputs=False, rename_outputs=False)
        g = m.graph
        # hidden flows from segment i - 1 into segment i; the last one's is the chain's.
        _rename(g, 'hidden', 'hidden' if i == 0 else f's{i - 1}/hidden_out')
        last = i == len(models) - 1
        _rename(g, 'hidden_out', 'hidden_out' if last else f's{i}/hidden_out')
        known = {vi.name for vi in g.input} | {t.name for t in g.initializer}
        nodes.extend(_topological(g.node, known))
        inits.extend(g.initializer)
        infos.extend(g.value_info)
        outputs.extend(vi for vi in g.output if vi.name in keep or (last and vi.name ==
                                                                     'hidden_out'))
        for f in m.functions:
            functions.setdefault((f.domain, f.name), f)
    # hidden_out first, as in a segment
    outputs.sort(key=lambda vi: vi.name != 'hidden_out')
    graph = onnx.helper.make_graph(nodes, CHAIN_NAME, inputs, outputs, inits,
                                   value_info=infos)
    model = onnx.helper.make_model(graph, opset_imports=list(base.opset_import),
                                   ir_version=base.ir_version, functions=list(functions.values()),
                                   producer_name='vla_ros chain')
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _spec(pkg: ModelPackage, segments: list[GraphSpec], variants: dict[str, GraphFile]
          ) -> GraphSpec:
    outputs = [t for t in segments[-1].outputs if t.name == 'hidden_out']
    outputs += [t for s in segments for t in s.outputs if t.name != 'hidden_out']
    return GraphSpec(name=CHAIN_NAME, role='segment_chain', inputs=segments[0].inputs,
                     outputs=tuple(outputs), variants=variants,
                     layers=(segments[0].layers[0], segments[-1].layers[1]))


def segment_bytes(pkg: ModelPackage, segments: list[GraphSpec]) -> int:
    return sum((pkg.root / f).stat().st_size for s in segments
               for f in (s.variants['fp32'].file, *s.variants['fp32'].data_files))


def chain_graph(pkg: ModelPackage, verify: bool = True, atol: float = 1e-5) -> GraphSpec:
    """Writes graphs/segment_chain[.fp16].onnx for every precision of the segments and
    returns its spec; with `verify`, checks it against the segments run one by one."""
    m = pkg.manifest
    segments = sorted(m.graphs_with_role('segment'), key=lambda g: g.layers)
    if len(segments) < 2:
        raise ValueError(f'{m.name} has {len(segments)} segment(s): nothing to chain')
    variants = {}
    for precision in segments[0].variants:
        suffix = '' if precision == 'fp32' else f'.{precision}'
        rel = f'graphs/{CHAIN_NAME}{suffix}.onnx'
        compose_segments([pkg.root / s.variants[precision].file for s in segments],
                         pkg.root / rel)
        variants[precision] = GraphFile(rel)
    spec = _spec(pkg, segments, variants)
    if verify:
        _verify(pkg, segments, spec, atol)
    return spec


def _verify(pkg: ModelPackage, segments: list[GraphSpec], chain: GraphSpec, atol: float
            ) -> None:
    import onnxruntime as ort

    from vla_ros.runtime.backends.ort import session_options

    def session(rel):
        return ort.InferenceSession(str(pkg.root / rel), session_options(None),
                                    providers=['CPUExecutionProvider'])

    rng = np.random.default_rng(0)
    shape = next(t.shape for t in segments[0].inputs if t.name == 'hidden')
    length = next(t.shape for t in segments[0].inputs if t.name == 'attention_mask')[-1]
    mask = np.ones((1, length), np.float32)
    mask[:, length - length // 4:] = 0.0  # some padding, as a short instruction has
    feeds = {'hidden': rng.standard_normal(shape).astype(np.float32), 'attention_mask': mask}
    ref, hidden = {}, feeds['hidden']
    for s in segments:
        sess = session(s.variants['fp32'].file)
        names = [o.name for o in sess.get_outputs()]
        out = dict(zip(names, sess.run(names, {'hidden': hidden, 'attention_mask': mask}),
                       strict=True))
        hidden = out.pop('hidden_out')
        ref.update(out)
    ref['hidden_out'] = hidden
    sess = session(chain.variants['fp32'].file)
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, feeds), strict=True))
    if set(got) != set(ref):
        raise RuntimeError(f'segment chain outputs {sorted(got)} differ from the segments\' '
                           f'{sorted(ref)}')
    err = max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref)
    if err > atol:
        raise RuntimeError(f'segment chain differs from its segments by {err:.1e} (> {atol})')


def with_chain(m: Manifest, chain: GraphSpec) -> Manifest:
    graphs = tuple(g for g in m.graphs if g.role != 'segment_chain') + (chain,)
    return replace(m, graphs=graphs, schema_version=max(m.schema_version, 2))


def add_segment_chain(root: str | Path, progress: Callable[[str], None] = print
                      ) -> ModelPackage:
    """Adds (or rebuilds) the segment chain of an existing package, in place."""
    pkg = load_package(root)
    chain = chain_graph(pkg)
    pkg = write_manifest(pkg.root, with_chain(pkg.manifest, chain))
    progress(f'export: {pkg.manifest.name}: segment chain of layers '
             f'{chain.layers[0]}-{chain.layers[1] - 1} added')
    return pkg
