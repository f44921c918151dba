"""The TensorRT backend's engine cache, driven through the backend itself: a fake `tensorrt`
and a fake GPU (test/fake_tensorrt.py) stand in for the driver, so the key the backend builds
from the package, the device, the TensorRT version, the precision and the shape profile is
the one checked, and a change in any of them provably rebuilds the engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import manifest_dict
from fake_tensorrt import FakeGpu, install
from onnx import TensorProto, helper, save

from vla_ros.runtime.backends.trt import EngineCache, EngineKey, TensorRTBackend
from vla_ros.runtime.package.loader import load_package, write_manifest
from vla_ros.runtime.package.parse import parse_manifest


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    g = FakeGpu()
    install(monkeypatch, g)
    return g


class _Reshaped:
    """A package whose one graph declares another input shape (same files)."""

    def __init__(self, pkg, shape: tuple[int, ...]) -> None:
        g = pkg.manifest.graphs[0]
        inputs = (replace(g.inputs[0], shape=shape),)
        self.manifest = replace(pkg.manifest, graphs=(replace(g, inputs=inputs),))
        self.graph_path = pkg.graph_path


def _keys(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob('head_step-*.json'))]


def _key(fields: dict) -> EngineKey:
    return EngineKey(**fields)


def _build(pkg, cache: Path, precision: str = 'fp16') -> TensorRTBackend:
    return TensorRTBackend(pkg, precision=precision, cache_dir=cache, progress=lambda _: None)


def _other_graph(root: Path) -> None:
    """Rewrites the package's graph (Identity instead of Neg) and its manifest hashes."""
    x = helper.make_tensor_value_info('noisy_actions', TensorProto.FLOAT, [1, 4, 2])
    y = helper.make_tensor_value_info('velocity', TensorProto.FLOAT, [1, 4, 2])
    graph = helper.make_graph([helper.make_node('Identity', ['noisy_actions'], ['velocity'])],
                              'head_step', [x], [y])
    save(helper.make_model(graph), root / 'graphs' / 'head_step.onnx')
    write_manifest(root, parse_manifest(manifest_dict()))


# field -> (what changes, the field's new value in the key)
CHANGES = {
    'precision': (lambda ctx: ctx.update(precision='fp32'), 'fp32'),
    'profile': (lambda ctx: ctx.update(pkg=_Reshaped(ctx['pkg'], (1, 8, 2))),
                json.dumps({'noisy_actions': [[1, 8, 2]] * 3})),
    'gpu': (lambda ctx: setattr(ctx['gpu'], 'name', 'NVIDIA GeForce RTX 4090'),
            'NVIDIA GeForce RTX 4090'),
    'compute_capability': (lambda ctx: setattr(ctx['gpu'], 'minor', 9), '8.9'),
    'tensorrt': (lambda ctx: setattr(ctx['gpu'], 'tensorrt_version', '10.4.0'), '10.4.0'),
    'onnx_sha256': (lambda ctx: (_other_graph(ctx['root']),
                                 ctx.update(pkg=load_package(ctx['root']))), None),
}


def test_the_key_records_what_the_engine_was_built_for(gpu, tiny_package, tmp_path):
    _build(load_package(tiny_package), tmp_path / 'cache')
    (key,) = _keys(tmp_path / 'cache')
    assert key['graph'] == 'head_step' and key['gpu'] == 'Orin'
    assert key['compute_capability'] == '8.7' and key['tensorrt'] == '10.3.0'
    assert key['precision'] == 'fp16'
    assert json.loads(key['profile']) == {'noisy_actions': [[1, 4, 2]] * 3}


def test_an_unchanged_setup_reuses_the_cached_engine(gpu, tiny_package, tmp_path):
    pkg = load_package(tiny_package)
    _build(pkg, tmp_path / 'cache')
    _build(pkg, tmp_path / 'cache')
    assert len(gpu.builds) == 1 and len(_keys(tmp_path / 'cache')) == 1


@pytest.mark.parametrize('field', list(CHANGES))
def test_a_change_of_this_field_gives_a_new_key_and_a_rebuilt_engine(
        gpu, tiny_package, tmp_path, monkeypatch, field):
    change, value = CHANGES[field]
    ctx = {'pkg': load_package(tiny_package), 'precision': 'fp16', 'gpu': gpu,
           'root': tiny_package}
    cache = tmp_path / 'cache'
    _build(ctx['pkg'], cache, ctx['precision'])
    (before,) = _keys(cache)
    change(ctx)
    install(monkeypatch, gpu)  # a new import of tensorrt reports its (new) version
    be = _build(ctx['pkg'], cache, ctx['precision'])
    after = next(k for k in _keys(cache) if k != before)
    assert {k for k in before if before[k] != after[k]} == {field}
    if value is not None:
        assert after[field] == value
    assert len(gpu.builds) == 2
    assert len(EngineCache(cache).stale_entries('head_step', _key(after))) == 1
    be.close()


def test_the_builder_gets_the_profile_and_precision_of_the_key(gpu, tiny_package, tmp_path):
    _build(_Reshaped(load_package(tiny_package), (1, 8, 2)), tmp_path / 'a', 'fp16')
    _build(load_package(tiny_package), tmp_path / 'b', 'fp32')
    assert gpu.builds[0]['profiles'] == [{'noisy_actions': [[1, 8, 2]] * 3}]
    assert gpu.builds[0]['flags'] == ['fp16'] and gpu.builds[1]['flags'] == []


def test_buffers_are_allocated_once_per_tensor_name(gpu, tiny_package, tmp_path):
    be = _build(load_package(tiny_package), tmp_path / 'cache')
    bufs = be.buffers['head_step']
    assert be.inputs['head_step'] == ['noisy_actions'] and be.outputs['head_step'] == ['velocity']
    assert bufs['noisy_actions'].shape == (1, 4, 2) and bufs['noisy_actions'].nbytes == 32
    assert be.contexts['head_step'].addresses['velocity'] == bufs['velocity'].ptr

