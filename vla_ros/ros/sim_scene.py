"""The tabletop behind `sim_robot`: which scene, how the arm's joints and the grippers reach
it, and what the episode status says. No ROS here (the node in sim_nodes.py owns the topics).

- task 'touch': the kinematic touch scene (vla_ros/sim/scene.py); success is the tool tip on
  the named block.
- task 'pick' / 'pick_place': the physics scene (vla_ros/sim/pick_scene.py), stepped with the
  arm each tick. The physical fingers follow the gripper's command at its stroke speed; the
  gripper joint the driver reports is where the fingers are, so a grasp shows as a gripper
  stalled on the block, as on the real driver.
"""

from __future__ import annotations

import numpy as np

from vla_ros.adapters.robots import RobotSpec
from vla_ros.sim.arm import SimArm
from vla_ros.sim.gripper import SimGripper
from vla_ros.sim.pick_scene import PICK_TASKS

SCENE_TASKS = ('touch', *PICK_TASKS)
REACHED_CLOSURE = 0.01  # fingers this close to the goal (fraction closed) are there


class SceneDriver:
    def __init__(self, spec: RobotSpec, task: str, image_size: tuple[int, int],
                 stroke_s: float) -> None:
        from vla_ros.sim.scene import SCENE_OF, SCENE_ROBOTS, scene_joint_names

        if task not in SCENE_TASKS:
            raise ValueError(f'unknown task {task!r}; one of {SCENE_TASKS}')
        if spec.name not in SCENE_OF:
            raise ValueError(f'no tabletop scene for robot {spec.name!r}; one of '
                             f'{sorted(SCENE_OF)}')
        cfg = SCENE_ROBOTS[SCENE_OF[spec.name]]
        self.index = np.array([spec.joint_names.index(n)
                               for n in scene_joint_names(spec.name)])
        self.task = task
        self.physics = task in PICK_TASKS
        if self.physics:
            from vla_ros.sim.pick_scene import PickPlaceScene

            self.scene = PickPlaceScene(spec.name, image_size, task, stroke_s)
        else:
            from vla_ros.sim.scene import TabletopScene

            self.scene = TabletopScene(spec.name, image_size)
        self.gripper = next((g for g in spec.grippers if g.action_name == cfg.gripper), None)
        self.gripper_index = (spec.joint_names.index(self.gripper.joint)
                              if self.gripper and self.gripper.joint in spec.joint_names
                              else None)

    def home(self, arm_positions: np.ndarray) -> np.ndarray:
        """The arm's full joint vector with the scene's joints at home."""
        q = np.array(arm_positions, float)
        q[self.index] = self.scene.home
        if self.gripper_index is not None:
            q[self.gripper_index] = self.gripper.joint_open
        return q

    def reset(self, seed: int) -> dict:
        return self.scene.reset(seed).describe()

    @property
    def episode(self):
        """The scene's current episode (an Episode or a PickEpisode)."""
        return self.scene.episode

    def step(self, arm: SimArm, grippers: dict[str, SimGripper], dt: float) -> None:
        """Physics: the fingers toward the gripper's command, the arm where it is now; then
        the gripper joint reads where the fingers are (stalled on a block they hold)."""
        if not self.physics:
            return
        g = self.gripper
        positions = arm.state()[0]
        sim = grippers.get(g.action_name) if g else None
        if sim is not None:  # a driver's action (xArm, Franka Hand, Robotiq)
            closure = g.closure(sim.target)
        elif self.gripper_index is not None:  # a joint of the arm's command (AgiBot)
            closure = g.closure(float(arm.setpoint[self.gripper_index]))
        else:
            closure = 0.0
        self.scene.step(positions[self.index], closure, dt)
        measured = self.scene.closure()
        if abs(measured - closure) < REACHED_CLOSURE:
            measured = closure  # at the goal, as the driver reports it
        joint = g.joint_open + measured * (g.joint_closed - g.joint_open) if g else 0.0
        if sim is not None:
            sim.position = joint
            # Held: the fingers stop on the block (the driver reports a stalled grasp).
            sim.object_at = joint if self.scene.held() and closure > measured else None
        elif self.gripper_index is not None:
            arm.measured(self.gripper_index, joint)

    def render(self, arm_positions: np.ndarray, cameras=('scene', 'wrist')) -> dict:
        return self.scene.render(arm_positions[self.index], cameras)

    def view(self, size: tuple[int, int]) -> np.ndarray | None:
        """A third-person frame for people; None where the scene has no such view."""
        return self.scene.view(size) if self.physics else None

    def status(self, arm_positions: np.ndarray) -> dict:
        """The success detector's view: 'touching' (the block the tip is on, or the block
        held) and 'success'; the physics tasks add held / lifted / placed / closure."""
        if self.physics:
            st = self.scene.status()
            return {'touching': st['held'], **st}
        q = arm_positions[self.index]
        touching = self.scene.touching(q)
        return {'touching': touching, 'success': touching == self.scene.episode.target}

    def close(self) -> None:
        self.scene.close()
