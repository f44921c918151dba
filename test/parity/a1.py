"""A1 parity driver (case: test/data/parity/a1, README there).

The case is text + proprio only (the tiny model has no vision_backbone) and its prompt is the
case's own (`<|endoftext|>What action should the robot take to {task}?<proprioception>`, not
the Molmo formatter), with exits every layer: `arrange` says so in `vla_ros_convert.json`.
`compare` checks the prompt ids, the LLM's hidden states and post-RoPE K/V per layer, the
10-step flow solve at every exit from the recorded noise, the `generate` deltas, the
filtered-quantile thresholds on the recorded delta matrix, and both early-exit runs through
our Policy with A1's exit runtime (fresh noise per solve, recorded draws in call order).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from parity import Check, check

CASE_OPTIONS = {'template': 'What action should the robot take to {instruction}?',
                'lowercase': True, 'text_len': 14, 'exit_interval': 1}


def arrange(case: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    shutil.copy(case / 'model.yaml', dst / 'model.yaml')
    shutil.copy(case / 'tokenizer.json', dst / 'tokenizer.json')
    shutil.copy(case / 'upstream.safetensors', dst / 'model.safetensors')
    (dst / 'vla_ros_convert.json').write_text(json.dumps(CASE_OPTIONS))
    return dst


class Recorded:
    """A numpy-Generator stand-in that hands out recorded noise draws in call order."""

    def __init__(self, draws: np.ndarray) -> None:
        self.draws = list(draws)

    def standard_normal(self, size):
        return np.asarray(self.draws.pop(0), np.float32).reshape(size)


def _rms(x, w, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def compare(case: Path, checkpoint: Path, package: Path, backend: str) -> list[Check]:
    from safetensors.numpy import load_file

    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.package.manifest import ThresholdSet
    from vla_ros.runtime.policy.early_exit import (
        discrepancy,
        exit_distribution,
        filtered_quantile_thresholds,
    )
    from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig

    z = np.load(case / 'case.npz')
    pkg = load_package(package)

    def backend_():
        if backend == 'ort':
            from vla_ros.runtime.backends import load_backend
            return load_backend(pkg)
        from vla_ros.export.torch_backend import TorchBackend
        return TorchBackend.from_checkpoint(str(checkpoint))

    be = backend_()
    policy = Policy(pkg, be, PolicyConfig(mode='full'))
    obs = Observation(images={}, state=z['proprio'][:pkg.manifest.state.dim],
                      instruction=str(z['instruction']), stamp_s=0.0)
    inputs = policy.prepare(obs)
    checks = [check('input_ids', inputs.input_ids[0], z['input_ids'], 0)]
    run = policy.pipeline.start(inputs)
    hidden = [be.to_host(run.hidden)[0]]
    per_exit = []
    for i, noise in enumerate(z['noise'][None].repeat(len(z['per_exit_actions']), 0)):
        run.advance()
        hidden.append(be.to_host(run.hidden)[0])
        kv = run._kv[-1]
        checks.append(check(f'attn_key_values[{i}]',
                            np.stack([be.to_host(kv[f'k_{i}'])[0], be.to_host(kv[f'v_{i}'])[0]]),
                            z['attn_key_values'][i], 1e-5))
        per_exit.append(run.action(noise, 10))
    meta = json.loads((checkpoint / 'vla_ros_checkpoint.json').read_text())['vla_config']
    w = load_file(str(checkpoint / 'model.safetensors'))['decoder.norm.weight']
    hidden[-1] = _rms(hidden[-1], w, meta['lm']['rms_eps'])  # upstream's last entry is ln_f
    checks.append(check('hidden_states', np.stack(hidden), z['hidden_states'], 1e-5))
    checks.append(check('per_exit_actions', np.stack(per_exit), z['per_exit_actions'], 1e-4))

    # ActionValueNet(mode='generate'): layers [0] + exit_list, fresh noise each, then the
    # per-step mean |delta| over the whole fixed_action_dim vector.
    run = policy.pipeline.start(inputs)
    gen = []
    for noise in z['generate_noise']:
        run.advance()
        gen.append(run.action(noise, 10))
    gen = np.stack(gen)
    checks.append(check('generate_actions', gen, z['generate_actions'], 1e-4))
    delta = np.stack([discrepancy(gen[k][:, None], gen[k + 1][:, None], 'mean_abs')
                      for k in range(len(gen) - 1)])
    checks.append(check('generate_delta', delta, z['generate_delta'], 1e-4))
    q = exit_distribution('exp', float(z['exit_ratio']), z['delta_matrix'].shape[0])
    thresholds = filtered_quantile_thresholds(z['delta_matrix'], q)
    checks.append(check('thresholds', thresholds, z['thresholds'], 0))

    for run_name, values in (('infer', z['thresholds']), ('infer2', z['infer2_thresholds'])):
        p = Policy(pkg, backend_(), PolicyConfig(mode='full', truncated=False,
                                                  exit_runtime='a1'))
        p.config = PolicyConfig(mode='early_exit', truncated=False, exit_runtime='a1')
        p.thresholds = ThresholdSet('case', 'mean_abs', tuple(float(v) for v in values), 1.0,
                                    dims='all')
        p.rng = Recorded(z[f'{run_name}_noise'])
        chunk = p.infer(obs)
        checks.append(check(f'{run_name}_exit_layer', chunk.exit_layer,
                            z[f'{run_name}_exit_layer'], 0))
        n = chunk.actions.shape[1]
        checks.append(check(f'{run_name}_exit_action (named dims)', chunk.actions,
                            z[f'{run_name}_exit_action'][:, :n], 1e-4))
        checks.append(check(f'{run_name}_noise draws used', len(p.rng.draws), 0, 0))
    return checks
