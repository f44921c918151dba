"""RobotAdapter: the model's state/action spaces <-> a robot's joints, by name.

State vectors are assembled from JointState by joint name, never by index (drivers publish
joints in any order and add others, e.g. gripper fingers). Action entries map onto commanded
joints by name; gripper entries go through their Gripper mapping, either onto a commanded joint
(AgiBot) or to a separate gripper interface (xArm, Franka, UR). Every mismatch is found at
configure time and reported with the names on both sides. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_ros.adapters.robots import Controller, Gripper, RobotSpec


class AdapterError(ValueError):
    """The package and the robot do not fit; the message lists the names on both sides."""


@dataclass(frozen=True)
class GripperTarget:
    gripper: Gripper
    position: float  # joint position


class RobotAdapter:
    def __init__(self, robot: RobotSpec, state_names: tuple[str, ...],
                 action_names: tuple[str, ...], controller: str | None = None) -> None:
        self.robot = robot
        self.controller: Controller = self._controller(controller)
        joints = robot.joint_names
        grippers = {g.action_name: g for g in robot.grippers}
        readable = set(joints) | set(robot.extra_state_joints) | {g.joint for g in
                                                                  robot.grippers}
        # State entries: a joint position, or a gripper value read from its joint.
        self.state_sources: list[tuple[str, Gripper | None]] = []
        unknown_state = []
        for n in state_names:
            if n in grippers:
                self.state_sources.append((grippers[n].joint, grippers[n]))
            elif n in readable:
                self.state_sources.append((n, None))
            else:
                unknown_state.append(n)
        # Action entries: a commanded joint, or a gripper.
        self.action_joint_index: list[tuple[int, int]] = []  # (action index, joint index)
        self.action_grippers: list[tuple[int, Gripper]] = []
        unknown_action = []
        for i, n in enumerate(action_names):
            if n in grippers:
                self.action_grippers.append((i, grippers[n]))
            elif n in joints:
                self.action_joint_index.append((i, joints.index(n)))
            else:
                unknown_action.append(n)
        if unknown_state or unknown_action:
            raise AdapterError(
                f'the model does not fit robot {robot.name}: state names {unknown_state} and '
                f'action names {unknown_action} are not joints of it. Robot joints: '
                f'{list(joints)}; grippers (as action/state names): {list(grippers)}. '
                'Export the package with the robot\'s joint names, or pick the matching robot.')
        self.state_names, self.action_names = state_names, action_names
        self.commanded = np.zeros(len(joints), bool)
        for _, j in self.action_joint_index:
            self.commanded[j] = True
        for _, g in self.action_grippers:
            if g.joint in joints:
                self.commanded[joints.index(g.joint)] = True
        self.lower = np.array([j.lower for j in robot.joints])
        self.upper = np.array([j.upper for j in robot.joints])
        self.velocity = np.array([j.velocity for j in robot.joints])
        self.acceleration = np.array([j.acceleration for j in robot.joints])

    def _controller(self, name: str | None) -> Controller:
        name = name or self.robot.default_controller
        if name not in self.robot.controllers:
            raise AdapterError(f'robot {self.robot.name} has no controller {name!r}; '
                               f'controllers: {sorted(self.robot.controllers)}')
        return self.robot.controllers[name]

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.robot.joint_names

    def state_vector(self, names: list[str], positions: list[float] | np.ndarray
                     ) -> np.ndarray:
        """JointState (names, positions) -> the model's raw state, by name. Raises KeyError
        naming the joints the message lacks."""
        lookup = dict(zip(names, positions, strict=False))
        missing = [src for src, _ in self.state_sources if src not in lookup]
        if missing:
            raise KeyError(f'joint_states lacks {missing}')
        out = np.empty(len(self.state_sources))
        for i, (src, gripper) in enumerate(self.state_sources):
            value = float(lookup[src])
            out[i] = gripper.to_model(value) if gripper else value
        return out

    def joint_positions(self, names: list[str], positions) -> np.ndarray:
        """Current positions of the robot's joints (controller order) from a JointState."""
        lookup = dict(zip(names, positions, strict=False))
        missing = [n for n in self.joint_names if n not in lookup]
        if missing:
            raise KeyError(f'joint_states lacks {missing}')
        return np.array([float(lookup[n]) for n in self.joint_names])

    def joint_targets(self, action: np.ndarray, current: np.ndarray
                      ) -> tuple[np.ndarray, list[GripperTarget]]:
        """One action (robot's raw units, the model's order) -> target positions of all
        commanded joints (uncommanded joints keep `current`) and separate gripper targets."""
        target = np.array(current, dtype=np.float64)
        for ai, ji in self.action_joint_index:
            target[ji] = action[ai]
        grippers = []
        joints = self.joint_names
        for ai, g in self.action_grippers:
            pos = g.to_joint(float(action[ai]))
            if g.joint in joints:
                target[joints.index(g.joint)] = pos
            else:
                grippers.append(GripperTarget(g, pos))
        return target, grippers
