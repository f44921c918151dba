"""The tabletop with contact physics, for pick-and-place: the arm's kinematics as in the touch
scene (vla_ros/sim/scene.py), plus a parallel-jaw gripper, three dynamic blocks and a bowl in
one pybullet world with gravity, friction and contacts.

- The arm stays kinematic (its joints are where the position controller put them); the gripper
  is a rigid body (palm and two prismatic fingers) held to the arm's tool pose by a fixed
  constraint, so what it touches pushes back through physics, not through teleporting.
- The fingers are position-controlled at the robot gripper's stroke speed with a finite force:
  closed on a block they stall at its width, and the block is held by friction alone.
- Blocks fall, rest on the table, the bowl and each other; a block let go above the bowl drops
  into it.
- Every robot's gripper has the same jaw geometry here (85 mm stroke, the Robotiq 2F-85's); the
  command is the fraction closed, mapped from each robot's gripper joint.

Tasks: 'pick' ("pick up the red block": lifted 5 cm and held) and 'pick_place' ("put the red
block in the bowl", "put the red block on the blue block": there, released, at rest). Cameras
as in the touch scene, and `view()`, a larger third-person render for GIFs a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_ros.sim.scene import BLOCK_HALF, COLORS, WORKSPACE, TabletopScene, sample_layout

PICK_TASKS = ('pick', 'pick_place')
PICK_TEMPLATES = ('pick up the {c} block', 'lift the {c} block')
BOWL_TEMPLATES = ('put the {c} block in the bowl',)
STACK_TEMPLATES = ('put the {c} block on the {d} block',)
BOWL_INNER_M = 0.06  # inner radius
BOWL_WALL_M = 0.035  # wall height
BOWL_FLOOR_M = 0.005
STROKE_M = 0.085  # finger opening, fully open
FINGER_HALF = (0.007, 0.011, 0.022)  # thickness (closing axis), width, length (approach axis)
FINGER_FORCE_N = 40.0
LIFTED_M = 0.05  # a picked block's bottom at least this far above the table
AT_REST_M_S = 0.05
MIN_SEPARATION_M = 0.11  # between block centres, and block to bowl centre (plus the bowl)
PHYSICS_HZ = 240.0


def pick_words() -> list[str]:
    words: list[str] = []
    for t in PICK_TEMPLATES + BOWL_TEMPLATES + STACK_TEMPLATES:
        for c in COLORS:
            for w in t.format(c=c, d=c).split():
                if w not in words:
                    words.append(w)
    return words


@dataclass
class PickEpisode:
    seed: int
    task: str  # 'pick' or 'pick_place'
    instruction: str
    target: str  # the block to move
    destination: str  # 'bowl', a colour, or '' (pick)
    blocks: dict[str, np.ndarray] = field(default_factory=dict)  # colour -> start centre (3,)
    bowl: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def describe(self) -> dict:
        return {'seed': self.seed, 'task': self.task, 'instruction': self.instruction,
                'target': self.target, 'destination': self.destination,
                'blocks': {c: [round(float(v), 4) for v in p] for c, p in self.blocks.items()},
                'bowl': [round(float(v), 4) for v in self.bowl]}


def sample_pick_episode(seed: int, task: str = 'pick_place', target: str | None = None,
                        destination: str | None = None, workspace=WORKSPACE) -> PickEpisode:
    """The layout (three blocks and the bowl) and task of `seed`; `target` / `destination`
    override the seed's draw on the same layout."""
    if task not in PICK_TASKS:
        raise ValueError(f'unknown task {task!r}; one of {PICK_TASKS}')
    rng = np.random.default_rng(seed)

    def apart(d: np.ndarray) -> bool:  # the last object is the bowl: its size counts too
        d = d.copy()
        d[-1, :-1] -= BOWL_INNER_M
        d[:-1, -1] -= BOWL_INNER_M
        return bool(d.min() >= MIN_SEPARATION_M)

    if task == 'pick':  # no bowl: three blocks (a bowl under the table, out of the way)
        xy = np.vstack([sample_layout(rng, len(COLORS), workspace,
                                      lambda d: bool(d.min() >= MIN_SEPARATION_M)),
                        [0.3, 0.0]])
    else:
        xy = sample_layout(rng, len(COLORS) + 1, workspace, apart)
    colors = list(COLORS)
    drawn = colors[int(rng.integers(len(colors)))]
    others = [c for c in colors if c != drawn]
    dest_draw = ['bowl', *others][int(rng.integers(len(colors)))]
    target = target or drawn
    if target not in COLORS:
        raise ValueError(f'unknown block {target!r}; one of {colors}')
    if task == 'pick':
        destination = ''
        instruction = PICK_TEMPLATES[int(rng.integers(len(PICK_TEMPLATES)))].format(c=target)
    else:
        destination = destination or (dest_draw if dest_draw != target else 'bowl')
        if destination != 'bowl' and (destination not in COLORS or destination == target):
            raise ValueError(f'destination {destination!r}: the bowl or another block than '
                             f'{target!r}')
        instruction = (BOWL_TEMPLATES[0].format(c=target) if destination == 'bowl'
                       else STACK_TEMPLATES[0].format(c=target, d=destination))
    blocks = {c: np.array([x, y, BLOCK_HALF]) for c, (x, y) in zip(colors, xy[:-1], strict=True)}
    return PickEpisode(seed, task, instruction, target, destination, blocks,
                       np.array([xy[-1, 0], xy[-1, 1], 0.0 if task != 'pick' else -1.0]))


class PickPlaceScene(TabletopScene):
    """`step(q, closure, dt)` advances the world; `success()` checks the episode's task."""

    def __init__(self, robot: str = 'xarm6', image_size: tuple[int, int] = (96, 96),
                 task: str = 'pick_place', stroke_s: float = 0.5) -> None:
        if task not in PICK_TASKS:
            raise ValueError(f'unknown task {task!r}; one of {PICK_TASKS}')
        self.task = task
        self.stroke_s = stroke_s
        super().__init__(robot, image_size)

    # --- world -------------------------------------------------------------------------------

    def _make_world(self) -> None:
        p, c = self.p, self.client
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setPhysicsEngineParameter(fixedTimeStep=1 / PHYSICS_HZ, numSolverIterations=50,
                                    physicsClientId=c)
        table = p.createCollisionShape(p.GEOM_BOX, halfExtents=(0.5, 0.6, 0.01),
                                       physicsClientId=c)
        table_v = p.createVisualShape(p.GEOM_BOX, halfExtents=(0.5, 0.6, 0.01),
                                      rgbaColor=(0.72, 0.6, 0.45, 1), physicsClientId=c)
        self.table = p.createMultiBody(0, table, table_v, (0.3, 0.0, -0.01), physicsClientId=c)
        self._blocks = {}
        for name, rgb in COLORS.items():
            col = p.createCollisionShape(p.GEOM_BOX, halfExtents=(BLOCK_HALF,) * 3,
                                         physicsClientId=c)
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=(BLOCK_HALF,) * 3,
                                      rgbaColor=(*rgb, 1), physicsClientId=c)
            body = p.createMultiBody(0.05, col, vis, (0, 0, -1), physicsClientId=c)
            p.changeDynamics(body, -1, lateralFriction=1.0, spinningFriction=0.1,
                             physicsClientId=c)
            self._blocks[name] = body
        self.bowl = self._make_bowl()
        self.gripper = self._make_gripper()

    def _make_bowl(self) -> int:
        """A floor disc and a ring of wall segments (fixed links), static."""
        p, c = self.p, self.client
        n, wall = 16, 0.006
        r_out = BOWL_INNER_M + wall
        colour = (0.93, 0.9, 0.8, 1)
        floor = p.createCollisionShape(p.GEOM_CYLINDER, radius=r_out, height=BOWL_FLOOR_M,
                                       physicsClientId=c)
        floor_v = p.createVisualShape(p.GEOM_CYLINDER, radius=r_out, length=BOWL_FLOOR_M,
                                      rgbaColor=colour, physicsClientId=c)
        half = (wall / 2, r_out * np.tan(np.pi / n) + 0.001, BOWL_WALL_M / 2)
        wcol = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=c)
        wvis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=colour,
                                   physicsClientId=c)
        angles = 2 * np.pi * np.arange(n) / n
        r = BOWL_INNER_M + wall / 2
        return p.createMultiBody(
            0, floor, floor_v, (0, 0, -1), linkMasses=[0] * n,
            linkCollisionShapeIndices=[wcol] * n, linkVisualShapeIndices=[wvis] * n,
            linkPositions=[(r * np.cos(a), r * np.sin(a), BOWL_WALL_M / 2 - BOWL_FLOOR_M / 2)
                           for a in angles],
            linkOrientations=[p.getQuaternionFromEuler((0, 0, a)) for a in angles],
            linkInertialFramePositions=[(0, 0, 0)] * n,
            linkInertialFrameOrientations=[(0, 0, 0, 1)] * n, linkParentIndices=[0] * n,
            linkJointTypes=[p.JOINT_FIXED] * n, linkJointAxis=[(0, 0, 1)] * n,
            physicsClientId=c)

    def _make_gripper(self) -> int:
        """Palm and two fingers; the palm frame is the ee link's (+z toward the fingertips),
        the fingers close along its x axis, their centres on the tool tip."""
        p, c = self.p, self.client
        palm_half = (STROKE_M / 2 + 2 * FINGER_HALF[0], 0.018, 0.012)
        palm_z = self.cfg.tool_m - FINGER_HALF[2] - palm_half[2]
        palm = p.createCollisionShape(p.GEOM_BOX, halfExtents=palm_half,
                                      collisionFramePosition=(0, 0, palm_z), physicsClientId=c)
        palm_v = p.createVisualShape(p.GEOM_BOX, halfExtents=palm_half,
                                     visualFramePosition=(0, 0, palm_z),
                                     rgbaColor=(0.25, 0.25, 0.28, 1), physicsClientId=c)
        # The gripper's body between the flange and the palm, drawn in `view()` only (the
        # model cameras see the scene the shipped models were trained on).
        self._body_half = max((palm_z - palm_half[2]) / 2, 0.001)
        body_v = p.createVisualShape(p.GEOM_BOX, halfExtents=(0.03, 0.03, self._body_half),
                                     rgbaColor=(0.3, 0.3, 0.33, 1), physicsClientId=c)
        self._body = p.createMultiBody(0, -1, body_v, (0, 0, -5), physicsClientId=c)
        fcol = p.createCollisionShape(p.GEOM_BOX, halfExtents=FINGER_HALF, physicsClientId=c)
        fvis = p.createVisualShape(p.GEOM_BOX, halfExtents=FINGER_HALF,
                                   rgbaColor=(0.85, 0.85, 0.88, 1), physicsClientId=c)
        fx = FINGER_HALF[0]
        body = p.createMultiBody(
            0.3, palm, palm_v, (0, 0, 1), linkMasses=[0.05, 0.05],
            linkCollisionShapeIndices=[fcol, fcol], linkVisualShapeIndices=[fvis, fvis],
            linkPositions=[(fx, 0, self.cfg.tool_m), (-fx, 0, self.cfg.tool_m)],
            linkOrientations=[(0, 0, 0, 1)] * 2, linkInertialFramePositions=[(0, 0, 0)] * 2,
            linkInertialFrameOrientations=[(0, 0, 0, 1)] * 2, linkParentIndices=[0, 0],
            linkJointTypes=[p.JOINT_PRISMATIC] * 2, linkJointAxis=[(1, 0, 0), (-1, 0, 0)],
            physicsClientId=c)
        for link in (0, 1):
            p.changeDynamics(body, link, lateralFriction=1.5, spinningFriction=0.1,
                             jointLowerLimit=0.0, jointUpperLimit=STROKE_M / 2,
                             physicsClientId=c)
        # The fingers are coupled as in a real parallel gripper: they close symmetrically,
        # so a block between them is centred rather than pushed aside.
        gear = p.createConstraint(body, 0, body, 1, p.JOINT_GEAR, (1, 0, 0), (0, 0, 0),
                                  (0, 0, 0), physicsClientId=c)
        p.changeConstraint(gear, gearRatio=-1, erp=0.8, maxForce=1000, physicsClientId=c)
        self._hold = p.createConstraint(body, -1, -1, -1, p.JOINT_FIXED, (0, 0, 0), (0, 0, 0),
                                        (0, 0, 1), physicsClientId=c)
        return body

    def _points(self) -> list[np.ndarray]:
        return super()._points()[:-1]  # the capsules end at the ee link: the fingers are bodies

    # --- episodes ----------------------------------------------------------------------------

    def reset(self, seed: int, target: str | None = None,  # type: ignore[override]
              destination: str | None = None) -> PickEpisode:
        p, c = self.p, self.client
        self.episode = ep = sample_pick_episode(
            seed, self.task, target, destination, self.cfg.pick_workspace or self.cfg.workspace)
        for name, body in self._blocks.items():
            p.resetBasePositionAndOrientation(body, ep.blocks[name].tolist(), (0, 0, 0, 1),
                                              physicsClientId=c)
            p.resetBaseVelocity(body, (0, 0, 0), (0, 0, 0), physicsClientId=c)
        bowl_at = (*ep.bowl[:2], ep.bowl[2] + BOWL_FLOOR_M / 2)
        p.resetBasePositionAndOrientation(self.bowl, bowl_at, (0, 0, 0, 1), physicsClientId=c)
        self.q = self.home.copy()
        self.closure_target = 0.0
        for link in (0, 1):
            p.resetJointState(self.gripper, link, STROKE_M / 2, 0.0, physicsClientId=c)
        self._pose = self._ee_pose(self.q)
        p.resetBasePositionAndOrientation(self.gripper, *self._pose, physicsClientId=c)
        p.resetBaseVelocity(self.gripper, (0, 0, 0), (0, 0, 0), physicsClientId=c)
        self._drive_fingers()
        self.set_joints(self.q)
        return ep

    def block(self, color: str) -> tuple[np.ndarray, np.ndarray]:
        """A block's centre and linear velocity now."""
        p, c = self.p, self.client
        pos = p.getBasePositionAndOrientation(self._blocks[color], physicsClientId=c)[0]
        vel = p.getBaseVelocity(self._blocks[color], physicsClientId=c)[0]
        return np.array(pos), np.array(vel)

    def target_top(self, color: str | None = None) -> np.ndarray:
        ep = self._require_episode()
        return self.block(color or ep.target)[0] + np.array([0.0, 0.0, BLOCK_HALF])

    # --- stepping ----------------------------------------------------------------------------

    def _ee_pose(self, q) -> tuple[tuple, tuple]:
        self.set_joints(q)
        s = self.p.getLinkState(self.robot, self.ee, computeForwardKinematics=True,
                                physicsClientId=self.kin)
        return tuple(s[4]), tuple(s[5])

    def _drive_fingers(self) -> None:
        s = (1.0 - float(np.clip(self.closure_target, 0.0, 1.0))) * STROKE_M / 2
        speed = STROKE_M / 2 / self.stroke_s
        for link in (0, 1):
            self.p.setJointMotorControl2(self.gripper, link, self.p.POSITION_CONTROL,
                                         targetPosition=s, force=FINGER_FORCE_N,
                                         maxVelocity=speed, physicsClientId=self.client)

    def step(self, q, closure: float, dt: float) -> None:
        """Moves the arm to joint positions q over dt (the tool pose interpolated), the fingers
        toward `closure` (0 open, 1 closed), and the world with them."""
        p, c = self.p, self.client
        start = self._pose
        end = self._ee_pose(np.asarray(q, float))
        self.q = np.asarray(q, float).copy()
        self.closure_target = float(closure)
        self._drive_fingers()
        n = max(1, int(round(dt * PHYSICS_HZ)))
        p.setTimeStep(dt / n, physicsClientId=c)
        for k in range(1, n + 1):
            a = k / n
            pos = tuple(s + a * (e - s) for s, e in zip(start[0], end[0], strict=True))
            orn = p.getQuaternionSlerp(start[1], end[1], a)
            p.changeConstraint(self._hold, pos, orn, maxForce=2000, physicsClientId=c)
            p.stepSimulation(physicsClientId=c)
        self._pose = end

    def closure(self) -> float:
        """The fingers' measured closure (0 open, 1 closed)."""
        s = [self.p.getJointState(self.gripper, link, physicsClientId=self.client)[0]
             for link in (0, 1)]
        return float(np.clip(1.0 - np.mean(s) / (STROKE_M / 2), 0.0, 1.0))

    def held(self) -> str:
        """The block both fingers touch, or ''."""
        p, c = self.p, self.client
        for name, body in self._blocks.items():
            if all(p.getContactPoints(self.gripper, body, link, -1, physicsClientId=c)
                   for link in (0, 1)):
                return name
        return ''

    def touched(self, color: str) -> bool:
        return bool(self.p.getContactPoints(self.gripper, self._blocks[color],
                                            physicsClientId=self.client))

    # --- success -----------------------------------------------------------------------------

    def status(self) -> dict:
        """What the task's success detector sees."""
        ep = self._require_episode()
        pos, vel = self.block(ep.target)
        held = self.held()
        at_rest = float(np.linalg.norm(vel)) < AT_REST_M_S
        placed = False
        if ep.destination == 'bowl':
            placed = (np.linalg.norm(pos[:2] - ep.bowl[:2]) < BOWL_INNER_M - BLOCK_HALF / 2
                      and pos[2] < BOWL_WALL_M + BLOCK_HALF)
        elif ep.destination:
            under, _ = self.block(ep.destination)
            placed = (np.linalg.norm(pos[:2] - under[:2]) < BLOCK_HALF
                      and abs(pos[2] - under[2] - 2 * BLOCK_HALF) < 0.01
                      and under[2] < BLOCK_HALF + 0.005)
        lifted = pos[2] - BLOCK_HALF > LIFTED_M
        if ep.task == 'pick':
            ok = held == ep.target and lifted
        else:
            ok = placed and at_rest and not self.touched(ep.target)
        return {'held': held, 'lifted': bool(lifted), 'placed': bool(placed),
                'closure': round(self.closure(), 3), 'success': bool(ok),
                'target_at': [round(float(v), 4) for v in pos]}

    def success(self, q=None) -> bool:  # type: ignore[override]
        return self.status()['success']

    def touching(self, q=None) -> str:  # type: ignore[override]
        return self.held()

    # --- cameras -----------------------------------------------------------------------------

    def render(self, q=None, cameras=('scene', 'wrist')) -> dict[str, np.ndarray]:
        """The cameras as the world is now (q is where the arm is; None: the last step's)."""
        return super().render(self.q if q is None else q, cameras)

    def view(self, size: tuple[int, int] = (480, 360)) -> np.ndarray:
        """A third-person RGB frame for people (GIFs), not one of the model's cameras."""
        p = self.p
        self.set_joints(self.q)
        self._place_capsules()
        w, h = size
        pos, orn = p.getBasePositionAndOrientation(self.gripper, physicsClientId=self.client)
        axis = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 2]
        p.resetBasePositionAndOrientation(self._body, np.array(pos) + axis * self._body_half,
                                          orn, physicsClientId=self.client)
        view = p.computeViewMatrix((1.05, -0.7, 0.75), (0.22, 0.0, 0.12), (0, 0, 1))
        proj = p.computeProjectionMatrixFOV(45, w / h, 0.05, 4.0)
        img = p.getCameraImage(w, h, view, proj, renderer=p.ER_TINY_RENDERER, shadow=1,
                               lightDirection=(0.4, -0.6, 1.0), physicsClientId=self.client)[2]
        p.resetBasePositionAndOrientation(self._body, (0, 0, -5), (0, 0, 0, 1),
                                          physicsClientId=self.client)
        return np.ascontiguousarray(np.asarray(img, np.uint8).reshape(h, w, 4)[:, :, :3])
