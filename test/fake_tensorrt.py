"""A stand-in for `tensorrt` and `cuda.bindings.runtime` with TensorRT 10's Python API shape,
so the TensorRT backend's own code (engine keys, the cache, the build recipe, buffers by
tensor name) runs where there is no GPU. `install(monkeypatch, gpu)` puts both modules into
sys.modules. The "engine" is JSON: the ONNX file's I/O (read with onnx) and the profile and
flags it was built with, so a test can see what the backend asked the builder for."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FakeGpu:
    """What the fake driver reports, and what the fake builder was asked to do."""

    name: str = 'Orin'
    major: int = 8
    minor: int = 7
    tensorrt_version: str = '10.3.0'
    builds: list[dict] = field(default_factory=list)  # one entry per engine built
    allocated: int = 0


class _Enum:
    def __init__(self, **members) -> None:
        self.__dict__.update(members)


def _tensorrt(gpu: FakeGpu) -> types.ModuleType:
    trt = types.ModuleType('tensorrt')
    trt.__version__ = gpu.tensorrt_version
    trt.MemoryPoolType = _Enum(WORKSPACE='workspace')
    trt.BuilderFlag = _Enum(FP16='fp16')
    trt.TensorIOMode = _Enum(INPUT='input', OUTPUT='output')
    trt.nptype = np.dtype

    class Logger:
        WARNING = 'warning'

        def __init__(self, level) -> None:
            self.level = level

    class Network:
        def __init__(self) -> None:
            self.inputs: list[str] = []
            self.outputs: dict[str, list[int]] = {}

    class OnnxParser:
        def __init__(self, network: Network, logger) -> None:
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            import onnx

            model = onnx.load(path)
            self.network.inputs = [i.name for i in model.graph.input]
            self.network.outputs = {
                o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
                for o in model.graph.output}
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list] = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return b'timing:' + gpu.name.encode()

    class Config:
        def __init__(self) -> None:
            self.flags: set = set()
            self.profiles: list[Profile] = []
            self.timing = None

        def set_memory_pool_limit(self, pool, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> None:
            self.timing = cache

        def get_timing_cache(self) -> TimingCache:
            return self.timing

        def add_optimization_profile(self, profile: Profile) -> None:
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            built = {'inputs': network.inputs, 'outputs': network.outputs,
                     'profiles': [p.shapes for p in config.profiles],
                     'flags': sorted(config.flags), 'gpu': gpu.name}
            gpu.builds.append(built)
            return json.dumps(built).encode()

    class Context:
        def __init__(self) -> None:
            self.addresses: dict[str, int] = {}

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addresses[name] = ptr

    class Engine:
        def __init__(self, built: dict) -> None:
            opt = {n: s[1] for n, s in built['profiles'][0].items()}
            self.io = [(n, opt[n], trt.TensorIOMode.INPUT) for n in built['inputs']]
            self.io += [(n, s, trt.TensorIOMode.OUTPUT) for n, s in built['outputs'].items()]
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def _find(self, name: str):
            return next(t for t in self.io if t[0] == name)

        def get_tensor_shape(self, name: str) -> list[int]:
            return self._find(name)[1]

        def get_tensor_dtype(self, name: str):
            return np.float32

        def get_tensor_mode(self, name: str):
            return self._find(name)[2]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, blob: bytes) -> Engine:
            return Engine(json.loads(blob))

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


def _cudart(gpu: FakeGpu) -> types.ModuleType:
    rt = types.ModuleType('cuda.bindings.runtime')
    rt.cudaMemcpyKind = _Enum(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def properties(device: int):
        return 0, types.SimpleNamespace(name=gpu.name.encode(), major=gpu.major,
                                        minor=gpu.minor)

    def malloc(size: int):
        gpu.allocated += size
        return 0, 0x1000 * (len(gpu.builds) + 1) + gpu.allocated

    rt.cudaSetDevice = lambda device: (0,)
    rt.cudaGetDeviceProperties = properties
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaMalloc = malloc
    rt.cudaFree = lambda ptr: (0,)
    rt.cudaStreamSynchronize = lambda stream: (0,)
    return rt


def install(monkeypatch, gpu: FakeGpu) -> None:
    """tensorrt and cuda.bindings.runtime as this GPU reports them, for the test's duration."""
    cuda = types.ModuleType('cuda')
    bindings = types.ModuleType('cuda.bindings')
    bindings.runtime = _cudart(gpu)
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, 'tensorrt', _tensorrt(gpu))
    monkeypatch.setitem(sys.modules, 'cuda', cuda)
    monkeypatch.setitem(sys.modules, 'cuda.bindings', bindings)
    monkeypatch.setitem(sys.modules, 'cuda.bindings.runtime', bindings.runtime)

