"""The torch reference backend: the same graphs, run eagerly from a checkpoint's torch model.

It serves parity checks and side-by-side benchmarks against the exported package (same weights,
same graph boundaries), and is the GPU path where neither TensorRT nor onnxruntime-gpu is
installed. torch is imported only when one is created, so the runtime stays torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vla_ros.runtime.backends.base import Backend, BackendError


class TorchBackend(Backend):
    name = 'torch'

    def __init__(self, model, device: str = 'cpu', precision: str = 'fp32',
                 threads: int | None = None) -> None:
        import torch

        from vla_ros.export.graphs import build_graphs, chain_def  # the graph boundaries

        if device.startswith('cuda') and not torch.cuda.is_available():
            raise BackendError('torch has no CUDA device here; use device cpu')
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device, self.precision = device, precision
        self.dtype = torch.float16 if precision == 'fp16' else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.graphs = {d.name: d for d in (*build_graphs(self.model), chain_def(self.model))}

    @classmethod
    def from_checkpoint(cls, directory: str, **kwargs: Any) -> TorchBackend:
        from vla_ros.export.checkpoint import load_checkpoint

        model, _, _ = load_checkpoint(directory)
        return cls(model, **kwargs)

    def _tensor(self, value: Any):
        if isinstance(value, self.torch.Tensor):
            return value
        t = self.torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def run(self, graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        d = self.graphs.get(graph)
        if d is None:
            raise BackendError(f'the torch model has no graph {graph!r}')
        with self.torch.inference_mode():
            out = d.module(*[self._tensor(feeds[n]) for n in d.inputs])
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(d.outputs, out, strict=True))

    def to_host(self, value: Any) -> np.ndarray:
        if isinstance(value, self.torch.Tensor):
            return value.detach().to('cpu', self.torch.float32).numpy()
        return np.asarray(value)

    def synchronize(self) -> None:
        if self.device.startswith('cuda'):
            self.torch.cuda.synchronize()


def bench_backends(cfg) -> dict[str, Callable[[], Backend]]:
    """The torch factory for `bench_package(..., extra_backends=...)` when the bench config
    names a checkpoint (same device, precision and threads as the ONNX Runtime run)."""
    if not cfg.torch_checkpoint:
        return {}
    return {'torch': lambda: TorchBackend.from_checkpoint(
        cfg.torch_checkpoint, device='cuda' if cfg.device != 'cpu' else 'cpu',
        precision=cfg.precision, threads=cfg.threads)}
