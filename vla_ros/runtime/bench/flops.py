"""Achieved GFLOP/s of a package against this machine's measured matrix-multiply ceiling.

FLOPs are counted from ONNX Runtime's own profile of one full-depth inference: every MatMul,
FusedMatMul, Gemm and Conv node that ran, with the shapes it ran on (2 * output elements *
the reduced dimension; elementwise work is left out, as in the usual count). Counting what
ran, after ONNX Runtime's fusions, means the figure follows the graphs the policy really
calls (a segment chain, a flow head's ten steps). The ceiling is ONNX Runtime's MatMul on
the same threads (the same shared pool), a one-node graph written here as protobuf bytes so
the runtime needs no onnx package, median of repeated runs at n x n x n.
Imports numpy, onnxruntime and the runtime only.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from vla_ros.runtime.package.loader import ModelPackage
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig

MATMUL_OPS = ('MatMul', 'FusedMatMul', 'Gemm')


def node_flops(args: dict) -> int:
    """FLOPs of one profiled node (its event's args), 0 for ops not counted."""
    op = args.get('op_name')
    if op not in MATMUL_OPS + ('Conv',):
        return 0
    ins = [next(iter(d.values())) for d in args.get('input_type_shape', [])]
    outs = [next(iter(d.values())) for d in args.get('output_type_shape', [])]
    if not ins or not outs or not outs[0]:
        return 0
    out = outs[0]
    if op == 'Conv':  # weight (C_out, C_in / groups, kh, kw)
        if len(ins) < 2 or len(ins[1]) < 3:
            return 0
        return 2 * int(np.prod(out)) * int(np.prod(ins[1][1:]))
    a = ins[0]
    if len(a) < 2:
        return 0
    m = out[-2] if len(out) >= 2 else 1
    k = a[-1] if a[-2] == m else a[-2]  # A is (.., M, K), or (.., K, M) when transposed
    return 2 * int(np.prod(out)) * int(k)


def profile_flops(paths: dict[str, str]) -> dict[str, int]:
    """Graph name -> FLOPs of every run in its profile."""
    out = {}
    for graph, path in paths.items():
        events = json.loads(Path(path).read_text())
        out[graph] = sum(node_flops(e.get('args', {})) for e in events
                         if e.get('cat') == 'Node' and e.get('name', '').endswith('_kernel_time'))
    return out


def inference_flops(pkg: ModelPackage, observation: Observation, threads: int | None = None,
                    config: PolicyConfig | None = None) -> dict:
    """FLOPs of one inference (full depth unless `config` says otherwise), per graph."""
    from vla_ros.runtime.backends.ort import OrtBackend

    with tempfile.TemporaryDirectory(prefix='vla-ros-flops-') as d:
        backend = OrtBackend(pkg, threads=threads, profile_dir=d)
        try:
            Policy(pkg, backend, config or PolicyConfig(mode='full')).infer(observation)
            by_graph = profile_flops(backend.end_profiling())
        finally:
            backend.close()
    by_graph = {g: f for g, f in by_graph.items() if f}
    return {'flop': int(sum(by_graph.values())), 'flop_by_graph': by_graph}


# --- the ceiling -----------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = b''.join(_field(1, _field(1, d)) for d in shape)  # Dimension.dim_value
    tensor = _field(1, 1) + _field(2, dims)  # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor))  # name, type.tensor_type


def matmul_model(n: int) -> bytes:
    """ModelProto bytes of Y = A @ B, A and B (n, n) float inputs (ONNX IR 8, opset 17)."""
    node = _field(1, 'A') + _field(1, 'B') + _field(2, 'Y') + _field(3, 'mm') + _field(4,
                                                                                    'MatMul')
    graph = (_field(1, node) + _field(2, 'ceiling') + _field(11, _value_info('A', (n, n)))
             + _field(11, _value_info('B', (n, n))) + _field(12, _value_info('Y', (n, n))))
    return _field(1, 8) + _field(8, _field(1, '') + _field(2, 17)) + _field(7, graph)


def matmul_ceiling(threads: int | None = None, n: int = 1024, repeats: int = 3,
                   runs: int = 5) -> dict:
    """ONNX Runtime's MatMul GFLOP/s here, on the bench's threads: the best of `repeats`
    medians of `runs` timed runs (the best median is the machine's, not the load's)."""
    import onnxruntime as ort

    from vla_ros.runtime.backends.ort import session_options

    sess = ort.InferenceSession(matmul_model(n), session_options(threads),
                                providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(0)
    feeds = {'A': rng.standard_normal((n, n), np.float32),
             'B': rng.standard_normal((n, n), np.float32)}
    sess.run(None, feeds)
    medians = []
    for _ in range(repeats):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        medians.append(float(np.median(times)))
    return {'gflops': 2 * n ** 3 / min(medians) / 1e9, 'n': n,
            'method': f'onnxruntime MatMul {n}x{n}x{n}, best of {repeats} medians of {runs}'}


def gflops_report(flop: int, total_ms_p50: float, ceiling: dict) -> dict:
    achieved = flop / (total_ms_p50 / 1000.0) / 1e9 if total_ms_p50 > 0 else 0.0
    return {'flop_per_inference': flop, 'achieved': achieved, 'ceiling': ceiling['gflops'],
            'fraction': achieved / ceiling['gflops'] if ceiling['gflops'] else None,
            'ceiling_method': ceiling['method'],
            'latency': 'full-depth total p50 (preprocessing included)'}
