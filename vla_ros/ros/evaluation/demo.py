"""`vla-ros demo`: the closed loop under the full ROS pipeline, headless, with a final report.

A simulated xArm6 (sim_robot: the xarm6_traj_controller's topic and message type, joint
states like joint_state_broadcaster, scene and wrist cameras) runs as a separate process; the
vla_policy node serves the model with early exit, the action queue and the safety filter; a
live line every second, then a report (success, inference rate, latency percentiles, exits
taken, backbone compute saved) written as JSON.

The model: `models/default` (see models/README.md), trained in the tabletop scene, serving the
touch tasks in episodes (vla_ros/ros/evaluation/episodes.py): success rate, a GIF of the
scene camera and plots are written to the output folder. Without models/default, and said so
plainly, a small Evo-1-shaped package with random weights built here in about half a minute -
it exercises and measures the whole runtime, but its motions are not a task.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

XARM6 = tuple(f'joint{i}' for i in range(1, 7))


def build_demo_package(out: Path, progress=print) -> Path:
    """A small random-weight Evo-1-shaped package for the xArm6, calibrated on synthetic
    observations so early exit has thresholds to use."""
    from dataclasses import replace

    import torch

    from vla_ros.export.exporter import ExportSpec, export_package
    from vla_ros.export.tokenizer import word_tokenizer
    from vla_ros.model.config import VLAConfig
    from vla_ros.model.vla import VLA
    from vla_ros.runtime.bench.package_bench import synthetic_observations
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.package.manifest import Normalization
    from vla_ros.runtime.policy.calibration import CalibrationConfig, calibrate_package
    from vla_ros.runtime.policy.observations import save_observations

    pkg_dir = out / 'package'
    torch.manual_seed(0)
    cfg = replace(VLAConfig.tiny('evo1'), state_dim=8, action_dim=8, chunk_len=10,
                  exit_layers=(0, 1, 2, 3))
    # Small motions around the arm's zero pose: the filter keeps them inside the limits.
    norm = Normalization('bounds', {'min': (-0.4,) * 6, 'max': (0.4,) * 6})
    spec = ExportSpec(name='demo-random-evo1', state_names=XARM6, action_names=XARM6,
                      dt_s=0.1, action_norm=norm, embodiment={'robot': 'xarm6'},
                      provenance={'weights': 'random (seed 0): a runtime demo, not a policy'})
    words = ['push', 'touch', 'the', 'red', 'blue', 'green', 'block', 'to', 'left', 'right']
    export_package(VLA(cfg).eval(), pkg_dir, spec, word_tokenizer(words, cfg.lm.vocab_size),
                   progress=progress)
    obs = synthetic_observations(load_package(pkg_dir), 40, seed=1)
    for o in obs:
        o.images = {k: (v[0][::4, ::4].copy(), v[1]) for k, v in o.images.items()}
    data = save_observations(out / 'calibration.npz', obs)
    calibrate_package(pkg_dir, data, CalibrationConfig(metrics=('cosine',),
                                                       distributions=('exp',),
                                                       budgets=(0.5, 0.75)),
                      progress=lambda _: None)
    return pkg_dir


def run_demo(out_dir: str = 'out/demo', episodes: int = 5, model: str | None = None,
             duration_s: float = 15.0, robot: str = 'xarm6', progress=print,
             task: str = 'touch') -> dict:
    """The trained default model on a simulated robot's tabletop task (episodes, success,
    video, plots); without the task's trained model, the random-weight runtime demo (said
    so)."""
    from vla_ros.ros.launch_logic import default_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained = default_model(robot=robot, task=task)
    if model:
        pkg = Path(model)
    elif (trained / 'manifest.json').is_file():
        pkg = trained
    elif task != 'touch':
        raise FileNotFoundError(
            f'no {task} model for the {robot} at {trained}: make one with `vla-ros '
            f'make-default --task {task} --robot {robot} --out {trained}` or pass --model')
    else:
        return _random_weights_demo(out, duration_s, progress)
    return run_task_demo(str(pkg), out, episodes, robot, progress=progress, task=task)


def run_task_demo(pkg: str, out: Path, episodes: int, robot: str = 'xarm6',
                  params: dict | None = None, progress=print, task: str = 'touch') -> dict:
    from vla_ros.ros.evaluation.episodes import run_episodes, write_media
    from vla_ros.runtime.package.loader import read_manifest

    m = read_manifest(pkg)
    progress(f'demo: {m.name} ({m.family}/{m.head.type}, exits {list(m.exits.layers)}, '
             f'threshold set {m.exits.default_threshold_set}) serving a simulated {robot} '
             f'(pybullet {"kinematics" if task == "touch" else "contact physics"}, scene + '
             f'wrist cameras at 30 Hz) through vla_policy; {episodes} {task} episodes')
    pick = task != 'touch'
    report = run_episodes(pkg, robot, episodes, params=params,
                          record_episodes=min(episodes, 3), progress=progress, task=task,
                          timeout_s=30.0 if pick else 12.0, view_rate_hz=5.0 if pick else 0.0)
    media = write_media(report, out)
    report.pop('frames', None)
    report.pop('captions', None)
    report['model_path'] = str(pkg)
    (out / 'report.json').write_text(json.dumps(report, indent=1) + '\n')
    progress(summary(report))
    progress(f'demo: wrote {out / "report.json"}, ' + ', '.join(str(p) for p in media))
    return report


def _random_weights_demo(out: Path, duration_s: float, progress) -> dict:
    from vla_ros.ros.evaluation.node_bench import run_node_bench
    from vla_ros.runtime.package.loader import read_manifest

    pkg = out / 'package'
    progress('demo: models/default (the trained demo model) is not in this tree, so this '
             'demo serves a small Evo-1-shaped package with RANDOM weights through the '
             'full ROS pipeline. It measures the runtime; its motions are not a task.')
    if not (pkg / 'manifest.json').is_file():
        t0 = time.monotonic()
        build_demo_package(out, progress=lambda line: progress(f'  {line}'))
        progress(f'demo: built {pkg} in {time.monotonic() - t0:.0f} s')
    m = read_manifest(pkg)
    progress(f'demo: {m.name} on a simulated xArm6 for {duration_s:g} s')
    report = run_node_bench(str(pkg), 'xarm6', duration_s=duration_s,
                            instruction='touch the red block', progress=progress)
    report['model_path'] = str(pkg)
    (out / 'report.json').write_text(json.dumps(report, indent=1) + '\n')
    progress(summary(report))
    progress(f'demo: report written to {out / "report.json"}')
    return report


def summary(r: dict) -> str:
    lat = r.get('inference_latency_ms', {})
    e2e = r.get('e2e_image_to_command_ms', {})
    tick = r.get('tick_period_error_ms')
    saved = r.get('backbone_compute_saved')
    nan = float('nan')
    lines = ['demo report']
    if 'success_rate' in r:
        tts = r.get('time_to_success_s', {})
        lines.append(f'  task success       {r["success_rate"]:.0%} of {r["episodes"]} '
                     f'episodes (time to success p50 {tts.get("p50", nan):.1f} s)')
    lines += [
        f'  inference          {r.get("inferences", 0)} chunks, {r.get("inference_hz", 0):.1f} '
        f'Hz, failures {r.get("inference_failures", 0)}',
        f'  latency            p50 {lat.get("p50", nan):.0f} ms, p99 '
        f'{lat.get("p99", nan):.0f} ms (observation -> chunk in the queue)',
        f'  image -> command   p50 {e2e.get("p50", nan):.0f} ms, p99 '
        f'{e2e.get("p99", nan):.0f} ms',
        f'  exits              {r.get("exit_histogram", {})}'
        + (f', backbone compute saved {saved:.0%}' if saved is not None else ''),
    ]
    if tick:
        lines.append(f'  control at {r.get("control_rate_hz", 0):g} Hz  period error p50 '
                     f'{tick.get("p50", nan):.2f} ms, p99 {tick.get("p99", nan):.2f} ms, '
                     f'missed ticks {r.get("missed_ticks", 0)} of {r.get("ticks", 0)}')
    if 'success_rate' not in r:
        lines.append('  task success       not measured: random weights are not a policy')
    return '\n'.join(lines)
