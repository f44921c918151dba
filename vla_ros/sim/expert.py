"""The scripted expert for the touch tasks, and demonstration collection.

The expert is a feedback policy on the joint positions: move (straight in joint space, at a
capped joint speed) to a pre-touch pose 10 cm above the named block, then, once the tool tip is
over the block, down onto it. Both poses come from IK seeded at the home posture, so nearby
layouts give nearby motions. Its chunk is this policy rolled forward H steps from the current
joint positions, which is exactly what a chunking model is trained to predict.

Collection runs the scene without ROS at the model's step (dt): images from both cameras, the
joint positions, the instruction and the expert's chunk are recorded each step. Each layout is
used once per block (identical images, different instructions and motions, so the words
matter), and most episodes start from random poses (see `start_pose`); with
`noise_std` the executed step is perturbed (the recorded label stays the expert's), so the data
also shows how to come back from the drift a learned policy makes (DART).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_ros.sim.scene import COLORS, Episode, TabletopScene, sample_episode

PRE_TOUCH_M = 0.10
TOUCH_CLEARANCE_M = 0.01
OVER_BLOCK_M = 0.015


@dataclass
class TouchExpert:
    scene: TabletopScene
    dt_s: float = 0.1
    horizon: int = 10
    speed_rad_s: float = 0.8

    def plan(self, episode: Episode) -> None:
        top = self.scene.target_top()
        self.target_xy = top[:2].copy()
        self.q_pre = self.scene.ik(top + np.array([0.0, 0.0, PRE_TOUCH_M]))
        self.q_touch = self.scene.ik(top + np.array([0.0, 0.0, TOUCH_CLEARANCE_M]),
                                     seed=self.q_pre)

    def step(self, q: np.ndarray) -> np.ndarray:
        tip = self.scene.tip(q)
        over = np.linalg.norm(tip[:2] - self.target_xy) < OVER_BLOCK_M
        goal = self.q_touch if over else self.q_pre
        d = goal - q
        big = float(np.max(np.abs(d)))
        cap = self.speed_rad_s * self.dt_s
        return goal.copy() if big <= cap else q + d * (cap / big)

    def chunk(self, q: np.ndarray) -> np.ndarray:
        out, cur = [], np.asarray(q, float)
        for _ in range(self.horizon):
            cur = self.step(cur)
            out.append(cur)
        return np.array(out)


def start_pose(scene: TabletopScene, rng: np.random.Generator, random_fraction: float,
               spread: float = 0.5) -> np.ndarray:
    """Home (jittered), or with `random_fraction` a random pose around it with the tip well
    above the table. Random starts matter: from home alone the expert's straight joint-space
    path makes the joint positions themselves tell where the target is, and a model learns
    to read them instead of the cameras (and then, at home, guesses)."""
    home = scene.home
    if rng.random() >= random_fraction:
        return home + rng.normal(0, 0.03, len(home))
    lo, hi = np.array(scene.lower), np.array(scene.upper)
    for _ in range(100):
        q = np.clip(home + rng.uniform(-spread, spread, len(home)), lo, hi)
        if scene.tip(q)[2] > 0.12:
            return q
    return home.copy()


def episode_task(seed0: int, e: int) -> tuple[int, str]:
    """Layout seed and target colour of episode `e`: each layout serves every block in turn
    (same images, different instructions and motions, so the words matter)."""
    colors = list(COLORS)
    return seed0 + e // len(colors), colors[e % len(colors)]


def block_positions(seed0: int, episode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each frame's episode index: the named block's table position (N, 2) and every
    block's, in COLORS order (N, len(COLORS), 2)."""
    table = {int(e): sample_episode(*episode_task(seed0, int(e))) for e in np.unique(episode)}
    eps = [table[int(e)] for e in episode]
    return (np.array([ep.blocks[ep.target][:2] for ep in eps]),
            np.array([[ep.blocks[c][:2] for c in COLORS] for ep in eps]))


def record_frame(rec: dict[str, list], imgs: dict, state: np.ndarray, chunk: np.ndarray,
                 ep, e: int) -> None:
    """One step of a demonstration: the cameras, the state, the expert's chunk, the words,
    the episode, and where the named block and every block are."""
    rec['scene'].append(imgs['scene'])
    rec['wrist'].append(imgs['wrist'])
    rec['state'].append(state)
    rec['actions'].append(chunk)
    rec['instruction'].append(ep.instruction)
    rec['episode'].append(e)
    rec['target_xy'].append(ep.blocks[ep.target][:2])
    rec['blocks_xy'].append([ep.blocks[c][:2] for c in COLORS])


def collect(robot: str, episodes: int, seed0: int = 0, noise_std: float | None = None,
            noise_fraction: float = 0.5, random_start: float = 0.7, max_steps: int = 50,
            hold_steps: int = 3,
            image_size: tuple[int, int] = (96, 96), dt_s: float = 0.1, horizon: int = 10,
            progress=print) -> dict[str, np.ndarray]:
    """Expert demonstrations as arrays: scene/wrist images (N, H, W, 3) uint8, state (N, J),
    actions (N, horizon, J), instruction (N,) str, episode (N,) int, target_xy (N, 2) and
    blocks_xy (N, 3, 2) (where the named block and every block are: training-only auxiliary
    targets), success per episode."""
    scene = TabletopScene(robot, image_size)
    expert = TouchExpert(scene, dt_s, horizon)
    noise_std = scene.cfg.dart_noise if noise_std is None else noise_std
    rng = np.random.default_rng(seed0 + 10_000)
    rec: dict[str, list] = {k: [] for k in ('scene', 'wrist', 'state', 'actions',
                                            'instruction', 'episode', 'target_xy',
                                            'blocks_xy')}
    successes = []
    t0 = time.monotonic()
    for e in range(episodes):
        ep = scene.reset(*episode_task(seed0, e))
        expert.plan(ep)
        q = start_pose(scene, rng, random_start)
        noisy = rng.random() < noise_fraction
        held = 0
        for _ in range(max_steps):
            chunk = expert.chunk(q)
            record_frame(rec, scene.render(q), q.copy(), chunk, ep, e)
            q = chunk[0] + (rng.normal(0, noise_std, len(q)) if noisy else 0.0)
            if scene.success(q):
                held += 1
                if held > hold_steps:
                    break
        successes.append(scene.success(q))
        if (e + 1) % 50 == 0 or e + 1 == episodes:
            progress(f'collect: {e + 1}/{episodes} episodes, {len(rec["state"])} steps, '
                     f'expert success {np.mean(successes):.0%}, '
                     f'{time.monotonic() - t0:.0f} s')
    scene.close()
    out = {k: np.array(v) for k, v in rec.items()}
    out['episode_success'] = np.array(successes)
    return out


def save_demos(path: str | Path, demos: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **demos)
    return path


def load_demos(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
