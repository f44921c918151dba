"""The safety filter between the action queue and every command publisher.

It cannot be bypassed: commands exist only as its outputs. Per control tick it
- holds unless engaged (no motion before ~/engage), and latches an e-stop until reset;
- holds on any fault the node reports (stale cameras, joint states or inference; a failed
  inference) and on non-finite targets;
- clips targets into the joint limits minus a margin;
- limits velocity (x speed scale), acceleration, and brakes so that it can stop at the target
  (|v| <= sqrt(2 a d)), so a far target is approached smoothly and never overshot;
- starts from the measured pose on engage (smooth start), and "holding" means decelerating at
  the acceleration limit to a standstill, never a jump.
Trajectories for joint_trajectory_controllers go through `filter_trajectory`: clipped into
the limits, time-stretched where a segment would be too fast, first point at the current
command. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATES = ('disengaged', 'engaged', 'holding', 'estop')

REANCHOR_TOLERANCE = 0.05  # rad (m): farther than this from the hold, re-anchor


@dataclass(frozen=True)
class SafetyConfig:
    position_margin: float = 0.02  # rad (m) kept away from each joint limit
    speed_scale: float = 1.0  # fraction of the velocity limits, (0, 1]
    acceleration_scale: float = 1.0  # fraction of the acceleration limits, (0, 1]

    def __post_init__(self) -> None:
        if not 0 <= self.position_margin < 1.0:
            raise ValueError(f'position_margin {self.position_margin} must be in [0, 1)')
        for name in ('speed_scale', 'acceleration_scale'):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f'{name} {v} must be in (0, 1]')


@dataclass(frozen=True)
class Command:
    positions: np.ndarray  # (J,) in controller order
    velocities: np.ndarray  # (J,)
    state: str
    reason: str  # why holding ('' when tracking)


class SafetyFilter:
    """Not thread-safe: the control loop owns it (engage/estop requests are queued to it)."""

    def __init__(self, lower, upper, velocity, acceleration, config: SafetyConfig,
                 commanded: np.ndarray | None = None) -> None:
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.vmax, self.amax = np.asarray(velocity, float), np.asarray(acceleration, float)
        if config.position_margin * 2 >= float(np.min(self.upper - self.lower)):
            raise ValueError('position_margin leaves no room inside the joint limits')
        self.config = config
        self.commanded = (np.ones(len(self.lower), bool) if commanded is None
                          else np.asarray(commanded, bool))
        self.state = 'disengaged'
        self.reason = 'not engaged'
        self.cmd: np.ndarray | None = None
        self.vel = np.zeros(len(self.lower))

    # --- transitions -------------------------------------------------------------------------

    def engage(self, measured: np.ndarray) -> None:
        """Starts tracking from the measured pose. Refused while an e-stop is latched."""
        if self.state == 'estop':
            raise RuntimeError('e-stop is latched: call reset before engaging')
        if self.cmd is None or self.state == 'disengaged':
            self.cmd = np.array(measured, float)
            self.vel = np.zeros_like(self.cmd)
        self.state, self.reason = 'engaged', ''

    def disengage(self) -> None:
        if self.state != 'estop':
            self.state, self.reason = 'disengaged', 'not engaged'

    def estop(self, reason: str = 'e-stop') -> None:
        self.state, self.reason = 'estop', reason

    def reset(self) -> None:
        """Clears an e-stop; motion needs a new engage."""
        if self.state == 'estop':
            self.state, self.reason = 'disengaged', 'not engaged'

    # --- per tick ----------------------------------------------------------------------------

    def step(self, target: np.ndarray | None, measured: np.ndarray, dt: float,
             fault: str = '', external_scale: float = 1.0) -> Command:
        """One control tick. `target` None or a `fault` holds; `external_scale` multiplies the
        speed (UR speed scaling)."""
        if self.cmd is None:
            self.cmd = np.array(measured, float)
        if self.state == 'disengaged' and not np.any(self.vel) and \
                np.max(np.abs(measured - self.cmd), initial=0.0) > REANCHOR_TOLERANCE:
            # Disengaged and at rest, but the arm is far from the hold: something else moved
            # it (hand guiding, another controller, a simulator reset). Hold where it is;
            # never pull it back.
            self.cmd = np.where(self.commanded, np.asarray(measured, float), self.cmd)
        if self.state == 'engaged' and not fault and target is not None \
                and not np.all(np.isfinite(target)):
            fault = 'non-finite target'
        if self.state != 'engaged' or fault or target is None:
            if self.state == 'engaged':
                self.state, self.reason = 'holding', fault or 'no target'
            elif self.state == 'holding' and not fault and target is not None:
                self.state, self.reason = 'engaged', ''
            if self.state != 'engaged':
                return self._brake(dt)
        elif self.state == 'holding':
            self.state, self.reason = 'engaged', ''
        return self._track(np.asarray(target, float), dt, external_scale)

    def _track(self, target: np.ndarray, dt: float, external_scale: float) -> Command:
        m = self.config.position_margin
        goal = np.where(self.commanded, np.clip(target, self.lower + m, self.upper - m),
                        self.cmd)
        vmax = self.vmax * self.config.speed_scale * min(max(external_scale, 0.0), 1.0)
        amax = self.amax * self.config.acceleration_scale
        dist = goal - self.cmd
        # Fastest speed from which the joint can still stop at the goal in discrete ticks:
        # v dt + v^2 / (2 a) <= d, solved for v.
        half = 0.5 * amax * dt
        v_brake = np.sqrt(half * half + 2.0 * amax * np.abs(dist)) - half
        v_want = np.clip(dist / dt, -np.minimum(vmax, v_brake), np.minimum(vmax, v_brake))
        v = np.clip(v_want, self.vel - amax * dt, self.vel + amax * dt)
        step = v * dt
        # Do not pass the goal within this tick.
        step = np.where(np.abs(step) > np.abs(dist), dist, step)
        self.cmd = self.cmd + step
        self.vel = step / dt
        return Command(self.cmd.copy(), self.vel.copy(), self.state, self.reason)

    def _brake(self, dt: float) -> Command:
        amax = self.amax * self.config.acceleration_scale
        dv = np.clip(-self.vel, -amax * dt, amax * dt)
        self.vel = self.vel + dv
        self.cmd = np.clip(self.cmd + self.vel * dt, self.lower, self.upper)
        return Command(self.cmd.copy(), self.vel.copy(), self.state, self.reason)

    # --- trajectories ------------------------------------------------------------------------

    def filter_trajectory(self, times: np.ndarray, positions: np.ndarray,
                          external_scale: float = 1.0
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(K,) times from now, (K, J) positions -> a safe trajectory starting at the current
        command: positions clipped, segments slowed (times stretched) to the velocity limits,
        velocities recomputed. None when not engaged (the caller sends a hold instead)."""
        if self.state != 'engaged' or self.cmd is None:
            return None
        if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(times)):
            self.state, self.reason = 'holding', 'non-finite trajectory'
            return None
        m = self.config.position_margin
        pos = np.where(self.commanded, np.clip(positions, self.lower + m, self.upper - m),
                       self.cmd)
        pos = np.concatenate([self.cmd[None], pos[times > 1e-6]])
        t = np.concatenate([[0.0], times[times > 1e-6]])
        vmax = self.vmax * self.config.speed_scale * min(max(external_scale, 1e-3), 1.0)
        out_t = [0.0]
        for k in range(1, len(t)):
            need = float(np.max(np.abs(pos[k] - pos[k - 1]) / vmax))
            out_t.append(out_t[-1] + max(t[k] - t[k - 1], need))
        out_t = np.array(out_t)
        vel = np.gradient(pos, out_t, axis=0) if len(out_t) > 1 else np.zeros_like(pos)
        vel[-1] = 0.0
        vel = np.clip(vel, -vmax, vmax)
        return out_t, pos, vel
