"""`vla-ros eval`: success rate on the simulated tabletop tasks (touch, pick, pick and place),
per runtime configuration.

Every variant runs the same episodes (the same layout seeds and instructions), each in a fresh
sim robot process and vla_policy node, so merge strategies, threshold sets, deadlines or an
added inference latency are compared by success under identical conditions. Results are broken
down per task (target block and instruction template).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def parse_assignments(items) -> dict:
    """`name=value` strings -> vla_policy parameter values, typed by the parameter's default;
    unknown names and values of the wrong type raise ValueError."""
    from vla_ros.ros.node.params import BY_NAME

    out = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition('=')
        if not sep:
            raise ValueError(f'{item!r} is not NAME=VALUE')
        name = name.strip()
        if name not in BY_NAME:
            raise ValueError(f'unknown vla_policy parameter {name!r}')
        default = BY_NAME[name].default
        try:
            if isinstance(default, bool):
                if raw.lower() not in ('true', 'false'):
                    raise ValueError
                value = raw.lower() == 'true'
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            elif isinstance(default, list):
                value = [v for v in raw.split(';') if v]
            else:
                value = raw
        except ValueError:
            raise ValueError(f'{name}={raw!r}: expected a {type(default).__name__}') from None
        out[name] = value
    return out


def per_task(results: list[dict]) -> dict[str, dict]:
    groups: dict[str, list[bool]] = {}
    for r in results:
        groups.setdefault(f'target={r["target"]}', []).append(r['success'])
        if r.get('destination'):
            groups.setdefault(f'destination={r["destination"]}', []).append(r['success'])
        verb = r['instruction'].split(' the ')[0]
        groups.setdefault(f'template={verb}', []).append(r['success'])
    return {k: {'episodes': len(v), 'success_rate': float(np.mean(v))}
            for k, v in sorted(groups.items())}


def evaluate(model: str | None, robot: str, episodes: int, seed0: int, timeout_s: float,
             base: dict, variants: list[tuple[str, dict]], progress=print,
             task: str = 'touch') -> dict:
    from vla_ros.ros.evaluation.episodes import run_episodes
    from vla_ros.ros.launch_logic import default_model

    pkg = model or str(default_model(robot=robot, task=task))
    if not (Path(pkg) / 'manifest.json').is_file():
        raise FileNotFoundError(f'no model package at {pkg} (see models/README.md)')
    report: dict = {'model_path': pkg, 'robot': robot, 'task': task,
                    'episodes_per_variant': episodes,
                    'seed0': seed0, 'base_params': base, 'variants': {}}
    for label, params in variants:
        merged = {**base, **params}
        progress(f'eval: variant {label} {merged or "(defaults)"}: {episodes} episodes')
        t0 = time.monotonic()
        r = run_episodes(pkg, robot, episodes, seed0, timeout_s, merged, progress=progress,
                         task=task)
        r.pop('frames', None)
        r.pop('captions', None)
        r.pop('inference_latencies_ms', None)
        r['per_task'] = per_task(r['results'])
        r['wall_s'] = round(time.monotonic() - t0, 1)
        report['variants'][label] = r
        progress(f'eval: {label}: success {r["success_rate"]:.0%} of {r["episodes"]}, '
                 f'latency p50 {r["inference_latency_ms"].get("p50", float("nan")):.0f} ms, '
                 f'exits {r["exit_histogram"]}, compute saved '
                 f'{r.get("backbone_compute_saved", 0.0):.0%}')
    progress(table(report))
    return report


def table(report: dict) -> str:
    lines = [f'{"variant":<22} {"success":>8} {"lat p50":>8} {"lat p99":>8} {"saved":>6}']
    for label, r in report['variants'].items():
        lat = r['inference_latency_ms']
        lines.append(f'{label:<22} {r["success_rate"]:>8.0%} {lat.get("p50", np.nan):>8.0f} '
                     f'{lat.get("p99", np.nan):>8.0f} '
                     f'{r.get("backbone_compute_saved", 0.0):>6.0%}')
    return '\n'.join(lines)
