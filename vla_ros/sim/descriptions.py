"""Kinematic descriptions of the tabletop arms that pybullet_data does not ship: UR5e and the
AgiBot G1's right arm.

The URDFs in urdf/ hold kinematics only: links, joint origins, axes and limits, with a small
placeholder inertia (0.1 kg, 1e-3 kg m^2) per link so pybullet loads them; no meshes, no
collision geometry, no dynamics. Their numbers come from:

- urdf/ur5e.urdf: UniversalRobots/Universal_Robots_ROS2_Description, urdf/ur_macro.xacro
  (the chain base_link -> base_link_inertia -> ... -> wrist_3_link -> flange -> tool0, commit
  352a35c19d992973db85b1289ee1747d8ebde148) with config/ur5e/default_kinematics.yaml (joint
  origins: d1 0.1625, a2 -0.425, a3 -0.3922, d4 0.1333, d5 0.0997, d6 0.0996; commit
  2fdeae0cae7bc919c679ba22cd38c6f6b559bbca) and config/ur5e/joint_limits.yaml (efforts).
  Position and velocity limits are vla_ros.adapters.robots.ur(): +-2 pi, elbow +-pi, pi rad/s.
- urdf/agibot_g1_right_arm.urdf: AgibotTech/genie_sim,
  source/geniesim_benchmark/src/geniesim_benchmark/app/robot_cfg/G1_omnipicker/G1_omnipicker.urdf
  (commit 31cf127842dd60cfa0f40a83f1cf698ef9d2ac37): base_link, the lift idx01_body_joint1 and
  the waist idx02_body_joint2 (both fixed here at 0), arm_base_link, arm_r_base_link, the right
  arm idx61_arm_r_joint1 ... idx67_arm_r_joint7, arm_r_end_link, gripper_r_base_link (where the
  omnipicker mounts, idx91_ee_r_joint) and gripper_r_center_link (idx92_gripper_r_center_joint,
  0.14308 m along +z: genie_sim's end_effector_name and cuRobo ee_link for the right arm).
  Limits as there and as vla_ros.adapters.robots.agibot_g1().

In both, the end-effector link's +z is the approach direction (toward the fingertips), so a
tool pointing down is the orientation euler (pi, 0, 0) and the tip is
ee_origin + R[:, 2] * tool_m.

Placement (world: table top at z = 0, block centres over x 0.24..0.46, y -0.2..0.2):

- UR5e: base at the origin, base_link x forward. Tool: Robotiq 2F-85 on the UR adapter, tip
  about 0.15 m from tool0 (ros2_robotiq_gripper robotiq_description: adapter 0.011 m, base to
  fingertip joint 0.098 m with the fingers open, plus the fingertip pad). Reaches the whole
  block workspace.
- G1: upright, facing +x, standing behind the table. The right shoulder (joints 1 and 2, which
  intersect) is put at (-0.09, 0.0, 0.40): 0.40 m above the table and centred on y = 0, so
  base_link is at shoulder - (0.131, -0.213, 0.9535), 0.5535 m below the table top. Tool:
  gripper_r_center_link, 0.14308 m from gripper_r_base_link. The G1 arm cannot cover the whole
  block workspace with the tool pointing down: joint 4 (the elbow, +-1.48 rad) bends at most
  85 degrees, which keeps the wrist centre 0.378..0.5025 m from the shoulder, and with the tool
  down the wrist centre sits 0.324 m above the tip, so the tips a fixed shoulder reaches over
  heights 0.03..0.2 m form a band about 0.1 m deep around it. `workspace` is the block-centre
  region it does reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

URDF_DIR = Path(__file__).parent / 'urdf'


class ArmDescription(TypedDict):
    urdf: str  # absolute path of the URDF
    ee_link: str  # the link whose +z is the approach direction
    tool_m: float  # fingertip centre along the ee link's +z (m)
    home: tuple[float, ...]  # revolute joints in URDF order = the RobotSpec's arm joints
    base_position: tuple[float, float, float]  # world (m)
    base_orientation: tuple[float, float, float, float]  # world quaternion (x, y, z, w)
    workspace: tuple[tuple[float, float], tuple[float, float]]  # reachable block centres x, y


G1_SHOULDER = (-0.09, 0.0, 0.40)  # world position of the right shoulder (joints 1, 2)
G1_SHOULDER_IN_BASE = (0.131, -0.213, 0.9535)  # the same point in base_link, joints at 0

ARM_DESCRIPTIONS: dict[str, ArmDescription] = {
    'ur5e': {
        'urdf': str(URDF_DIR / 'ur5e.urdf'),
        'ee_link': 'tool0',
        'tool_m': 0.15,
        # tip at (0.35, 0, 0.28), pointing down, tool0 x along world x (elbow up)
        'home': (-0.391, -1.976, 2.036, -1.631, -1.571, -1.962),
        'base_position': (0.0, 0.0, 0.0),
        'base_orientation': (0.0, 0.0, 0.0, 1.0),
        'workspace': ((0.24, 0.46), (-0.2, 0.2)),
    },
    'agibot_g1': {
        'urdf': str(URDF_DIR / 'agibot_g1_right_arm.urdf'),
        'ee_link': 'gripper_r_base_link',
        'tool_m': 0.14308,
        # tip at (0.34, 0, 0.27), pointing down, ee x along world x
        'home': (-0.871, 1.521, 0.175, 0.723, -0.166, -1.558, 1.648),
        'base_position': (-0.221, 0.213, -0.5535),  # G1_SHOULDER - G1_SHOULDER_IN_BASE
        'base_orientation': (0.0, 0.0, 0.0, 1.0),
        'workspace': ((0.29, 0.36), (-0.15, 0.15)),
    },
}
