"""Peak memory of one backend, measured alone in a fresh process.

`ru_maxrss` of the bench's own process is cumulative: after ONNX Runtime and torch have both
run in it, the second figure includes the first. Here each backend loads the package and runs
a few inferences in its own spawned interpreter, which reports its peak RSS and the RSS it
had before loading (Python, numpy and the imports), so the model's share is the difference.
A backend other than ONNX Runtime is named by 'module:function', a function taking the
BenchConfig and returning {name: factory} (the torch reference: vla_ros.export.torch_backend
:bench_backends), so this layer never imports it.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import resource


def _vm(field: str) -> float:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


def _probe(conn, package_root: str, name: str, ref: str | None, cfg, runs: int) -> None:
    import numpy as np  # noqa: F401  (part of the baseline, as in any serving process)

    from vla_ros.runtime.backends import load_backend
    from vla_ros.runtime.bench.package_bench import synthetic_observations
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.policy.policy import Policy, PolicyConfig

    try:
        pkg = load_package(package_root)
        observations = synthetic_observations(pkg, 2, cfg.seed)
        base = _vm('VmRSS')
        if ref is None:
            backend = load_backend(pkg, 'onnxruntime', cfg.device, cfg.precision,
                                   threads=cfg.threads)
        else:
            module, _, func = ref.partition(':')
            backend = getattr(importlib.import_module(module), func)(cfg)[name]()
        policy = Policy(pkg, backend, PolicyConfig(mode='full', seed=cfg.seed))
        for i in range(runs):
            policy.infer(observations[i % len(observations)])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        conn.send({'peak_rss_mb': peak, 'baseline_rss_mb': base,
                   'model_peak_rss_mb': peak - base, 'runs': runs, 'process': 'separate'})
        backend.close()
    except Exception as e:  # reported in the bench's JSON instead of a figure
        conn.send({'error': f'{type(e).__name__}: {e}'})


def backend_memory(package_root: str, name: str, cfg, ref: str | None = None,
                   runs: int = 3, timeout_s: float = 600.0) -> dict:
    """{'peak_rss_mb', 'baseline_rss_mb', 'model_peak_rss_mb'} of backend `name` alone."""
    ctx = mp.get_context('spawn')
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_probe, args=(child, package_root, name, ref, cfg, runs),
                       name=f'vla_bench_memory:{name}')
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            return {'error': f'no answer within {timeout_s:g} s'}
        return parent.recv()
    except EOFError:
        return {'error': f'the memory probe ended (exit code {proc.exitcode})'}
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        parent.close()
