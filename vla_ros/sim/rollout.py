"""Closed-loop rollouts without ROS or wall-clock time: the package's Policy (ONNX Runtime) in
the tabletop scene, stepping the arm kinematically at the model's dt and executing the first
`execute` actions of each chunk before inferring again. Deterministic for a given package and
seeds, so it is a regression check of a trained model and quick to iterate with; the ROS
closed loop (vla_ros/ros/evaluation/episodes.py) is the measurement that counts for deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RolloutResult:
    seed: int
    instruction: str
    success: bool
    steps: int
    exits: list[int]
    touching: str  # the block the tip is on (pick tasks: held) at the end ('' for none)


def rollout(package_dir: str, seeds, robot: str = 'xarm6', mode: str = 'full',
            threshold_set: str | None = None, execute: int = 5, max_steps: int = 60,
            speed_rad_s: float = 1.5, target: str | None = None,
            task: str = 'touch') -> list[RolloutResult]:
    """`target`: name this block (a colour) in every episode instead of each seed's draw, so
    one layout can be run with every instruction. `task` 'pick' / 'pick_place': the physics
    scene, the model's last action entry commanding the gripper (closed above 0.5)."""
    from vla_ros.runtime.backends.base import load_backend
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig
    from vla_ros.sim.pick_scene import PickPlaceScene
    from vla_ros.sim.scene import TabletopScene

    pkg = load_package(package_dir)
    m = pkg.manifest
    policy = Policy(pkg, load_backend(pkg), PolicyConfig(mode=mode, threshold_set=threshold_set))
    cams = [c.name for c in m.cameras]
    pick = task != 'touch'
    scene = PickPlaceScene(robot, task=task) if pick else TabletopScene(robot)
    cap = speed_rad_s * m.action.dt_s
    out = []
    try:
        for seed in seeds:
            ep = scene.reset(int(seed), target)
            q = scene.home.copy()
            steps, exits, ok = 0, [], False
            while steps < max_steps and not ok:
                imgs = scene.render(q, cams)
                state = np.append(q, scene.closure()) if pick else q.copy()
                obs = Observation({c: (imgs[c], 'rgb8') for c in cams}, state,
                                  ep.instruction, 0.0)
                chunk = policy.infer(obs)
                exits.append(chunk.exit_layer)
                for goal in chunk.actions[:execute]:
                    joints = goal[:len(q)]
                    q = q + np.clip(joints - q, -cap, cap)
                    if pick:
                        scene.step(q, 1.0 if goal[-1] > 0.5 else 0.0, m.action.dt_s)
                    steps += 1
                    if scene.success(q):
                        ok = True
                        break
            out.append(RolloutResult(int(seed), ep.instruction, ok, steps, exits,
                                     scene.touching(q)))
    finally:
        scene.close()
        policy.close()
    return out
