"""The backend interface: run one graph of a package by name on named device buffers.

Values returned by `run` are backend-native (numpy on the CPU, device buffers on a GPU) and
can be fed straight into the next graph, so intermediate tensors stay on the device between
graphs; `to_host` copies one to numpy. A backend is thread-confined: one thread (the inference
worker) owns it. Imports no torch and no rclpy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

BACKENDS = ('onnxruntime', 'tensorrt', 'torch')


class BackendError(RuntimeError):
    """A backend cannot be created or a graph cannot run; the message says what to do."""


class Backend(ABC):
    name = 'backend'
    device = 'cpu'
    precision = 'fp32'

    @abstractmethod
    def run(self, graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        """Runs one graph. Feeds may be numpy arrays or values this backend returned."""

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def has_graph(self, graph: str) -> bool:
        """Whether `run(graph, ...)` can run; optional graphs (a segment chain) are used only
        where it can."""
        return True

    def synchronize(self) -> None:  # noqa: B027 - a no-op is right for synchronous backends
        """Waits for queued device work (timing boundaries)."""

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing here
        """Releases sessions, engines and buffers."""

    def describe(self) -> str:
        return f'{self.name} on {self.device} ({self.precision})'


def load_backend(package, kind: str = 'onnxruntime', device: str = 'cpu',
                 precision: str = 'fp32', **options: Any) -> Backend:
    """Creates the backend `kind` for a loaded ModelPackage."""
    if kind == 'onnxruntime':
        from vla_ros.runtime.backends.ort import OrtBackend

        return OrtBackend(package, device=device, precision=precision, **options)
    if kind == 'tensorrt':
        from vla_ros.runtime.backends.trt import TensorRTBackend

        return TensorRTBackend(package, precision=precision, **options)
    if kind == 'torch':
        raise BackendError('the torch backend runs a checkpoint, not a package: use '
                           'vla_ros.export.torch_backend.TorchBackend.from_checkpoint')
    raise BackendError(f'unknown backend {kind!r}; choose one of {BACKENDS}')
