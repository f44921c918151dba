"""Backends: ONNX Runtime options and errors, the torch reference against the package, and the
TensorRT engine cache, keys and profiles (engines themselves need a GPU and TensorRT)."""

import hashlib
import json

import numpy as np
import pytest

from vla_ros.export.torch_backend import TorchBackend
from vla_ros.runtime.backends import BackendError, load_backend
from vla_ros.runtime.backends.trt import (
    EngineCache,
    EngineKey,
    ShapeProfile,
    TensorRTBackend,
    onnx_digest,
)
from vla_ros.runtime.package.manifest import TensorSpec
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig


def test_unknown_backend_lists_the_choices(exported):
    with pytest.raises(BackendError, match='choose one of'):
        load_backend(exported['evo1'][1], 'magic')


def test_missing_gpu_provider_is_a_clear_error(exported):
    with pytest.raises(BackendError, match='no CUDAExecutionProvider'):
        load_backend(exported['evo1'][1], device='cuda')


def test_ort_sessions_share_one_thread_pool(exported):
    be = load_backend(exported['edgevla'][1], spin=False)
    for sess in be.sessions.values():
        opts = sess.get_session_options()
        assert not opts.use_per_session_threads
        assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    assert f'{be.threads} threads' in be.describe()


@pytest.mark.parametrize('name', ['evo1', 'a1', 'vla_adapter', 'a1_regression'])
def test_torch_reference_backend_matches_the_package(exported, name):
    _, pkg, ckpt = exported[name]
    rng = np.random.default_rng(0)
    obs = Observation({c.name: (rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), 'rgb8')
                       for c in pkg.manifest.cameras}, rng.uniform(0, 1, 5), 'pick up', 0.0)
    chunks = []
    for backend in (load_backend(pkg), TorchBackend.from_checkpoint(str(ckpt))):
        pol = Policy(pkg, backend, PolicyConfig(mode='full', seed=1))
        chunks.append(pol.infer(obs).actions)
    np.testing.assert_allclose(chunks[0], chunks[1], atol=1e-4)


def test_tensorrt_backend_without_tensorrt_says_what_to_use(exported):
    pytest.importorskip('numpy')
    try:
        import tensorrt  # noqa: F401
        pytest.skip('tensorrt is installed here')
    except ImportError:
        pass
    with pytest.raises(BackendError, match='Use onnxruntime instead'):
        TensorRTBackend(exported['evo1'][1])


def _key(**kw) -> EngineKey:
    base = dict(graph='segment_0', onnx_sha256='a' * 64, gpu='Orin', compute_capability='8.7',
                tensorrt='10.3.0', precision='fp16', profile='{}')
    return EngineKey(**{**base, **kw})


@pytest.mark.parametrize('field,value', [('onnx_sha256', 'b' * 64), ('gpu', 'RTX 4090'),
                                         ('compute_capability', '8.9'), ('tensorrt', '10.4.0'),
                                         ('precision', 'fp32'), ('profile', '{"x": 1}')])
def test_engine_key_changes_with_anything_that_invalidates_an_engine(field, value):
    assert _key().digest != _key(**{field: value}).digest
    assert _key().filename != _key(**{field: value}).filename


def test_engine_cache_round_trips_and_detects_stale_entries(tmp_path):
    cache = EngineCache(tmp_path)
    key = _key()
    assert cache.lookup(key) is None
    cache.store(key, b'engine-bytes')
    assert cache.lookup(key) == b'engine-bytes'
    newer = _key(tensorrt='10.4.0')
    assert cache.lookup(newer) is None  # built for another TensorRT: rebuilt
    cache.store(newer, b'new')
    assert cache.stale_entries('segment_0', newer) == [cache.path(key)]
    # A sidecar that does not match the key (edited, or a name collision) is not trusted.
    cache.path(key).with_suffix('.json').write_text(json.dumps({'graph': 'x'}))
    assert cache.lookup(key) is None


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path):
    cache = EngineCache(tmp_path)
    a = cache.timing_cache_path('Orin', '10.3.0')
    assert a != cache.timing_cache_path('RTX 4090', '10.3.0')
    assert a != cache.timing_cache_path('Orin', '10.4.0')


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('VLA_ROS_CACHE', str(tmp_path))
    assert EngineCache().root == tmp_path / 'engines'


def test_static_inputs_give_a_static_profile():
    p = ShapeProfile.from_inputs((TensorSpec('hidden', 'float32', (1, 16, 8)),))
    assert p.is_static and p.shapes['hidden'] == ((1, 16, 8),) * 3


def test_symbolic_dimensions_need_a_range():
    spec = (TensorSpec('hidden', 'float32', (1, 'seq', 8)),)
    with pytest.raises(BackendError, match="'seq'"):
        ShapeProfile.from_inputs(spec)
    p = ShapeProfile.from_inputs(spec, {'seq': (4, 16, 64)})
    assert p.shapes['hidden'] == ((1, 4, 8), (1, 16, 8), (1, 64, 8)) and not p.is_static


def test_onnx_digest_follows_the_manifest_hashes(exported):
    pkg = exported['evo1'][1]
    g = pkg.manifest.graph('segment_0')
    v = g.variants['fp32']
    # From the bytes on disk, not the manifest: the digest follows the graph's files.
    h = hashlib.sha256()
    for f in (v.file, *v.data_files):
        h.update(hashlib.sha256((pkg.root / f).read_bytes()).hexdigest().encode())
    assert onnx_digest(pkg, g) == h.hexdigest()
    assert onnx_digest(pkg, g) != onnx_digest(pkg, pkg.manifest.graph('segment_1'))
    assert onnx_digest(pkg, g, 'fp16') != onnx_digest(pkg, g, 'fp32')
