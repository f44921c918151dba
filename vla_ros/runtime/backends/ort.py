"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

Session options are set on purpose: full graph optimization (fusions matter most for the
attention blocks), sequential execution (the graphs are chains; parallel execution only adds
scheduling overhead at batch 1), and memory patterns on (shapes are static).
Threads: a package is a dozen sessions run one after another. With a pool per session, each
pool's threads spin after their graph finishes and fight the next graph's threads for the
cores: measured on 2 cores, four decoder segments took 229 ms with per-session pools, 116 ms
with spinning off, 79 ms with one process-wide pool shared by every session. So all sessions
share one global pool (sized by the first backend created in the process); spinning can be
turned off where a control loop shares the cores. ONNX Runtime allows no per-session pools once
a global pool exists, so every session this process creates must come from session_options().
On CUDA, I/O binding keeps every output on the device, and a device output fed to the next
graph is bound as is: intermediate tensors never visit the host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.runtime.backends.base import Backend, BackendError

DEVICES = ('cpu', 'cuda', 'tensorrt')


_global_pool: int | None = None  # threads of the process-wide pool, once created


def _shared_pool(threads: int) -> int | None:
    """Creates the process-wide pool on first use; returns its size, or None if ONNX Runtime
    was already initialized without one (then sessions keep their own pools)."""
    global _global_pool
    if _global_pool is None:
        import onnxruntime as ort

        try:
            ort.set_global_thread_pool_sizes(threads, 1)
        except RuntimeError:
            return None
        _global_pool = threads
    return _global_pool


def session_options(threads: int | None, optimize: bool = True, shared_pool: bool = True,
                    spin: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = True
    so.log_severity_level = 3  # warnings from constant folding are noise to a robot log
    n = threads or os.cpu_count() or 1
    # Once the global pool exists, ONNX Runtime refuses sessions with their own pools.
    if (shared_pool or _global_pool is not None) and _shared_pool(n) is not None:
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return so


def providers_for(device: str, precision: str, cache_dir: Path | None) -> list:
    if device == 'cpu':
        return ['CPUExecutionProvider']
    if device == 'cuda':
        return [('CUDAExecutionProvider', {'cudnn_conv_algo_search': 'HEURISTIC'}),
                'CPUExecutionProvider']
    if device == 'tensorrt':
        trt = {'trt_fp16_enable': precision == 'fp16', 'trt_engine_cache_enable': True,
               'trt_timing_cache_enable': True}
        if cache_dir is not None:
            trt['trt_engine_cache_path'] = str(cache_dir)
            trt['trt_timing_cache_path'] = str(cache_dir)
        return [('TensorrtExecutionProvider', trt), 'CUDAExecutionProvider',
                'CPUExecutionProvider']
    raise BackendError(f'onnxruntime device {device!r} is not one of {DEVICES}')


class OrtBackend(Backend):
    name = 'onnxruntime'

    def __init__(self, package, device: str = 'cpu', precision: str = 'fp32',
                 threads: int | None = None, cache_dir: str | Path | None = None,
                 graphs: list[str] | None = None, shared_pool: bool = True,
                 spin: bool = True, profile_dir: str | Path | None = None) -> None:
        """`profile_dir`: ONNX Runtime profiles every run of every session there (the bench's
        FLOP count reads them; see end_profiling)."""
        import onnxruntime as ort

        self.device, self.precision = device, precision
        providers = providers_for(device, precision, Path(cache_dir) if cache_dir else None)
        available = set(ort.get_available_providers())
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if wanted not in available:
            raise BackendError(
                f'onnxruntime here has no {wanted} (available: {sorted(available)}); install '
                'onnxruntime-gpu with a matching CUDA for cuda/tensorrt, or use device cpu')
        # fp16 graphs exist for GPUs; TensorRT makes its own fp16 engines from fp32 graphs.
        variant = 'fp16' if precision == 'fp16' and device != 'tensorrt' else 'fp32'
        so = session_options(threads, shared_pool=shared_pool, spin=spin)
        self.threads = _global_pool if not so.use_per_session_threads else so.intra_op_num_threads
        self.sessions: dict[str, Any] = {}
        self._outputs: dict[str, list[str]] = {}
        names = graphs or [g.name for g in package.manifest.graphs]
        for name in names:
            path = package.graph_path(name, variant)
            if profile_dir is not None:
                so.enable_profiling = True
                so.profile_file_prefix = str(Path(profile_dir) / name)
            try:
                sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
            except Exception as e:  # ORT raises its own exception types per failure
                raise BackendError(f'onnxruntime could not load graph {name} ({path}): {e}') \
                    from e
            self.sessions[name] = sess
            self._outputs[name] = [o.name for o in sess.get_outputs()]
        self._cuda = device in ('cuda', 'tensorrt')

    def run(self, graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        sess = self.sessions[graph]
        names = self._outputs[graph]
        if not self._cuda:
            return dict(zip(names, sess.run(names, feeds), strict=True))
        import onnxruntime as ort

        binding = sess.io_binding()
        for k, v in feeds.items():
            if isinstance(v, ort.OrtValue):
                binding.bind_ortvalue_input(k, v)
            else:
                binding.bind_cpu_input(k, np.ascontiguousarray(v))
        for n in names:
            binding.bind_output(n, 'cuda')
        sess.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs(), strict=True))

    def has_graph(self, graph: str) -> bool:
        return graph in self.sessions

    def end_profiling(self) -> dict[str, str]:
        """Graph name -> the profile (JSON) of its runs so far, for a backend made with
        profile_dir."""
        return {name: sess.end_profiling() for name, sess in self.sessions.items()}

    def to_host(self, value: Any) -> np.ndarray:
        return value.numpy() if hasattr(value, 'numpy') and not isinstance(value, np.ndarray) \
            else np.asarray(value)

    def close(self) -> None:
        self.sessions.clear()

    def describe(self) -> str:
        return f'{self.name} on {self.device} ({self.precision}, {self.threads} threads)'
