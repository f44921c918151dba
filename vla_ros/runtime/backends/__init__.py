"""Inference backends behind one interface (see base.Backend)."""

from vla_ros.runtime.backends.base import Backend, BackendError, load_backend

__all__ = ['Backend', 'BackendError', 'load_backend']
