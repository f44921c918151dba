"""The measuring half of scripts/gpu_check.sh (run that; it checks for CUDA first).

Per preset (a1-mid first, then evo1-full): export with random weights and the torch
checkpoint, then time full-depth inference through the project's Policy on each GPU backend
that exists here: torch eager on CUDA (fp32, fp16), torch with every graph call replayed from
a captured CUDA graph (checked against eager; reported as not used where capture fails or the
actions differ), ONNX Runtime's CUDA provider if onnxruntime-gpu is installed, TensorRT if
its Python package is. Latency p50/p99 over timed runs after warm-up; memory as torch's peak
allocation and the device's used memory (nvidia-smi). The JSON is rewritten after every step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

PRESETS = (('a1-mid', 3, 20), ('evo1-full', 2, 8))  # (preset, warm-up runs, timed runs)


def _pct(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {'p50': float(np.percentile(a, 50)), 'p99': float(np.percentile(a, 99)),
            'min': float(a.min()), 'n': int(a.size)}


def _smi_used_mb() -> float | None:
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,'
                              'nounits'], capture_output=True, text=True, timeout=20).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class CudaGraphed:
    """Wraps a TorchBackend: each (graph, input shapes) is captured once into a CUDA graph
    with static input buffers and replayed afterwards; outputs are cloned, because a replay
    overwrites its output buffers and the pipeline keeps earlier outputs."""

    def __init__(self, backend) -> None:
        self.b, self.torch = backend, backend.torch
        self.graphs: dict = {}
        self.name = 'torch+cudagraph'

    def __getattr__(self, item):
        return getattr(self.b, item)

    def run(self, graph: str, feeds: dict) -> dict:
        torch = self.torch
        feeds = {k: self.b._tensor(v) for k, v in feeds.items()}
        key = (graph, tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(feeds.items())))
        entry = self.graphs.get(key)
        if entry is None:
            static = {k: v.clone() for k, v in feeds.items()}
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self.b.run(graph, static)
            torch.cuda.current_stream().wait_stream(stream)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = self.b.run(graph, static)
            entry = self.graphs[key] = (g, static, out)
        g, static, out = entry
        for k, v in feeds.items():
            static[k].copy_(v)
        g.replay()
        return {k: v.clone() for k, v in out.items()}

    def describe(self) -> str:
        return f'{self.b.describe()} with CUDA graphs'


def _time_policy(pkg, backend, warmup: int, runs: int, seed: int = 0):
    from vla_ros.runtime.bench.package_bench import synthetic_observations
    from vla_ros.runtime.policy.policy import Policy, PolicyConfig

    policy = Policy(pkg, backend, PolicyConfig(mode='full', seed=seed))
    obs = synthetic_observations(pkg, 2, seed)
    ms, actions = [], None
    for i in range(warmup + runs):
        policy.rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        chunk = policy.infer(obs[0])  # actions come back on the host: the device has synced
        if i >= warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
        actions = chunk.actions
    return _pct(ms), actions


def _torch_mem(torch) -> dict:
    return {'torch_peak_allocated_mb': torch.cuda.max_memory_allocated() / 2**20,
            'device_used_mb': _smi_used_mb()}


def run_preset(preset: str, warmup: int, runs: int, work: Path, deadline: float,
               report: dict, save) -> None:
    import torch

    from vla_ros.export.torch_backend import TorchBackend
    from vla_ros.runtime.backends import load_backend
    from vla_ros.runtime.package.loader import load_package

    res = report['presets'].setdefault(preset, {})
    pkg_dir, ckpt = work / preset, work / f'{preset}-ckpt'
    t0 = time.monotonic()
    if not (pkg_dir / 'manifest.json').is_file():
        left = max(30.0, deadline - time.monotonic() - 60.0)
        cmd = [sys.executable, '-m', 'vla_ros.cli', 'export', '--preset', preset, str(pkg_dir),
               '--save-checkpoint', str(ckpt), '--no-verify', '--precision', 'fp32', 'fp16']
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
        if proc.returncode != 0:
            res['export_error'] = proc.stderr[-2000:]
            save()
            return
    res['export_s'] = time.monotonic() - t0
    pkg = load_package(str(pkg_dir))
    res['gflop_note'] = 'full depth, one observation; latency includes preprocessing'
    eager_actions = None
    for precision in ('fp32', 'fp16'):
        if time.monotonic() > deadline:
            res['skipped'] = 'time budget spent'
            break
        step = f'torch_cuda_{precision}'
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            be = TorchBackend.from_checkpoint(str(ckpt), device='cuda', precision=precision)
            lat, actions = _time_policy(pkg, be, warmup, runs)
            res[step] = {'latency_ms': lat, **_torch_mem(torch)}
            if precision == 'fp32':
                eager_actions = actions
            torch.cuda.reset_peak_memory_stats()
            graphed = CudaGraphed(be)
            lat_g, actions_g = _time_policy(pkg, graphed, warmup, runs)
            diff = float(np.max(np.abs(actions_g - actions)))
            res[f'{step}_cudagraph'] = {'latency_ms': lat_g, 'max_abs_diff_vs_eager': diff,
                                       'used': diff < (1e-3 if precision == 'fp32' else 5e-2),
                                       'speedup_p50': lat['p50'] / lat_g['p50'],
                                       **_torch_mem(torch)}
            del be, graphed
        except Exception as e:  # one backend failing must not lose the others' figures
            res[step + '_error'] = f'{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}'
        save()
    import onnxruntime as ort

    res['onnxruntime_providers'] = ort.get_available_providers()
    kinds = []
    if 'CUDAExecutionProvider' in res['onnxruntime_providers']:
        kinds += [('onnxruntime_cuda_fp32', 'onnxruntime', 'cuda', 'fp32'),
                  ('onnxruntime_cuda_fp16', 'onnxruntime', 'cuda', 'fp16')]
    else:
        res['onnxruntime_cuda'] = 'not installed (onnxruntime-gpu absent)'
    try:
        import tensorrt  # noqa: F401

        kinds += [('tensorrt_fp16', 'tensorrt', 'cuda', 'fp16')]
    except ImportError:
        res['tensorrt'] = 'not installed'
    for step, kind, device, precision in kinds:
        if time.monotonic() > deadline:
            res['skipped'] = 'time budget spent'
            break
        try:
            used0 = _smi_used_mb()
            t1 = time.monotonic()
            be = load_backend(pkg, kind, device, precision)
            load_s = time.monotonic() - t1
            lat, actions = _time_policy(pkg, be, warmup, runs)
            res[step] = {'latency_ms': lat, 'load_s': load_s, 'device_used_mb': _smi_used_mb(),
                         'device_used_before_mb': used0}
            if eager_actions is not None:
                res[step]['max_abs_diff_vs_torch_fp32'] = float(
                    np.max(np.abs(actions - eager_actions)))
            be.close()
        except Exception as e:
            res[step + '_error'] = f'{type(e).__name__}: {e}'
        save()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--work', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--budget-s', type=float, default=450.0)
    args = ap.parse_args()
    start = time.monotonic()
    deadline = start + args.budget_s - 20.0  # room to write the JSON
    import torch

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {'device': torch.cuda.get_device_name(0), 'torch': torch.__version__,
              'cuda': torch.version.cuda, 'budget_s': args.budget_s, 'presets': {}}

    def save() -> None:
        report['elapsed_s'] = time.monotonic() - start
        Path(args.out).write_text(json.dumps(report, indent=1) + '\n')

    save()
    for preset, warmup, runs in PRESETS:
        if time.monotonic() > deadline:
            report['presets'][preset] = {'skipped': 'time budget spent'}
            break
        try:
            run_preset(preset, warmup, runs, work, deadline, report, save)
        except subprocess.TimeoutExpired:
            report['presets'].setdefault(preset, {})['export_error'] = 'export timed out'
        save()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
