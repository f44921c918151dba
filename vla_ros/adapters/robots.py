"""The robots vla_ros drives: joint names, limits, controllers and topics, as published by the
robots' ROS 2 drivers and descriptions (sources in comments; details in
shared/reference/robots_and_chunking.md). Numpy-free plain data; imports nothing from ROS.

Acceleration limits marked "vla_ros default" are conservative values of ours for the
per-tick acceleration clamp, not manufacturer limits; override them per deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

COMMAND_MODES = ('position_stream', 'joint_state', 'trajectory')
PI = math.pi
TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class JointLimit:
    name: str
    lower: float  # rad (m for prismatic joints)
    upper: float
    velocity: float  # rad/s (m/s)
    acceleration: float  # rad/s^2 (m/s^2)

    def __post_init__(self) -> None:
        if not (self.lower < self.upper and self.velocity > 0 and self.acceleration > 0):
            raise ValueError(f'joint {self.name}: need lower < upper and positive velocity '
                             f'and acceleration limits, got {self}')


@dataclass(frozen=True)
class Gripper:
    """A model action entry `action_name` in [model_open, model_closed] mapped linearly onto
    the gripper joint `joint` in [joint_open, joint_closed].

    Commanded either as a joint of the arm's command (no `action_server`: AgiBot) or through
    the driver's control_msgs/GripperCommand action, whose goal position is in the joint's
    units. `move_action` / `grasp_action` name franka_msgs Move / Grasp actions, which take
    the opening between the fingers (twice the finger joint)."""

    action_name: str
    joint: str
    joint_open: float
    joint_closed: float
    model_open: float = 0.0
    model_closed: float = 1.0
    action_server: str = ''  # control_msgs/GripperCommand action, where the driver has one
    max_effort: float = math.inf  # the most a goal's max_effort may ask (N)
    move_action: str = ''  # franka_msgs/action/Move
    grasp_action: str = ''  # franka_msgs/action/Grasp

    def __post_init__(self) -> None:
        if self.joint_open == self.joint_closed or self.model_open == self.model_closed:
            raise ValueError(f'gripper {self.action_name}: open and closed must differ, got '
                             f'{self}')
        if not self.max_effort > 0:
            raise ValueError(f'gripper {self.action_name}: max_effort {self.max_effort} '
                             'must be > 0')

    @property
    def joint_range(self) -> tuple[float, float]:
        return min(self.joint_open, self.joint_closed), max(self.joint_open, self.joint_closed)

    def closure(self, joint_value: float) -> float:
        """A joint position as the fraction closed: 0 = open, 1 = closed, clamped (NaN stays
        NaN, for the caller to refuse)."""
        frac = (joint_value - self.joint_open) / (self.joint_closed - self.joint_open)
        return frac if math.isnan(frac) else min(max(frac, 0.0), 1.0)

    def to_joint(self, value: float) -> float:
        span = self.model_closed - self.model_open
        frac = min(max((value - self.model_open) / span, 0.0), 1.0)
        return self.joint_open + frac * (self.joint_closed - self.joint_open)

    def to_model(self, joint_value: float) -> float:
        span = self.joint_closed - self.joint_open
        frac = (joint_value - self.joint_open) / span
        return self.model_open + frac * (self.model_closed - self.model_open)


@dataclass(frozen=True)
class Controller:
    mode: str  # position_stream | joint_state | trajectory
    topic: str  # relative names are resolved in the node's namespace
    update_rate_hz: float  # the controller manager's (or sim loop's) rate

    def __post_init__(self) -> None:
        if self.mode not in COMMAND_MODES:
            raise ValueError(f'controller mode {self.mode!r} is not one of {COMMAND_MODES}')


@dataclass(frozen=True)
class RobotSpec:
    name: str
    joints: tuple[JointLimit, ...]  # the commanded joints, in controller order
    controllers: dict[str, Controller]  # by name; `default_controller` is used unless set
    default_controller: str
    grippers: tuple[Gripper, ...] = ()
    joint_state_topic: str = 'joint_states'
    speed_scaling_topic: str = ''  # std_msgs/Float64 in [0, 1] (UR)
    program_running_topic: str = ''  # std_msgs/Bool (UR): False = not executing commands
    extra_state_joints: tuple[str, ...] = field(default=())  # readable, not commanded

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def joint(self, name: str) -> JointLimit:
        for j in self.joints:
            if j.name == name:
                return j
        raise KeyError(name)


def _arm(names, lower, upper, velocity, acceleration) -> tuple[JointLimit, ...]:
    return tuple(JointLimit(n, lo, hi, v, a)
                 for n, lo, hi, v, a in zip(names, lower, upper, velocity, acceleration,
                                            strict=True))


def xarm6() -> RobotSpec:
    # xarm_ros2@humble xarm6 description (limited:=false); MoveIt joint_limits.yaml gives
    # max_velocity 2.14 and max_acceleration 10, which the clamps use.
    names = tuple(f'joint{i}' for i in range(1, 7))
    return RobotSpec(
        name='xarm6',
        joints=_arm(names, (-TWO_PI, -2.059, -3.927, -TWO_PI, -1.69297, -TWO_PI),
                    (TWO_PI, 2.0944, 0.19198, TWO_PI, PI, TWO_PI), (2.14,) * 6, (10.0,) * 6),
        controllers={
            'xarm6_traj_controller': Controller(
                'trajectory', 'xarm6_traj_controller/joint_trajectory', 150.0)},
        default_controller='xarm6_traj_controller',
        # xarm_api (xarm_driver.cpp) serves the action and drives the gripper to the goal
        # position at its own `xarm_gripper.speed`: max_effort is logged, not used.
        grippers=(Gripper('gripper', 'drive_joint', 0.0, 0.85,
                          action_server='xarm_gripper/gripper_action'),))


def franka(arm_id: str = 'fr3') -> RobotSpec:
    """FR3 (`fr3_jointN`), or Panda as `fer` / `panda` (franka_description)."""
    if arm_id == 'fr3':
        lower = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
        upper = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)
        velocity = (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
    elif arm_id in ('fer', 'panda'):
        lower = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
        upper = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
        velocity = (2.175,) * 4 + (2.61,) * 3
    else:
        raise ValueError(f"franka arm_id {arm_id!r} is not one of 'fr3', 'fer', 'panda'")
    names = tuple(f'{arm_id}_joint{i}' for i in range(1, 8))
    return RobotSpec(
        name=arm_id if arm_id != 'fr3' else 'fr3',
        joints=_arm(names, lower, upper, velocity, (7.5,) * 7),  # vla_ros default
        controllers={
            f'{arm_id}_arm_controller': Controller(
                'trajectory', f'{arm_id}_arm_controller/joint_trajectory', 1000.0),
            'forward_position_controller': Controller(
                'position_stream', 'forward_position_controller/commands', 1000.0)},
        default_controller=f'{arm_id}_arm_controller',
        # franka_gripper: a GripperCommand goal position is one finger's joint (the opening
        # is twice it); closing grasps with max_effort as the force. Franka Hand: 70 N
        # continuous grasping force.
        grippers=(Gripper('gripper', f'{arm_id}_finger_joint1', 0.04, 0.0,
                          action_server='franka_gripper/gripper_action', max_effort=70.0,
                          move_action='franka_gripper/move',
                          grasp_action='franka_gripper/grasp'),))


def ur(model: str = 'ur5e') -> RobotSpec:
    # Universal_Robots_ROS2_Description joint_limits.yaml (UR5 and UR5e are identical);
    # update rates from ur_robot_driver: 500 Hz (e-Series), 125 Hz (CB3).
    if model not in ('ur5', 'ur5e'):
        raise ValueError(f"UR model {model!r} is not one of 'ur5', 'ur5e'")
    names = ('shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint', 'wrist_1_joint',
             'wrist_2_joint', 'wrist_3_joint')
    rate = 500.0 if model == 'ur5e' else 125.0
    return RobotSpec(
        name=model,
        joints=_arm(names, (-TWO_PI, -TWO_PI, -PI, -TWO_PI, -TWO_PI, -TWO_PI),
                    (TWO_PI, TWO_PI, PI, TWO_PI, TWO_PI, TWO_PI), (PI,) * 6,
                    (5.0,) * 6),  # vla_ros default
        controllers={
            'scaled_joint_trajectory_controller': Controller(
                'trajectory', 'scaled_joint_trajectory_controller/joint_trajectory', rate),
            'joint_trajectory_controller': Controller(
                'trajectory', 'joint_trajectory_controller/joint_trajectory', rate),
            'forward_position_controller': Controller(
                'position_stream', 'forward_position_controller/commands', rate)},
        default_controller='scaled_joint_trajectory_controller',
        # Robotiq 2F-85 (ros2_robotiq_gripper, a GripperActionController on
        # left_knuckle_joint); its grip force range is 20-235 N.
        grippers=(Gripper('gripper', 'left_knuckle_joint', 0.0, 0.8,
                          action_server='robotiq_gripper_controller/gripper_cmd',
                          max_effort=235.0),),
        speed_scaling_topic='speed_scaling_state_broadcaster/speed_scaling',
        program_running_topic='io_and_status_controller/robot_program_running')


def agibot_g1() -> RobotSpec:
    # genie_sim G1_omnipicker URDF; the sim takes name+position on /joint_command.
    left = tuple(f'idx2{i}_arm_l_joint{i}' for i in range(1, 8))
    right = tuple(f'idx6{i}_arm_r_joint{i}' for i in range(1, 8))
    arm_hi = (3.14, 1.48, 3.10, 1.48, 3.10, 1.74, 3.10)
    arm_lo = (-3.14, -2.09, -3.10, -1.48, -3.10, -1.74, -3.10)
    r_lo = (-3.14, -1.48, -3.10, -1.48, -3.10, -1.74, -3.10)
    r_hi = (3.14, 2.09, 3.10, 1.48, 3.10, 1.74, 3.10)
    joints = (_arm(left, arm_lo, arm_hi, (3.14,) * 7, (6.0,) * 7)
              + _arm(right, r_lo, r_hi, (3.14,) * 7, (6.0,) * 7)
              + (JointLimit('idx41_gripper_l_outer_joint1', 0.0, 0.785, 1.0, 6.0),
                 JointLimit('idx81_gripper_r_outer_joint1', 0.0, 0.785, 1.0, 6.0),
                 JointLimit('idx01_body_joint1', 0.0, 0.55, 0.1, 0.5),
                 JointLimit('idx02_body_joint2', 0.0, PI / 2, 0.5, 2.0),
                 JointLimit('idx11_head_joint1', -PI / 2, PI / 2, 1.0, 4.0),
                 JointLimit('idx12_head_joint2', -0.349, 0.524, 1.0, 4.0)))
    return RobotSpec(
        name='agibot_g1', joints=joints,
        controllers={'joint_command': Controller('joint_state', 'joint_command', 30.0)},
        default_controller='joint_command',
        # The model's effector value is normalized: (1 - a) * limit (infer_post_process.py).
        grippers=(Gripper('left_gripper', 'idx41_gripper_l_outer_joint1', 0.785, 0.0),
                  Gripper('right_gripper', 'idx81_gripper_r_outer_joint1', 0.785, 0.0)))


ROBOTS = {
    'xarm6': xarm6,
    'fr3': lambda: franka('fr3'),
    'panda': lambda: franka('panda'),
    'fer': lambda: franka('fer'),
    'ur5': lambda: ur('ur5'),
    'ur5e': lambda: ur('ur5e'),
    'agibot_g1': agibot_g1,
}


def robot_spec(name: str) -> RobotSpec:
    if name not in ROBOTS:
        raise ValueError(f'unknown robot {name!r}; choose one of {sorted(ROBOTS)}')
    return ROBOTS[name]()
