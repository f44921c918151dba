"""What the parity drivers share: the backend over a converted package, graph runs that keep
the intermediates, and small numeric helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def open_policy(checkpoint: Path, package: Path, backend: str):
    """(package, backend, Policy): ONNX Runtime on the exported graphs, or the torch reference
    on the converted checkpoint behind the same manifest."""
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.policy.policy import Policy, PolicyConfig

    pkg = load_package(package)
    if backend == 'ort':
        from vla_ros.runtime.backends.ort import OrtBackend

        be = OrtBackend(pkg)
    else:
        from vla_ros.export.torch_backend import TorchBackend

        be = TorchBackend.from_checkpoint(str(checkpoint))
    return pkg, be, Policy(pkg, be, PolicyConfig(mode='full'))


def host(be, value) -> np.ndarray:
    return np.asarray(be.to_host(value), np.float64)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def checkpoint_tensor(checkpoint: Path, key: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(checkpoint / 'model.safetensors'))[key].astype(np.float64)


def bf16(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even to bfloat16, back in float32."""
    b = np.asarray(x, np.float32).view(np.uint32)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.astype(np.uint32).view(np.float32)
