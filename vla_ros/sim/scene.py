"""A tabletop scene for the simulated arms: kinematics from the URDFs shipped in pybullet,
coloured blocks on a table, a scene camera and a wrist camera, language tasks and a success
detector. No ROS here; vla_ros/ros/sim_nodes.py puts it behind the real controller topics.

The arm is kinematic (joint positions are set, not simulated as dynamics): the task family is
touching, which needs where the blocks are (vision) and which block is meant (language), not
contact physics. The tool tip passes through blocks rather than pushing them.

Rendering uses pybullet's CPU TinyRenderer. The shipped arm meshes cost ~14 ms a frame there,
so the cameras see the arm as capsules along its links (same kinematics, same places in the
image), which renders in about a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS = {'red': (0.85, 0.12, 0.1), 'green': (0.1, 0.65, 0.2), 'blue': (0.12, 0.25, 0.9)}
TEMPLATES = ('touch the {c} block', 'tap the {c} cube', 'reach the {c} block',
             'put the tool on the {c} block')
BLOCK_HALF = 0.025  # 5 cm cubes
SUCCESS_XY_M = 0.03
SUCCESS_Z_M = 0.03  # tip at most this far above the block's top face
WORKSPACE = ((0.24, 0.46), (-0.2, 0.2))  # x, y ranges of block centres (robot base at 0)
MIN_SEPARATION_M = 0.1
IK_TOLERANCE_M = 0.003


@dataclass(frozen=True)
class SceneRobot:
    urdf: str
    ee_link: str
    tool_m: float  # tip distance from the ee link along its z axis
    home: tuple[float, ...]
    radius: float = 0.035
    # joint noise (rad) on the executed steps of perturbed demonstrations: about 1 cm at the
    # tip either way; the Franka's longer chain turns the same joint noise into more tip motion
    # (at 0.02 rad its expert kept leaving the spot above the block: 84% success)
    dart_noise: float = 0.02
    # The robot's joints the scene's URDF moves, in its order (empty: the robot's first
    # len(home) commanded joints), and the gripper's action name.
    spec_joints: tuple[str, ...] = ()
    gripper: str = 'gripper'
    base_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    base_orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    workspace: tuple[tuple[float, float], tuple[float, float]] = WORKSPACE  # block centres
    # ... for the pick tasks, where it differs (None: `workspace`)
    pick_workspace: tuple[tuple[float, float], tuple[float, float]] | None = None


SCENE_ROBOTS = {
    'xarm6': SceneRobot('xarm/xarm6_robot.urdf', 'link6', 0.06,
                        (0.0, -0.527, -0.403, 0.0, 0.929, 0.0)),
    'franka': SceneRobot('franka_panda/panda.urdf', 'panda_hand', 0.1,
                         (0.0, -0.3, 0.0, -2.3, 0.0, 2.0, 0.785), radius=0.045,
                         dart_noise=0.01,
                         # within the FR3's limits (joint 4 <= -0.15 rad) the tool cannot
                         # point down closer than about 0.3 m in front of the base
                         pick_workspace=((0.30, 0.52), (-0.2, 0.2))),
}


def _described(name: str, **kw) -> SceneRobot:
    from vla_ros.sim.descriptions import ARM_DESCRIPTIONS

    d = ARM_DESCRIPTIONS[name]
    return SceneRobot(d['urdf'], d['ee_link'], d['tool_m'], tuple(d['home']),
                      base_position=tuple(d['base_position']),
                      base_orientation=tuple(d['base_orientation']),
                      workspace=tuple(map(tuple, d['workspace'])), **kw)


# Our own kinematic descriptions (vla_ros/sim/descriptions.py): UR5e with a Robotiq 2F-85,
# the AgiBot G1's right arm, which reaches only a strip of the table with its tool pointing
# down (its elbow bends at most 85 degrees).
SCENE_ROBOTS['ur5e'] = _described('ur5e')
SCENE_ROBOTS['agibot_g1'] = _described(
    'agibot_g1', radius=0.04, dart_noise=0.01, gripper='right_gripper',
    spec_joints=tuple(f'idx6{i}_arm_r_joint{i}' for i in range(1, 8)))
SCENE_OF = {'xarm6': 'xarm6', 'fr3': 'franka', 'panda': 'franka', 'fer': 'franka',
            'ur5e': 'ur5e', 'agibot_g1': 'agibot_g1'}


def scene_joint_names(robot: str) -> tuple[str, ...]:
    """The robot's joints the scene's URDF moves, in the URDF's order."""
    from vla_ros.adapters.robots import robot_spec

    cfg = SCENE_ROBOTS[SCENE_OF[robot]]
    return cfg.spec_joints or robot_spec(robot).joint_names[:len(cfg.home)]


def task_words() -> list[str]:
    words: list[str] = []
    for t in TEMPLATES:
        for c in COLORS:
            for w in t.format(c=c).split():
                if w not in words:
                    words.append(w)
    return words


@dataclass
class Episode:
    seed: int
    instruction: str
    target: str  # colour of the block to touch
    blocks: dict[str, np.ndarray] = field(default_factory=dict)  # colour -> centre (3,)

    def describe(self) -> dict:
        return {'seed': self.seed, 'instruction': self.instruction, 'target': self.target,
                'blocks': {c: [round(float(v), 4) for v in p] for c, p in self.blocks.items()}}


def sample_layout(rng: np.random.Generator, n: int, workspace, apart) -> np.ndarray:
    """n table positions (n, 2) in `workspace` ((x range), (y range)), drawn until
    `apart` accepts their (n, n) distance matrix (its diagonal is large). Refuses a workspace
    too small for the objects after 10000 draws."""
    for _ in range(10_000):
        xy = np.column_stack([rng.uniform(*workspace[0], n), rng.uniform(*workspace[1], n)])
        if apart(np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(n) * 10):
            return xy
    raise ValueError(f'no layout of {n} objects fits the workspace {workspace}')


def sample_episode(seed: int, target: str | None = None, workspace=WORKSPACE) -> Episode:
    """The layout and task of `seed`; `target` names the block instead of the seed's draw
    (same layout, another instruction: what teaches a model to listen)."""
    rng = np.random.default_rng(seed)
    xy = sample_layout(rng, 3, workspace, lambda d: d.min() >= MIN_SEPARATION_M)
    colors = list(COLORS)
    drawn = colors[int(rng.integers(3))]
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    if target is not None:
        if target not in COLORS:
            raise ValueError(f'unknown block {target!r}; one of {colors}')
        template = TEMPLATES[(TEMPLATES.index(template) + colors.index(target)) % len(TEMPLATES)]
    target = target or drawn
    blocks = {c: np.array([x, y, BLOCK_HALF]) for c, (x, y) in zip(colors, xy, strict=True)}
    return Episode(seed, template.format(c=target), target, blocks)


def _quat_z_to(d: np.ndarray) -> tuple[float, ...]:
    """Quaternion (x, y, z, w) turning +z onto direction d."""
    d = d / max(np.linalg.norm(d), 1e-9)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, d)
    s = np.linalg.norm(axis)
    c = float(np.dot(z, d))
    if s < 1e-9:
        return (0.0, 0.0, 0.0, 1.0) if c > 0 else (1.0, 0.0, 0.0, 0.0)
    axis = axis / s
    half = np.arctan2(s, c) / 2
    return (*(axis * np.sin(half)), float(np.cos(half)))


class TabletopScene:
    """One pybullet client (DIRECT) with the robot, a table and three blocks."""

    def __init__(self, robot: str = 'xarm6', image_size: tuple[int, int] = (96, 96)) -> None:
        import pybullet as p
        import pybullet_data

        if robot not in SCENE_OF:
            raise ValueError(f'no tabletop scene for robot {robot!r}; one of {sorted(SCENE_OF)}')
        self.p = p
        self.cfg = SCENE_ROBOTS[SCENE_OF[robot]]
        self.width, self.height = image_size
        # Two clients: the robot (kinematics only) and what the cameras render.
        self.kin = p.connect(p.DIRECT)
        self.client = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.kin)
        self.robot = p.loadURDF(self.cfg.urdf, self.cfg.base_position,
                                self.cfg.base_orientation, useFixedBase=True,
                                physicsClientId=self.kin)
        self.joints: list[int] = []
        self.lower, self.upper = [], []
        links = {}
        for i in range(p.getNumJoints(self.robot, physicsClientId=self.kin)):
            info = p.getJointInfo(self.robot, i, physicsClientId=self.kin)
            links[info[12].decode()] = i
            if info[2] == p.JOINT_REVOLUTE and len(self.joints) < len(self.cfg.home):
                self.joints.append(i)
                self.lower.append(info[8])
                self.upper.append(info[9])
        self.ee = links[self.cfg.ee_link]
        # The robot's own joint limits where they are tighter than the URDF's (FR3 against
        # the Panda URDF): IK never plans what the safety filter would refuse.
        from vla_ros.adapters.robots import robot_spec

        spec = robot_spec(robot)
        for k, name in enumerate(scene_joint_names(robot)):
            self.lower[k] = max(self.lower[k], spec.joint(name).lower)
            self.upper[k] = min(self.upper[k], spec.joint(name).upper)
        self.home = np.array(self.cfg.home)
        self.set_joints(self.home)
        self._chain = self._chain_links()
        self._capsules = self._make_capsules()
        self._make_world()
        self._proj = p.computeProjectionMatrixFOV(50, self.width / self.height, 0.02, 3.0)
        self._scene_view = p.computeViewMatrix((0.68, 0.0, 0.5), (0.3, 0.0, 0.0), (0, 0, 1))
        self.episode: Episode | None = None

    def _make_world(self) -> None:
        """The table and the blocks (shapes to render; no physics in the touch scene)."""
        p = self.p
        box = p.createVisualShape(p.GEOM_BOX, halfExtents=(0.5, 0.6, 0.01),
                                  rgbaColor=(0.72, 0.6, 0.45, 1), physicsClientId=self.client)
        p.createMultiBody(0, -1, box, (0.3, 0.0, -0.01), physicsClientId=self.client)
        self._blocks = {}
        for c, rgb in COLORS.items():
            shape = p.createVisualShape(p.GEOM_BOX, halfExtents=(BLOCK_HALF,) * 3,
                                        rgbaColor=(*rgb, 1), physicsClientId=self.client)
            self._blocks[c] = p.createMultiBody(0, -1, shape, (0, 0, -1),
                                                physicsClientId=self.client)

    # --- kinematics --------------------------------------------------------------------------

    def set_joints(self, q) -> None:
        for j, v in zip(self.joints, q, strict=True):
            self.p.resetJointState(self.robot, j, float(v), physicsClientId=self.kin)

    def _link_pose(self, link: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.p.getLinkState(self.robot, link, computeForwardKinematics=True,
                                physicsClientId=self.kin)
        rot = np.array(self.p.getMatrixFromQuaternion(s[5])).reshape(3, 3)
        return np.array(s[4]), rot

    def tip(self, q=None) -> np.ndarray:
        if q is not None:
            self.set_joints(q)
        pos, rot = self._link_pose(self.ee)
        return pos + rot[:, 2] * self.cfg.tool_m

    def ik(self, tip_target, seed: np.ndarray | None = None) -> np.ndarray:
        """Joint positions putting the tool tip at `tip_target`, pointing down; the solver starts
        from `seed` (home by default) and prefers the home posture, so nearby targets give
        nearby solutions."""
        p = self.p
        tgt = np.asarray(tip_target, float) + np.array([0.0, 0.0, self.cfg.tool_m])
        down = p.getQuaternionFromEuler((np.pi, 0.0, 0.0))
        self.set_joints(self.home if seed is None else seed)
        n = len(self.joints)
        ranges = [u - lo for lo, u in zip(self.lower, self.upper, strict=True)]

        def solve():
            q = None
            for _ in range(3):  # refine: pybullet's IK does one solve from the current state
                sol = p.calculateInverseKinematics(
                    self.robot, self.ee, tgt.tolist(), down, lowerLimits=self.lower,
                    upperLimits=self.upper, jointRanges=ranges, restPoses=list(self.home),
                    maxNumIterations=200, residualThreshold=1e-5, physicsClientId=self.kin)
                q = np.clip(np.array(sol[:n]), self.lower, self.upper)
                self.set_joints(q)
            return q, float(np.linalg.norm(self.tip(q) - tip_target))

        q, err = solve()
        # Near the workspace's edge the solve can stall short of the target; restarts from
        # nearby postures (seeded, so the result is deterministic) find it.
        rng = np.random.default_rng(0)
        start = q
        for _ in range(12):
            if err <= IK_TOLERANCE_M:
                break
            self.set_joints(np.clip(start + rng.normal(0, 0.3, n), self.lower, self.upper))
            cand, cerr = solve()
            if cerr < err:
                q, err = cand, cerr
        self.set_joints(q)
        return q

    def _chain_links(self) -> list[int]:
        """Links whose frame origins trace the arm, base to ee, without repeats."""
        chain, last = [-1], np.zeros(3)
        for link in list(range(self.ee)) + [self.ee]:
            pos, _ = self._link_pose(link)
            if np.linalg.norm(pos - last) > 0.02:
                chain.append(link)
                last = pos
        return chain

    def _points(self) -> list[np.ndarray]:
        pts = []
        for link in self._chain:
            if link < 0:
                pts.append(np.array(self.p.getBasePositionAndOrientation(
                    self.robot, physicsClientId=self.kin)[0]))
            else:
                pts.append(self._link_pose(link)[0])
        pts.append(self.tip())
        return pts

    def _make_capsules(self) -> list[int]:
        p, caps = self.p, []
        pts = self._points()
        for k, (a, b) in enumerate(zip(pts[:-1], pts[1:], strict=True)):
            length = float(np.linalg.norm(b - a))
            radius = self.cfg.radius * (0.55 if k == len(pts) - 2 else 1.0)
            grey = (0.35, 0.35, 0.38, 1) if k < len(pts) - 2 else (0.9, 0.9, 0.9, 1)
            shape = p.createVisualShape(p.GEOM_CAPSULE, radius=radius, length=length,
                                        rgbaColor=grey, physicsClientId=self.client)
            caps.append(p.createMultiBody(0, -1, shape, (0, 0, -1),
                                          physicsClientId=self.client))
        return caps

    def _place_capsules(self) -> None:
        pts = self._points()
        for body, a, b in zip(self._capsules, pts[:-1], pts[1:], strict=True):
            self.p.resetBasePositionAndOrientation(body, ((a + b) / 2).tolist(),
                                                   _quat_z_to(b - a),
                                                   physicsClientId=self.client)

    # --- episodes ----------------------------------------------------------------------------

    def reset(self, seed: int, target: str | None = None) -> Episode:
        self.episode = sample_episode(seed, target, self.cfg.workspace)
        for c, body in self._blocks.items():
            self.p.resetBasePositionAndOrientation(body, self.episode.blocks[c].tolist(),
                                                   (0, 0, 0, 1), physicsClientId=self.client)
        self.set_joints(self.home)
        return self.episode

    def target_top(self, color: str | None = None) -> np.ndarray:
        ep = self._require_episode()
        return ep.blocks[color or ep.target] + np.array([0.0, 0.0, BLOCK_HALF])

    def touching(self, q) -> str:
        """The colour of the block the tip is on, or ''."""
        ep = self._require_episode()
        tip = self.tip(q)
        for c, centre in ep.blocks.items():
            top = centre[2] + BLOCK_HALF
            if np.linalg.norm(tip[:2] - centre[:2]) <= SUCCESS_XY_M and \
                    tip[2] - top <= SUCCESS_Z_M:
                return c
        return ''

    def success(self, q) -> bool:
        return self.touching(q) == self._require_episode().target

    def _require_episode(self) -> Episode:
        if self.episode is None:
            raise RuntimeError('no episode: call reset(seed) first')
        return self.episode

    # --- cameras -----------------------------------------------------------------------------

    def render(self, q, cameras=('scene', 'wrist')) -> dict[str, np.ndarray]:
        """RGB uint8 (H, W, 3) per camera with the arm at joint positions q."""
        p = self.p
        self.set_joints(q)
        self._place_capsules()
        out = {}
        for cam in cameras:
            if cam == 'scene':
                view = self._scene_view
            elif cam == 'wrist':
                pos, rot = self._link_pose(self.ee)
                eye = pos + rot[:, 2] * (self.cfg.tool_m * 0.5) - rot[:, 0] * 0.06
                view = p.computeViewMatrix(eye.tolist(), (eye + rot[:, 2]).tolist(),
                                           rot[:, 0].tolist())
            else:
                raise ValueError(f'unknown camera {cam!r}: scene or wrist')
            img = p.getCameraImage(self.width, self.height, view, self._proj,
                                   renderer=p.ER_TINY_RENDERER, shadow=0,
                                   physicsClientId=self.client)[2]
            out[cam] = np.ascontiguousarray(np.asarray(img, np.uint8).reshape(
                self.height, self.width, 4)[:, :, :3])
        return out

    def close(self) -> None:
        for c in (self.client, self.kin):
            try:
                self.p.disconnect(physicsClientId=c)
            except Exception:
                pass
