"""The UR5e and AgiBot G1 kinematic URDFs (vla_ros/sim/descriptions.py): joints and limits as the
RobotSpecs, forward kinematics as the published parameters, and pybullet IK (as the tabletop
scene runs it) reaching each arm's workspace with the tool pointing down."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

try:
    import pybullet as p
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip('pybullet is not importable', allow_module_level=True)

from vla_ros.adapters.robots import robot_spec
from vla_ros.sim.descriptions import (
    ARM_DESCRIPTIONS,
    G1_SHOULDER,
    G1_SHOULDER_IN_BASE,
    ArmDescription,
)

HEIGHTS = (0.03, 0.08, 0.2)
G1_ARM = tuple(f'idx6{i}_arm_r_joint{i}' for i in range(1, 8))


class Arm:
    def __init__(self, desc: ArmDescription) -> None:
        self.desc = desc
        self.client = p.connect(p.DIRECT)
        self.body = p.loadURDF(desc['urdf'], desc['base_position'], desc['base_orientation'],
                               useFixedBase=True, physicsClientId=self.client)
        self.joints: list[int] = []
        self.names: list[str] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.velocity: list[float] = []
        self.links: dict[str, int] = {}
        for i in range(p.getNumJoints(self.body, physicsClientId=self.client)):
            info = p.getJointInfo(self.body, i, physicsClientId=self.client)
            self.links[info[12].decode()] = i
            if info[2] == p.JOINT_REVOLUTE:
                self.joints.append(i)
                self.names.append(info[1].decode())
                self.lower.append(info[8])
                self.upper.append(info[9])
                self.velocity.append(info[11])
        self.ee = self.links[desc['ee_link']]
        self.home = np.array(desc['home'])

    def set(self, q) -> None:
        for j, v in zip(self.joints, q, strict=True):
            p.resetJointState(self.body, j, float(v), physicsClientId=self.client)

    def pose(self, link: str | int) -> np.ndarray:
        index = self.links[link] if isinstance(link, str) else link
        s = p.getLinkState(self.body, index, computeForwardKinematics=True,
                           physicsClientId=self.client)
        t = np.eye(4)
        t[:3, :3] = np.array(p.getMatrixFromQuaternion(s[5])).reshape(3, 3)
        t[:3, 3] = s[4]
        return t

    def tip(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.pose(self.ee)
        return t[:3, 3] + t[:3, 2] * self.desc['tool_m'], t[:3, :3]

    def ik(self, tip) -> np.ndarray:
        """As TabletopScene.ik: three solves from home toward the downward tool, home as the
        rest pose."""
        tgt = np.asarray(tip, float) + np.array([0.0, 0.0, self.desc['tool_m']])
        down = p.getQuaternionFromEuler((math.pi, 0.0, 0.0))
        ranges = [u - lo for lo, u in zip(self.lower, self.upper, strict=True)]
        self.set(self.home)
        q = self.home
        for _ in range(3):
            q = np.array(p.calculateInverseKinematics(
                self.body, self.ee, tgt.tolist(), down, lowerLimits=self.lower,
                upperLimits=self.upper, jointRanges=ranges, restPoses=self.home.tolist(),
                maxNumIterations=200, residualThreshold=1e-5,
                physicsClientId=self.client)[:len(self.joints)])
            self.set(np.clip(q, self.lower, self.upper))
        return q

    def close(self) -> None:
        p.disconnect(physicsClientId=self.client)


@pytest.fixture(scope='module', params=sorted(ARM_DESCRIPTIONS))
def arm(request):
    a = Arm(ARM_DESCRIPTIONS[request.param])
    a.name = request.param
    yield a
    a.close()


def _rpy(r: float, pitch: float, y: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (math.cos(r), math.sin(r), math.cos(pitch), math.sin(pitch),
                              math.cos(y), math.sin(y))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def _tf(xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0)) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = _rpy(*rpy)
    t[:3, 3] = xyz
    return t


def _base(desc: ArmDescription) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = np.array(p.getMatrixFromQuaternion(desc['base_orientation'])).reshape(3, 3)
    t[:3, 3] = desc['base_position']
    return t


def _ur5e_dh(q) -> np.ndarray:
    """tool0 in the UR 'base' frame from the UR5e DH parameters (Universal Robots)."""
    d = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
    a = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
    alpha = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)
    t = np.eye(4)
    for th, di, ai, al in zip(q, d, a, alpha, strict=True):
        ct, st, ca, sa = math.cos(th), math.sin(th), math.cos(al), math.sin(al)
        t = t @ np.array([[ct, -st * ca, st * sa, ai * ct], [st, ct * ca, -ct * sa, ai * st],
                          [0, sa, ca, di], [0, 0, 0, 1]])
    return t


# genie_sim G1_omnipicker.urdf: (xyz, rpy) of the body joints at 0 and of the right arm joints
H, PI = math.pi / 2, math.pi
G1_BODY = (((0, 0, 0.6485), (0, 0, 0)), ((0.131, 0, 0), (-H, 0, 0)), ((0, -0.305, 0), (H, 0, 0)),
           ((0, -0.025, 0), (-H, 0, PI)))
G1_JOINTS = (((0, 0, 0.188), (0, 0, 0)), ((0, 0, 0), (-H, 0, -H)), ((0, -0.305, 0), (-H, -H, PI)),
             ((0, 0, 0), (-H, 0, PI)), ((0, -0.1975, 0), (-H, 0, -PI)), ((0, 0, 0), (-H, 0, 0)),
             ((0, -0.1805, 0), (H, 0, 0)))


def _g1_chain(q) -> tuple[np.ndarray, np.ndarray]:
    """gripper_r_base_link and gripper_r_center_link in base_link, joints about their z."""
    t = np.eye(4)
    for xyz, rpy in G1_BODY:
        t = t @ _tf(xyz, rpy)
    for (xyz, rpy), qi in zip(G1_JOINTS, q, strict=True):
        t = t @ _tf(xyz, rpy) @ _tf(rpy=(0, 0, qi))
    ee = t @ _tf(rpy=(0, 0, -H))
    return ee, ee @ _tf((0, 0, 0.14308), (0, 0, -H))


def _configs(n: int, lower, upper) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.zeros(len(lower))] + [rng.uniform(lower, upper) for _ in range(n)]


def test_joints_and_limits_are_the_robot_specs(arm):
    spec = robot_spec(arm.name)
    names = spec.joint_names if arm.name == 'ur5e' else G1_ARM
    assert tuple(arm.names) == names
    for name, lo, hi, vel in zip(arm.names, arm.lower, arm.upper, arm.velocity, strict=True):
        j = spec.joint(name)
        assert (lo, hi, vel) == pytest.approx((j.lower, j.upper, j.velocity), abs=1e-9), name
    assert len(arm.home) == len(arm.joints)
    assert Path(arm.desc['urdf']).is_file()


def test_ur5e_forward_kinematics_is_the_dh_model():
    arm = Arm(ARM_DESCRIPTIONS['ur5e'])
    try:
        # base_link is the UR 'base' frame turned by pi about z
        base = _base(arm.desc) @ _tf(rpy=(0, 0, math.pi))
        for q in _configs(5, arm.lower, arm.upper):
            arm.set(q)
            np.testing.assert_allclose(arm.pose('tool0'), base @ _ur5e_dh(q), atol=1e-6)
        arm.set(np.zeros(6))
        np.testing.assert_allclose(arm.pose('tool0')[:3, 3], (0.8172, 0.2329, 0.0628), atol=1e-6)
    finally:
        arm.close()


def test_g1_forward_kinematics_is_the_genie_sim_chain():
    arm = Arm(ARM_DESCRIPTIONS['agibot_g1'])
    try:
        base = _base(arm.desc)
        for q in _configs(5, arm.lower, arm.upper):
            arm.set(q)
            ee, centre = _g1_chain(q)
            np.testing.assert_allclose(arm.pose('gripper_r_base_link'), base @ ee, atol=1e-6)
            np.testing.assert_allclose(arm.pose('gripper_r_center_link'), base @ centre,
                                       atol=1e-6)
        # the shoulder (joints 1 and 2 meet there) is where the description puts it
        arm.set(np.zeros(7))
        np.testing.assert_allclose(arm.pose('arm_r_link2')[:3, 3], G1_SHOULDER, atol=1e-6)
        shoulder = np.eye(4)
        for xyz, rpy in (*G1_BODY, G1_JOINTS[0]):
            shoulder = shoulder @ _tf(xyz, rpy)
        np.testing.assert_allclose(shoulder[:3, 3], G1_SHOULDER_IN_BASE, atol=1e-9)
        # tool_m is the omnipicker centre link along the ee's +z
        arm.set(arm.home)
        ee, centre = arm.pose('gripper_r_base_link'), arm.pose('gripper_r_center_link')
        np.testing.assert_allclose(centre[:3, 3], arm.tip()[0], atol=1e-9)
        assert np.linalg.norm(centre[:3, 3] - ee[:3, 3]) == pytest.approx(arm.desc['tool_m'])
    finally:
        arm.close()


def test_home_points_the_tool_down_above_the_table(arm):
    arm.set(arm.home)
    tip, rot = arm.tip()
    assert 0.25 <= tip[2] <= 0.30
    assert abs(tip[0] - 0.35) < 0.02 and abs(tip[1]) < 0.01
    assert rot[:, 2] @ (0, 0, -1) > math.cos(0.01)
    assert np.all(arm.home >= arm.lower) and np.all(arm.home <= arm.upper)


def test_ik_reaches_the_workspace_pointing_down(arm):
    (x0, x1), (y0, y1) = arm.desc['workspace']
    down = _rpy(math.pi, 0.0, 0.0)
    worst_m, worst_rad = 0.0, 0.0
    for x in np.linspace(x0, x1, 5):
        for y in np.linspace(y0, y1, 5):
            for z in HEIGHTS:
                q = arm.ik((x, y, z))
                assert np.all(q >= np.array(arm.lower) - 1e-9), (x, y, z, q)
                assert np.all(q <= np.array(arm.upper) + 1e-9), (x, y, z, q)
                tip, rot = arm.tip()
                worst_m = max(worst_m, float(np.linalg.norm(tip - (x, y, z))))
                cos = (np.trace(down.T @ rot) - 1) / 2
                worst_rad = max(worst_rad, math.acos(min(max(cos, -1.0), 1.0)))
    assert worst_m < 0.005 and worst_rad < 0.05, (arm.name, worst_m, worst_rad)
