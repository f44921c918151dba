"""TensorRT backend (TensorRT 10 Python API + cuda-python), for Jetson Orin and RTX machines.

Engines are built from the package's ONNX graphs on first use and cached on disk, keyed by
the ONNX file's hash (its external data included), the GPU (name and compute capability), the
TensorRT version, the precision and the shape profile; a cached engine whose key no longer
matches is stale and rebuilt. One timing cache per GPU/TensorRT pair speeds up later builds.
Device buffers are allocated once per tensor name; an output stays on the device and can be
bound as the next graph's input without a copy (valid until its own graph runs again); every
graph runs with execute_async_v3 on one stream, synchronized only when a value goes to the host.

The engine-independent parts (cache keys, staleness, shape profiles) are plain Python and are
tested everywhere; building and running engines needs tensorrt, cuda-python and a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.runtime.backends.base import Backend, BackendError
from vla_ros.runtime.package.manifest import GraphSpec, TensorSpec

WORKSPACE_BYTES = 4 << 30


def default_cache_dir() -> Path:
    root = os.environ.get('VLA_ROS_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'vla_ros')
    return Path(root) / 'engines'


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max per input; all equal for static inputs (every shape our exporter writes)."""

    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    @classmethod
    def from_inputs(cls, inputs: tuple[TensorSpec, ...],
                    dynamic: dict[str, tuple[int, int, int]] | None = None) -> ShapeProfile:
        """Symbolic dimensions need a (min, opt, max) in `dynamic` by symbol name."""
        dynamic = dynamic or {}
        shapes = {}
        for t in inputs:
            lo, opt, hi = [], [], []
            for d in t.shape:
                if isinstance(d, int):
                    lo.append(d), opt.append(d), hi.append(d)
                elif d in dynamic:
                    a, b, c = dynamic[d]
                    if not 1 <= a <= b <= c:
                        raise BackendError(f'profile for {d!r} must be 1 <= min <= opt <= max, '
                                           f'got {dynamic[d]}')
                    lo.append(a), opt.append(b), hi.append(c)
                else:
                    raise BackendError(f'input {t.name} has symbolic dimension {d!r}; give its '
                                       '(min, opt, max) in the TensorRT shape profile')
            shapes[t.name] = (tuple(lo), tuple(opt), tuple(hi))
        return cls(shapes)

    @property
    def is_static(self) -> bool:
        return all(a == b == c for a, b, c in self.shapes.values())


@dataclass(frozen=True)
class EngineKey:
    graph: str
    onnx_sha256: str  # the graph file and its external data
    gpu: str
    compute_capability: str
    tensorrt: str
    precision: str
    profile: str  # JSON of the shape profile

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f'{self.graph}-{self.digest[:16]}.engine'


def onnx_digest(package, graph: GraphSpec, precision: str = 'fp32') -> str:
    """sha256 over the graph's files as recorded in the (validated) manifest."""
    v = graph.variants[precision]
    h = hashlib.sha256()
    for f in (v.file, *v.data_files):
        h.update(package.manifest.files[f].sha256.encode())
    return h.hexdigest()


class EngineCache:
    """Engines on disk with a JSON sidecar holding the key they were built for."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def path(self, key: EngineKey) -> Path:
        return self.root / key.filename

    def lookup(self, key: EngineKey) -> bytes | None:
        """The cached engine for this exact key, or None if absent or stale."""
        path = self.path(key)
        meta = path.with_suffix('.json')
        if not (path.is_file() and meta.is_file()):
            return None
        try:
            if json.loads(meta.read_text()) != asdict(key):
                return None  # a hash collision on the name prefix, or a hand-edited file
        except (OSError, json.JSONDecodeError):
            return None
        return path.read_bytes()

    def store(self, key: EngineKey, engine: bytes) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        for target, data in ((path, engine),
                             (path.with_suffix('.json'), json.dumps(asdict(key)).encode())):
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix='.tmp')
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            os.replace(tmp, target)
        return path

    def stale_entries(self, graph: str, key: EngineKey) -> list[Path]:
        """Engines of the same graph built for another key (for cleanup)."""
        return [p for p in self.root.glob(f'{graph}-*.engine') if p.name != key.filename]

    def timing_cache_path(self, gpu: str, tensorrt: str) -> Path:
        tag = hashlib.sha256(f'{gpu}|{tensorrt}'.encode()).hexdigest()[:16]
        return self.root / f'timing-{tag}.cache'


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (err, value...) tuples."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f'CUDA error {int(err)} in {what}')
    return rest[0] if len(rest) == 1 else (rest or None)


class _DeviceTensor:
    """A buffer on the GPU: what `run` returns, and can be fed to the next graph."""

    __slots__ = ('dtype', 'nbytes', 'ptr', 'shape')

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.ptr, self.shape, self.dtype = ptr, shape, np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize


class TensorRTBackend(Backend):
    name = 'tensorrt'
    device = 'cuda'

    def __init__(self, package, precision: str = 'fp16', cache_dir: str | Path | None = None,
                 graphs: list[str] | None = None, progress=print) -> None:
        try:
            import tensorrt as trt
            from cuda.bindings import runtime as cudart
        except ImportError as e:
            raise BackendError(
                'the TensorRT backend needs tensorrt (JetPack, or NVIDIA\'s packages on x86) and '
                f'cuda-python; importing failed: {e}. Use onnxruntime instead.') from e
        self.trt, self.cudart = trt, cudart
        self.precision = precision
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.cache = EngineCache(cache_dir)
        _check(cudart.cudaSetDevice(0), 'cudaSetDevice')
        props = _check(cudart.cudaGetDeviceProperties(0), 'cudaGetDeviceProperties')
        self.gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        self.cc = f'{props.major}.{props.minor}'
        self.stream = _check(cudart.cudaStreamCreate(), 'cudaStreamCreate')
        self.runtime = trt.Runtime(self.logger)
        self.engines: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        self.buffers: dict[str, dict[str, _DeviceTensor]] = {}
        self.inputs: dict[str, list[str]] = {}
        self.outputs: dict[str, list[str]] = {}
        for g in package.manifest.graphs:
            if graphs is None or g.name in graphs:
                self._load(package, g, progress)

    def _load(self, package, g: GraphSpec, progress) -> None:
        trt = self.trt
        profile = ShapeProfile.from_inputs(g.inputs)
        key = EngineKey(graph=g.name, onnx_sha256=onnx_digest(package, g), gpu=self.gpu,
                        compute_capability=self.cc, tensorrt=trt.__version__,
                        precision=self.precision, profile=json.dumps(profile.shapes))
        blob = self.cache.lookup(key)
        if blob is None:
            progress(f'tensorrt: building {g.name} ({self.precision}) for {self.gpu}; cached '
                     f'in {self.cache.root}')
            blob = self._build(package.graph_path(g.name), profile, key)
            self.cache.store(key, blob)
        engine = self.runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise BackendError(f'TensorRT could not deserialize the engine of {g.name}')
        ctx = engine.create_execution_context()
        bufs: dict[str, _DeviceTensor] = {}
        ins, outs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            size = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
            ptr = _check(self.cudart.cudaMalloc(size), 'cudaMalloc')
            bufs[name] = _DeviceTensor(int(ptr), shape, dtype)
            ctx.set_tensor_address(name, int(ptr))
            (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(name)
        self.engines[g.name], self.contexts[g.name] = engine, ctx
        self.buffers[g.name], self.inputs[g.name], self.outputs[g.name] = bufs, ins, outs

    def _build(self, onnx_path: Path, profile: ShapeProfile, key: EngineKey) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f'TensorRT could not parse {onnx_path.name}: {errors}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.precision == 'fp16':
            config.set_flag(trt.BuilderFlag.FP16)
        timing_path = self.cache.timing_cache_path(self.gpu, trt.__version__)
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file()
                                            else b'')
        config.set_timing_cache(timing, ignore_mismatch=False)
        opt = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profile.shapes.items():
            opt.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(opt)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f'TensorRT failed to build {key.graph}; see the log above')
        self.cache.root.mkdir(parents=True, exist_ok=True)
        timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def run(self, graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        cudart, bufs, ctx = self.cudart, self.buffers[graph], self.contexts[graph]
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name in self.inputs[graph]:
            value, dst = feeds[name], bufs[name]
            if isinstance(value, _DeviceTensor):
                if value.nbytes != dst.nbytes:
                    raise BackendError(f'{graph}.{name}: {value.shape} does not fit {dst.shape}')
                # Bind the producer's buffer directly: no copy between graphs.
                ctx.set_tensor_address(name, value.ptr)
                continue
            ctx.set_tensor_address(name, dst.ptr)
            host = np.ascontiguousarray(value, dtype=dst.dtype)
            if host.nbytes != dst.nbytes:
                raise BackendError(f'{graph}.{name}: shape {host.shape} does not fit the '
                                   f'engine input {dst.shape}')
            _check(cudart.cudaMemcpyAsync(dst.ptr, host.ctypes.data, host.nbytes, h2d,
                                          self.stream), f'copy {name} to the device')
        if not ctx.execute_async_v3(self.stream):
            raise BackendError(f'TensorRT failed to run {graph}')
        return {n: bufs[n] for n in self.outputs[graph]}

    def has_graph(self, graph: str) -> bool:
        return graph in self.engines

    def to_host(self, value: Any) -> np.ndarray:
        if not isinstance(value, _DeviceTensor):
            return np.asarray(value)
        out = np.empty(value.shape, value.dtype)
        d2h = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cudart.cudaMemcpyAsync(out.ctypes.data, value.ptr, value.nbytes, d2h,
                                           self.stream), 'copy to the host')
        self.synchronize()
        return out.astype(np.float32) if out.dtype == np.float16 else out

    def synchronize(self) -> None:
        _check(self.cudart.cudaStreamSynchronize(self.stream), 'cudaStreamSynchronize')

    def close(self) -> None:
        for bufs in self.buffers.values():
            for b in bufs.values():
                self.cudart.cudaFree(b.ptr)
        self.buffers.clear()
        self.contexts.clear()
        self.engines.clear()

    def describe(self) -> str:
        return f'tensorrt {self.trt.__version__} on {self.gpu} ({self.precision})'
