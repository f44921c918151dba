"""torch VLA -> ONNX graphs -> model package.

Each graph of `plan_graphs` is exported with torch's dynamo exporter, checked against the
torch module on its example inputs in ONNX Runtime, optionally converted to fp16 (I/O kept in
fp32, so both variants share one I/O contract), and described in the manifest from the saved
graph itself. Graphs above 64 MiB keep their weights in an external `.onnx.data` file.
Graphs are exported side by side in worker processes where CPUs allow (export/parallel.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.export import parallel
from vla_ros.export.graphs import GraphPlan, plan_graphs
from vla_ros.model.config import VLAConfig
from vla_ros.model.vla import VLA
from vla_ros.runtime.package.loader import ModelPackage, write_manifest
from vla_ros.runtime.package.manifest import (
    ActionSpec,
    CameraSpec,
    ChannelNorm,
    ExitSpec,
    FlowSpec,
    GraphFile,
    GraphSpec,
    GripperSpec,
    HeadSpec,
    Manifest,
    Normalization,
    PromptSpec,
    SpaceSpec,
    TensorSpec,
)

IMAGENET = ChannelNorm((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SIGLIP = ChannelNorm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_CLIP = ChannelNorm((0.48145466, 0.4578275, 0.40821073),
                          (0.26862954, 0.26130258, 0.27577711))
EXTERNAL_DATA_BYTES = 64 << 20
_ONNX_DTYPES = {1: 'float32', 10: 'float16', 7: 'int64', 6: 'int32', 9: 'bool', 2: 'uint8'}


class ExportError(RuntimeError):
    """The model cannot be exported as configured; the message says why and what to change."""


@dataclass(frozen=True)
class ExportSpec:
    """What the package needs besides the network: the robot-facing description."""

    name: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    dt_s: float
    state_norm: Normalization = Normalization()
    action_norm: Normalization = Normalization()
    action_mode: str = 'absolute'
    embodiment: dict[str, Any] = field(default_factory=dict)
    template: str = '{instruction}'
    flow_steps: int = 10
    truncated_steps: int = 2
    precisions: tuple[str, ...] = ('fp32',)
    # Also export the head step's VJP (graph role head_step_vjp), which merge_strategy
    # rtc_guided needs; it repeats the step's weights, so it is asked for.
    rtc_vjp: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    # Upstream conventions of a converted checkpoint (defaults: our own models'):
    camera: dict[str, Any] = field(default_factory=dict)  # CameraSpec fields for every view
    lowercase: bool = False  # the instruction is lower-cased before the template
    gripper: dict[str, Any] | None = None  # GripperSpec fields (post-processing)
    optional_cameras: tuple[str, ...] = ()  # may be missing (filled as `missing` says, masked)
    action_mask: bool = False  # flow heads: hold the padded action dims at zero (Evo-1)
    # The segments fused into one graph for runs without exit decisions (chain.py); None:
    # only when the segments are small, where one call instead of one per segment matters.
    segment_chain: bool | None = None


def camera_specs(cfg: VLAConfig, overrides: dict[str, Any] | None = None,
                 optional: tuple[str, ...] = ()) -> tuple[CameraSpec, ...]:
    """One slot per camera; `overrides` (ExportSpec.camera) replaces CameraSpec fields, with
    `norms` and `steps` given as lists of dicts (JSON, as the checkpoint stores them)."""
    if not cfg.cameras:  # a vision-less model (A1 checkpoints without the vision tower)
        return ()
    norms = {'internvit': (IMAGENET,), 'prismatic': (IMAGENET, SIGLIP),
             'molmo_clip': (OPENAI_CLIP,)}[cfg.vision.kind]
    size = cfg.vision.image_size
    extra = dict(overrides or {})
    if 'norms' in extra:
        extra['norms'] = tuple(ChannelNorm(tuple(n['mean']), tuple(n['std']),
                                           tuple(n['fill']) if n.get('fill') else None)
                               for n in extra['norms'])
    if 'steps' in extra:
        extra['steps'] = tuple(dict(st) for st in extra['steps'])
    base = {'height': size, 'width': size, 'channel_order': 'rgb', 'resize': 'bicubic',
            'norms': norms}
    return tuple(CameraSpec(name=c, **{**base, 'required': c not in optional, **extra})
                 for c in cfg.cameras)


def _flow_spec(cfg: VLAConfig, spec: ExportSpec) -> FlowSpec | None:
    if cfg.head.type == 'flow_dit':
        return FlowSpec(noise_at=0, noise='uniform', num_steps=spec.flow_steps,
                        truncated_steps=spec.truncated_steps, action_mask=spec.action_mask)
    if cfg.head.type == 'flow_expert':
        return FlowSpec(noise_at=1, noise='gaussian', num_steps=spec.flow_steps,
                        truncated_steps=spec.truncated_steps)
    return None


def _tensor_specs(values) -> tuple[TensorSpec, ...]:
    out = []
    for v in values:
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField('dim_value') else (d.dim_param or 'dim')
                      for d in t.shape.dim)
        out.append(TensorSpec(name=v.name, dtype=_ONNX_DTYPES.get(t.elem_type, 'float32'),
                              shape=shape))
    return tuple(out)


def _export_one(plan: GraphPlan, path: Path) -> None:
    n_bytes = sum(p.numel() * p.element_size() for p in plan.module.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        program = torch.onnx.export(
            plan.module, tuple(plan.inputs.values()), dynamo=True,
            input_names=list(plan.inputs), output_names=plan.outputs, verbose=False,
            optimize=True)
    program.save(str(path), external_data=n_bytes > EXTERNAL_DATA_BYTES)


def _verify(plan: GraphPlan, path: Path, atol: float) -> float:
    import onnxruntime as ort

    from vla_ros.runtime.backends.ort import session_options

    sess = ort.InferenceSession(str(path), session_options(None),
                                providers=['CPUExecutionProvider'])
    feeds = {k: v.numpy() for k, v in plan.inputs.items()}
    got = sess.run(plan.outputs, feeds)
    err = 0.0
    for name, value in zip(plan.outputs, got, strict=True):
        ref = plan.example_outputs[name].numpy()
        if value.shape != ref.shape:
            raise ExportError(f'graph {plan.name}: output {name} has shape {value.shape} in ONNX '
                              f'Runtime but {ref.shape} in torch')
        err = max(err, float(np.max(np.abs(value.astype(np.float64) - ref))) if ref.size else 0)
    if err > atol:
        raise ExportError(f'graph {plan.name}: ONNX Runtime differs from torch by {err:.2e} '
                          f'(> {atol:.0e}); the exporter mistranslated an op')
    return err


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    large = half.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(half, str(dst), save_as_external_data=large,
              location=dst.name + '.data' if large else None)


def export_package(model: VLA, out_dir: str | Path, spec: ExportSpec, tokenizer,
                   *, verify: bool = True, atol: float = 1e-4, jobs: int | None = None,
                   progress: Callable[[str], None] = print) -> ModelPackage:
    """Writes a complete, validated package to out_dir (which must not exist or be empty).
    `jobs`: worker processes exporting graphs side by side (None: as many as idle CPUs,
    graphs and memory allow; 1: all in this process)."""
    import onnx

    cfg = model.cfg
    if len(spec.state_names) > cfg.state_dim or len(spec.action_names) > cfg.action_dim:
        raise ExportError(f'{len(spec.state_names)} state / {len(spec.action_names)} action '
                          f'names exceed the model widths {cfg.state_dim} / {cfg.action_dim}')
    bad = [p for p in spec.precisions if p not in ('fp32', 'fp16')]
    if bad:
        raise ExportError(f'unsupported precision(s) {bad}; choose from fp32, fp16')
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f'{out} exists and is not empty; choose a new directory')
    (out / 'graphs').mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(f'export: planning graphs of a {cfg.family} model '
             f'({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)')
    plans = all_plans(model, spec.rtc_vjp)
    largest = max(_module_bytes(p.module) for p in plans)
    n_jobs = jobs if jobs else parallel.auto_jobs(len(plans), largest)
    if n_jobs > 1 and len(plans) > 1:
        progress(f'export: {len(plans)} graphs on {n_jobs} worker processes')
        errors = _export_parallel(model, plans, out, spec, verify, atol, n_jobs, progress)
    else:
        errors = {}
        for i, plan in enumerate(plans, 1):
            t0 = time.monotonic()
            path = out / 'graphs' / f'{plan.name}.onnx'
            _export_one(plan, path)
            errors[plan.name] = _verify(plan, path, atol) if verify else float('nan')
            if 'fp16' in spec.precisions:
                _to_fp16(path, _fp16_path(path))
            progress(_done_line(i, len(plans), plan, out, time.monotonic() - t0,
                                errors[plan.name], verify))
    graphs = []
    for plan in plans:
        path = out / 'graphs' / f'{plan.name}.onnx'
        variants = {'fp32': GraphFile(f'graphs/{path.name}', _data_files(path))}
        if 'fp16' in spec.precisions:
            half = _fp16_path(path)
            variants['fp16'] = GraphFile(f'graphs/{half.name}', _data_files(half))
        proto = onnx.load(str(path), load_external_data=False)
        graphs.append(GraphSpec(name=plan.name, role=plan.role,
                                inputs=_tensor_specs(proto.graph.input),
                                outputs=_tensor_specs(proto.graph.output),
                                variants=variants, layers=plan.layers))
    tokenizer.save(str(out / 'tokenizer.json'))
    manifest = build_manifest(model, spec, tuple(graphs))
    pkg = write_manifest(out, manifest)
    pkg = _add_chain(pkg, spec.segment_chain, verify, progress)
    progress(f'export: wrote {out} ({pkg.total_bytes / 2**20:.1f} MiB) in '
             f'{time.monotonic() - started:.1f} s')
    return pkg


def all_plans(model: VLA, rtc_vjp: bool, seed: int = 0) -> list[GraphPlan]:
    """The graphs to export, in package order (the VJP graph last when asked for)."""
    plans = plan_graphs(model, seed)
    if rtc_vjp:
        if model.cfg.head.type != 'flow_dit':
            raise ExportError(f'--rtc-vjp needs a flow_dit head (its step is one graph); this '
                              f'model has {model.cfg.head.type!r}')
        from vla_ros.export.vjp import vjp_plan

        plans.append(vjp_plan(next(p for p in plans if p.role == 'head_step')))
    return plans


def _export_parallel(model: VLA, plans: list[GraphPlan], out: Path, spec: ExportSpec,
                     verify: bool, atol: float, n_jobs: int,
                     progress: Callable[[str], None]) -> dict[str, float]:
    """Each graph in a worker process (export/parallel.py); the workers' example outputs
    checked against this process's, so every graph comes from this very model."""
    with tempfile.TemporaryDirectory(prefix='.export-', dir=out) as scratch:
        weights = parallel.save_weights(model, Path(scratch))
        jobs = [parallel.GraphJob(
            weights=str(weights), config=model.cfg.to_dict(), rtc_vjp=spec.rtc_vjp, seed=0,
            name=p.name, path=str(out / 'graphs' / f'{p.name}.onnx'), verify=verify, atol=atol,
            fp16_path=(str(_fp16_path(out / 'graphs' / f'{p.name}.onnx'))
                       if 'fp16' in spec.precisions else None)) for p in plans]
        by_name = {p.name: p for p in plans}
        errors = {}
        for i, done in enumerate(parallel.export_in_pool(jobs, n_jobs), 1):
            plan = by_name[done.name]
            for key, ref in plan.example_outputs.items():
                theirs = done.example_outputs[key]
                if theirs.shape != tuple(ref.shape) or not np.allclose(
                        theirs, ref.numpy(), rtol=1e-4, atol=1e-5):
                    parallel.shutdown()
                    raise ExportError(
                        f'graph {plan.name}: the model rebuilt from its config and weights '
                        f'computes a different {key} than the model given (it holds state '
                        'outside its config and state_dict); export with jobs=1')
            errors[done.name] = done.max_err
            progress(_done_line(i, len(plans), plan, out, done.seconds, done.max_err, verify))
    return errors


def _module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _fp16_path(path: Path) -> Path:
    return path.with_name(path.name.replace('.onnx', '.fp16.onnx'))


def _done_line(i: int, n: int, plan: GraphPlan, out: Path, seconds: float, err: float,
               verify: bool) -> str:
    files = [out / 'graphs' / f'{plan.name}.onnx']
    files.append(_fp16_path(files[0]))
    files += [f.with_name(f.name + '.data') for f in list(files)]
    size = sum(f.stat().st_size for f in files if f.exists())
    span = f' layers {plan.layers[0]}-{plan.layers[1] - 1}' if plan.layers else ''
    check = f', max |onnx - torch| {err:.1e}' if verify else ''
    return f'export: [{i}/{n}] {plan.name}{span}: {seconds:.1f} s, {size / 2**20:.1f} MiB{check}'


def _add_chain(pkg: ModelPackage, wanted: bool | None, verify: bool,
               progress: Callable[[str], None]) -> ModelPackage:
    from vla_ros.export.chain import CHAIN_MAX_BYTES, chain_graph, segment_bytes, with_chain

    segments = pkg.manifest.graphs_with_role('segment')
    if wanted is None:
        wanted = len(segments) > 1 and segment_bytes(pkg, segments) <= CHAIN_MAX_BYTES
    if not wanted:
        return pkg
    t0 = time.monotonic()
    chain = chain_graph(pkg, verify=verify)
    pkg = write_manifest(pkg.root, with_chain(pkg.manifest, chain))
    progress(f'export: segment chain of layers {chain.layers[0]}-{chain.layers[1] - 1}: '
             f'{time.monotonic() - t0:.1f} s')
    return pkg


def _data_files(path: Path) -> tuple[str, ...]:
    data = path.with_name(path.name + '.data')
    return (f'graphs/{data.name}',) if data.exists() else ()


def build_manifest(model: VLA, spec: ExportSpec, graphs: tuple[GraphSpec, ...]) -> Manifest:
    cfg = model.cfg
    head_cfg = {'chunk_len': cfg.chunk_len}
    if cfg.head.type == 'nar_tokens':
        head_cfg['num_bins'] = cfg.head.num_bins
        head_cfg['bin_scheme'] = cfg.head.bin_scheme
        # The token fed at every action position (the single-pass decode's input there).
        head_cfg['action_input_id'] = cfg.action_token_id
    provenance = {'vla_config': cfg.to_dict(), **spec.provenance}
    return Manifest(
        name=spec.name, family=cfg.family, head=HeadSpec(cfg.head.type, head_cfg),
        cameras=camera_specs(cfg, spec.camera, spec.optional_cameras),
        state=SpaceSpec(names=spec.state_names, model_dim=cfg.state_dim,
                        normalization=spec.state_norm),
        action=ActionSpec(names=spec.action_names, model_dim=cfg.action_dim,
                          normalization=spec.action_norm, chunk_len=cfg.chunk_len,
                          dt_s=spec.dt_s, mode=spec.action_mode,
                          gripper=GripperSpec(**spec.gripper) if spec.gripper else None),
        prompt=PromptSpec(tokenizer_file='tokenizer.json', template=spec.template,
                          max_length=cfg.text_len, pad_id=cfg.pad_id,
                          lowercase=spec.lowercase, layout=model.layout.items,
                          padding_side=cfg.text_padding),
        exits=ExitSpec(num_layers=cfg.lm.num_layers, layers=cfg.exits),
        flow=_flow_spec(cfg, spec), graphs=graphs, embodiment=dict(spec.embodiment),
        provenance=json.loads(json.dumps(provenance)))
