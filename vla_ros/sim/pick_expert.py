"""The scripted expert for pick and pick-and-place, and its demonstrations.

The expert is a feedback policy on what the scene shows (joint positions, the fingers' closure,
which block the fingers hold, where the blocks are), in phases: approach (10 cm above the
named block), descend, close, lift, carry (over the bowl or the other block), lower, release,
retreat. Each phase's pose comes from IK seeded at the home posture, so nearby layouts give
nearby motions. Its chunk rolls the phases forward H steps from the current state, assuming
the grasp holds; it is re-planned from what the world shows each step, so a slipped grasp is
re-tried and a drift is corrected.

An action is the joint positions and the gripper command (0 open, 1 closed); the state is the
joint positions and the measured closure. As with the touch tasks (vla_ros/sim/expert.py),
each layout serves several instructions, most episodes start from a random pose, and with DART
noise the executed step is perturbed while the label stays the expert's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vla_ros.sim.expert import record_frame, start_pose
from vla_ros.sim.pick_scene import BLOCK_HALF, BOWL_FLOOR_M, PickEpisode, PickPlaceScene
from vla_ros.sim.scene import COLORS

APPROACH_M = 0.10  # the approach pose: the tip this far above the block's centre
CARRY_Z_M = 0.17  # tip height while carrying
GRASP_Z_M = BLOCK_HALF + 0.002  # tip height at the grasp: the block's centre
OVER_M = 0.012  # tip within this of the block's centre (xy) before descending
OVER_LOW_M = 0.02  # ... and while descending (the jaws take 17 mm either way)
CLOSE_STEPS = 3  # steps closed at the grasp pose before lifting
RELEASE_STEPS = 3
OPEN_BELOW = 0.15  # closure under which the fingers count as open
PHASES = ('approach', 'descend', 'close', 'lift', 'carry', 'lower', 'release', 'retreat',
          'done')


@dataclass
class PickExpert:
    scene: PickPlaceScene
    dt_s: float = 0.1
    horizon: int = 10
    speed_rad_s: float = 0.8
    poses: dict[str, np.ndarray] = field(default_factory=dict)

    def plan(self, episode: PickEpisode) -> None:
        """Phase poses from where the blocks are now."""
        s = self.scene
        src = s.block(episode.target)[0]
        if episode.destination == 'bowl':
            dest, place_z = episode.bowl.copy(), BOWL_FLOOR_M + BLOCK_HALF + 0.012
        elif episode.destination:
            dest = s.block(episode.destination)[0]
            place_z = dest[2] + 2 * BLOCK_HALF + 0.006
        else:
            dest, place_z = src.copy(), CARRY_Z_M
        self.src_xy, self.dest_xy = src[:2].copy(), dest[:2].copy()
        self.place_z = place_z
        above = np.array([src[0], src[1], src[2] + APPROACH_M])
        q_pre = s.ik(above)
        q_grasp = s.ik(np.array([src[0], src[1], GRASP_Z_M]), seed=q_pre)
        q_lift = s.ik(np.array([src[0], src[1], CARRY_Z_M]), seed=q_grasp)
        q_carry = s.ik(np.array([dest[0], dest[1], CARRY_Z_M]), seed=q_lift)
        q_place = s.ik(np.array([dest[0], dest[1], place_z]), seed=q_carry)
        # Where the approach pose really puts the tip (IK near the workspace's edge can fall
        # short): the descent starts from there, so "over the block" must include it.
        self.over_m = max(OVER_M, float(np.linalg.norm(s.tip(q_pre)[:2] - src[:2])) + 0.005)
        self.poses = {'approach': q_pre, 'descend': q_grasp, 'close': q_grasp,
                      'lift': q_lift, 'carry': q_carry, 'lower': q_place,
                      'release': q_place, 'retreat': q_carry, 'done': q_carry}
        self.episode = episode

    def phase(self, q: np.ndarray, st: dict | None = None) -> str:
        """The phase the world is in now (re-planned where the block is no longer where the
        plan found it: dropped or pushed). `st`: the scene's status now, where already read."""
        s, ep = self.scene, self.episode
        st = s.status() if st is None else st
        if not st['held'] and not st['placed'] and \
                np.linalg.norm(np.array(st['target_at'][:2]) - self.src_xy) > 0.01:
            self.plan(ep)
        tip = s.tip(q)
        if st['success'] or (st['placed'] and st['held'] != ep.target):
            return 'retreat' if np.linalg.norm(tip - s.tip(self.poses['retreat'])) > 0.01 \
                else 'done'
        if st['held'] == ep.target:
            if not ep.destination:
                return 'lift'
            if np.linalg.norm(tip[:2] - self.dest_xy) > OVER_M * 2:
                return 'lift' if tip[2] < CARRY_Z_M - 0.03 and \
                    np.linalg.norm(tip[:2] - self.src_xy) < 0.03 else 'carry'
            return 'lower' if tip[2] > self.place_z + 0.01 else 'release'
        closure = st['closure']
        started = tip[2] < BLOCK_HALF + APPROACH_M - 0.02
        over = np.linalg.norm(tip[:2] - self.src_xy) < (OVER_LOW_M if started else self.over_m)
        low = tip[2] < GRASP_Z_M + 0.012
        if over and low and s.closure_target > 0.5 and closure < 0.9:
            return 'close'  # closing on it: the fingers have not met the block yet
        if closure > OPEN_BELOW or s.closure_target > 0.5:
            return 'release'  # open first: a missed or lost grasp
        if over:
            return 'close' if low else 'descend'
        return 'approach'

    def _toward(self, q: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, bool]:
        d = goal - q
        big = float(np.max(np.abs(d)))
        cap = self.speed_rad_s * self.dt_s
        return (goal.copy(), True) if big <= cap else (q + d * (cap / big), False)

    def chunk(self, q: np.ndarray) -> np.ndarray:
        """(horizon, J + 1): joint targets and the gripper command, rolled forward."""
        st = self.scene.status()
        phase = self.phase(np.asarray(q, float), st)
        cur, out, wait = np.asarray(q, float), [], 0
        lost = phase == 'release' and not st['held']
        for _ in range(self.horizon):
            cmd = 1.0 if phase in ('close', 'lift', 'carry', 'lower') else 0.0
            if phase == 'release' and lost:  # open where it is, then approach again
                out.append(np.append(cur, 0.0))
                wait += 1
                if wait >= RELEASE_STEPS:
                    phase, wait, lost = 'approach', 0, False
                continue
            cur, reached = self._toward(cur, self.poses[phase])
            out.append(np.append(cur, cmd))
            if phase in ('close', 'release'):
                wait += 1
                reached = reached and wait >= (CLOSE_STEPS if phase == 'close'
                                               else RELEASE_STEPS)
            if reached and phase != 'done':
                nxt = PHASES[PHASES.index(phase) + 1]
                if phase == 'lift' and not self.episode.destination:
                    nxt = 'done'
                phase, wait = nxt, 0
        return np.array(out)


def pick_episode_task(seed0: int, e: int, task: str) -> tuple[int, str, str | None]:
    """Layout seed, block and destination of episode `e`: each layout serves several
    instructions in turn (same images, different words and motions)."""
    colors = list(COLORS)
    if task == 'pick':
        return seed0 + e // len(colors), colors[e % len(colors)], None
    k = e % 6  # per layout: each block into the bowl, and each block onto the next one
    target = colors[k % 3]
    dest = 'bowl' if k < 3 else colors[(k + 1) % 3]
    return seed0 + e // 6, target, dest


def collect_pick(robot: str, episodes: int, task: str = 'pick_place', seed0: int = 0,
                 noise_std: float | None = None, noise_fraction: float = 0.5,
                 random_start: float = 0.7, max_steps: int = 120, hold_steps: int = 3,
                 image_size: tuple[int, int] = (96, 96), dt_s: float = 0.1,
                 horizon: int = 10, progress=print) -> dict[str, np.ndarray]:
    """Demonstrations as arrays: scene/wrist images, state (N, J + 1), actions
    (N, horizon, J + 1), instruction, episode, target_xy (N, 2), blocks_xy (N, 3, 2) and the
    destination's position (N, 2); success per episode."""
    scene = PickPlaceScene(robot, image_size, task)
    expert = PickExpert(scene, dt_s, horizon)
    noise_std = scene.cfg.dart_noise if noise_std is None else noise_std
    rng = np.random.default_rng(seed0 + 20_000)
    keys = ('scene', 'wrist', 'state', 'actions', 'instruction', 'episode', 'target_xy',
            'blocks_xy', 'dest_xy')
    rec: dict[str, list] = {k: [] for k in keys}
    successes = []
    t0 = time.monotonic()
    try:
        for e in range(episodes):
            ep = scene.reset(*pick_episode_task(seed0, e, task))
            q = start_pose(scene, rng, random_start)
            scene.step(q, 0.0, 0.3)  # the gripper follows to the start pose; blocks settle
            expert.plan(ep)
            noisy = rng.random() < noise_fraction
            held = 0
            for _ in range(max_steps):
                chunk = expert.chunk(q)
                record_frame(rec, scene.render(q), np.append(q, scene.closure()), chunk, ep, e)
                rec['dest_xy'].append(expert.dest_xy)
                q = chunk[0, :-1] + (rng.normal(0, noise_std, len(q)) if noisy else 0.0)
                scene.step(q, float(chunk[0, -1]), dt_s)
                if scene.success():
                    held += 1
                    if held > hold_steps:
                        break
            successes.append(scene.success())
            if (e + 1) % 25 == 0 or e + 1 == episodes:
                progress(f'collect: {e + 1}/{episodes} episodes, {len(rec["state"])} steps, '
                         f'expert success {np.mean(successes):.0%}, '
                         f'{time.monotonic() - t0:.0f} s')
    finally:
        scene.close()
    out = {k: np.array(v) for k, v in rec.items()}
    out['episode_success'] = np.array(successes)
    return out
