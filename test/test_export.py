"""Export of every family to a model package, and parity of the package run through ONNX
Runtime (CPU) with the torch model on the same inputs and noise (max abs error <= 1e-4)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import torch
from families import JOINTS, export_spec, tiny_configs

from vla_ros.export.exporter import ExportError, ExportSpec, export_package
from vla_ros.export.tokenizer import word_tokenizer
from vla_ros.model.vla import VLA
from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.package.loader import load_package
from vla_ros.runtime.policy.pipeline import ExitPipeline, ModelInputs

CONFIGS = tiny_configs()


def _inputs(model: VLA, seed: int):
    obs = model.fake_obs(1, seed)
    return obs, ModelInputs({c: im.numpy() for c, im in zip(model.cfg.cameras, obs['images'],
                                                             strict=True)},
                            obs['input_ids'].numpy(), obs['attention_mask'].numpy(),
                            obs['state'].numpy())


@pytest.mark.parametrize('warm_start', [False, True], ids=['fresh-noise', 'warm-start'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_package_matches_torch_at_every_exit(exported, name, warm_start):
    model, pkg, _ = exported[name]
    cfg = model.cfg
    obs, inputs = _inputs(model, seed=5)
    noise = torch.randn(1, cfg.chunk_len, cfg.action_dim, generator=torch.Generator()
                        .manual_seed(7))
    ref = model.actions_at_exits(obs['images'], obs['input_ids'], obs['attention_mask'],
                                 obs['state'], noise, num_steps=3, warm_start=warm_start)
    run = ExitPipeline(pkg.manifest, load_backend(pkg)).start(inputs)
    prev = None
    while not run.done:
        layer = run.advance()
        x0 = prev if warm_start and prev is not None else noise[0].numpy()
        prev = run.action(x0, num_steps=3)
        err = np.max(np.abs(prev - ref[layer][0].numpy()))
        assert err <= 1e-4, f'exit {layer}: max abs error {err:.2e}'
    assert run.exit_layer == cfg.exits[-1]


@pytest.mark.parametrize('name', list(CONFIGS))
def test_no_weight_is_stored_in_two_graphs(exported, name):
    model, pkg, _ = exported[name]

    def digest(a: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()

    weights = {}  # the exporter stores Linear weights transposed: recognize both layouts
    for n, p in model.named_parameters():
        if p.numel() >= 64:
            a = p.detach().numpy()
            weights[digest(a)] = weights[digest(a.T)] = n
    found: dict[str, list[str]] = {}
    for g in pkg.manifest.graphs:
        if g.role == 'segment_chain':  # repeats the segments' weights on purpose (chain.py)
            continue
        proto = onnx.load(str(pkg.graph_path(g.name)))
        for init in proto.graph.initializer:
            d = digest(onnx.numpy_helper.to_array(init))
            if d in weights:
                found.setdefault(d, []).append(g.name)
    shared = {weights[d]: graphs for d, graphs in found.items() if len(graphs) > 1}
    assert not shared, shared
    # The check means something only if most weights are recognizable in the graphs.
    recognized = {weights[d] for d in found}
    assert len(recognized) >= 0.5 * len(set(weights.values())), (len(recognized), len(weights))


@pytest.mark.parametrize('name,roles', [
    ('evo1', {'vision', 'embed', 'segment', 'head_context', 'head_step'}),
    ('a1', {'vision', 'embed', 'segment', 'head_embed', 'head_segment', 'head_out'}),
    ('a1_regression', {'vision', 'embed', 'segment', 'head'}),
    ('vla_adapter', {'vision', 'embed', 'segment', 'head_embed', 'head_segment', 'head_out'}),
    ('edgevla', {'vision', 'embed', 'segment', 'head'}),
])
def test_graphs_are_split_at_the_exits(exported, name, roles):
    model, pkg, _ = exported[name]
    m = load_package(pkg.root).manifest  # full validation, hashes included
    assert {g.role for g in m.graphs} == roles | {'segment_chain'}  # small: chained
    segs = sorted(m.graphs_with_role('segment'), key=lambda g: g.layers)
    assert [g.layers[1] - 1 for g in segs] == list(model.cfg.exits) == list(m.exits.layers)
    assert m.prompt.sequence_length == model.layout.length


def test_manifest_carries_spaces_normalization_and_flow_convention(exported):
    m = exported['evo1'][1].manifest
    assert m.state.names == JOINTS and m.state.model_dim == 6
    assert m.action.normalization.kind == 'bounds' and m.action.chunk_len == 4
    assert (m.flow.noise_at, m.flow.noise) == (0, 'uniform')
    assert exported['a1'][1].manifest.flow.noise_at == 1
    assert m.provenance['vla_config']['family'] == 'evo1'


@pytest.mark.parametrize('name', ['evo1', 'vla_adapter'])
def test_fp16_variant_runs_and_stays_close_to_fp32(exported, name):
    model, pkg, _ = exported[name]
    _, inputs = _inputs(model, seed=2)
    noise = np.zeros((model.cfg.chunk_len, model.cfg.action_dim), np.float32)
    acts = {}
    for precision in ('fp32', 'fp16'):
        run = ExitPipeline(pkg.manifest, load_backend(pkg, precision=precision)).start(inputs)
        while not run.done:
            run.advance()
        acts[precision] = run.action(noise, num_steps=2)
    assert np.max(np.abs(acts['fp16'] - acts['fp32'])) < 2e-2


def test_export_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / 'old.txt').write_text('x')
    model = VLA(CONFIGS['edgevla'])
    with pytest.raises(ExportError, match='not empty'):
        export_package(model, tmp_path, export_spec('x'), word_tokenizer([], 64),
                       progress=lambda _: None)


def test_export_refuses_more_names_than_the_model_is_wide(tmp_path):
    model = VLA(CONFIGS['edgevla'])
    spec = ExportSpec(name='x', state_names=tuple(f'j{i}' for i in range(9)),
                      action_names=JOINTS, dt_s=0.1)
    with pytest.raises(ExportError, match='exceed the model widths'):
        export_package(model, tmp_path / 'p', spec, word_tokenizer([], 64),
                       progress=lambda _: None)
