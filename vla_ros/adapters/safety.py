"""The safety filter between the action queue and every command publisher.

It cannot be bypassed: commands exist only as its outputs. Per control tick it
- holds unless engaged (no motion before ~/engage), and latches an e-stop until reset;
- holds on any fault the node reports (stale cameras, joint states or inference; a failed
  inference) and on non-finite targets;
- clips targets into the joint limits minus a margin;
- starts from the measured pose on engage (smooth start), and "holding" means decelerating at
  the acceleration limit to a standstill, never a jump.

Guarantees, per commanded joint and tick, for a command that starts inside the joint limits
(v is the commanded velocity, equal to the command's position step / dt; a is
acceleration x acceleration_scale as configured for that tick; engage from rest and the
disengaged re-anchor set the command to the measured pose, where the arm already is):
- position in [lower, upper], never clipped at speed: braking toward the goal, which lies
  inside the margin-limits (upper - margin, lower + margin), keeps the velocity below the
  speed from which the joint can stop before them at a, so holding or a target behind it
  never needs more room than that, and the margin is left for a lowered a (below);
- |v| <= velocity always; |v| <= velocity x speed_scale x external_scale, except after that
  limit was lowered while moving faster: then |v| comes down to it at a, never by a jump;
- |v_k - v_{k-1}| <= a dt, with a lowered acceleration_scale applying from its first tick.
  The one exception: a is lowered while the joint is too fast to stop inside its hard limit at
  the new a. Then it brakes uniformly just as hard as it must to come to rest half the margin
  short of that limit (never harder than the unscaled acceleration, whose braking curve the
  motion above always keeps inside the margin-limits, so that stop always fits): the hard
  position limit wins over the scaled comfort limit, and a joint reaches a hard limit only
  at rest (its last step there at most a dt), never at speed (with a margin > 0);
- a target is approached on the discrete braking curve (at speed v this tick, then v - a dt,
  v - 2 a dt, ... the joint comes to rest within the remaining distance), so it is not
  overshot in ordinary tracking and is landed on exactly, without chattering, once the
  remaining distance fits in one tick from which the next tick can stop. A target that jumps
  closer than the stopping distance (or a lowered a) is overshot and returned to instead of
  breaking the acceleration limit.
Trajectories for joint_trajectory_controllers go through `filter_trajectory`: clipped into
the limits, time-stretched where a segment would be too fast, first point at the current
command. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATES = ('disengaged', 'engaged', 'holding', 'estop')

REANCHOR_TOLERANCE = 0.05  # rad (m): farther than this from the hold, re-anchor


def _stop_speed(dist: np.ndarray, accel: np.ndarray, dt: float) -> np.ndarray:
    """The fastest speed for this tick after which the joint still comes to rest within
    `dist`, decelerating by accel * dt per tick: the inverse of the discrete braking distance
    D(v) = dt (v + (v - u) + ... + (v - K u)), K = floor(v / u), u = accel * dt.

    D is piecewise linear and continuous (D(K u) = u dt K (K + 1) / 2), so it inverts
    exactly. Exact, not the smooth v^2 / (2 a) + v dt / 2 through the same points: between
    them that lets the joint up to a dt^2 / 8 too close, so stopping needs up to 12.5% more
    than the limit (and a clamp onto the goal then takes it in one tick). Below one tick's
    worth (K = 0) it is dist / dt: the joint lands on the goal and can stop the tick after."""
    u = accel * dt
    s = np.maximum(dist, 0.0) / dt
    k = np.floor(np.sqrt(0.25 + 2.0 * s / u) - 0.5)  # the largest K with u K (K+1) / 2 <= s
    return s / (k + 1.0) + 0.5 * u * k


def _clamped_scale(external_scale: float) -> float:
    # A non-finite scale from the robot is not a reason to move at full speed.
    return min(max(external_scale, 0.0), 1.0) if np.isfinite(external_scale) else 0.0


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
        if not (np.all(self.vmax > 0) and np.all(self.amax > 0)):
            raise ValueError('velocity and acceleration limits must be positive')
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
        # Still braking from a disengage or e-stop: carry on from the command in motion, as
        # re-anchoring there would stop the joint in one tick.
        if self.cmd is None or (self.state == 'disengaged' and not np.any(self.vel)):
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
        speed (UR speed scaling; non-finite reads as 0). Lowering it, speed_scale or
        acceleration_scale while moving is safe: see the module docstring."""
        if self.cmd is None:
            self.cmd = np.array(measured, float)
        if self.state == 'disengaged' and not np.any(self.vel) and \
                np.max(np.abs(measured - self.cmd), initial=0.0) > REANCHOR_TOLERANCE:
            # Disengaged and at rest, but the arm is far from the hold: something else moved
            # it (hand guiding, another controller, a simulator reset). Hold where it is;
            # never pull it back.
            self.cmd = np.where(self.commanded, np.asarray(measured, float), self.cmd)
        active = self.state in ('engaged', 'holding')
        # Checked while holding too: a second non-finite target in a row must not resume.
        if active and not fault and target is not None and not np.all(np.isfinite(target)):
            fault = 'non-finite target'
        if self.state != 'engaged' or fault or target is None:
            if active and (fault or target is None):
                self.state, self.reason = 'holding', fault or 'no target'
            elif self.state == 'holding':
                self.state, self.reason = 'engaged', ''
            if self.state != 'engaged':
                return self._brake(dt)
        return self._track(np.asarray(target, float), dt, external_scale)

    def _track(self, target: np.ndarray, dt: float, external_scale: float) -> Command:
        m = self.config.position_margin
        goal = np.where(self.commanded, np.clip(target, self.lower + m, self.upper - m),
                        self.cmd)
        vmax = self.vmax * self.config.speed_scale * _clamped_scale(external_scale)
        amax = self.amax * self.config.acceleration_scale
        dist = goal - self.cmd
        want = np.sign(dist) * np.minimum(vmax, _stop_speed(np.abs(dist), amax, dt))
        return self._move(want, dt, goal)

    def _brake(self, dt: float) -> Command:
        return self._move(np.zeros_like(self.vel), dt)

    def _move(self, want: np.ndarray, dt: float, goal: np.ndarray | None = None) -> Command:
        """Moves at the velocity closest to `want` that keeps the guarantees: `want` (toward
        the goal, at most the scaled speed) is only a wish; acceleration and the braking
        distances to the position limits decide."""
        # (np.minimum/np.maximum rather than np.clip: this runs every tick, and is faster.)
        amax = self.amax * self.config.acceleration_scale
        v = np.minimum(np.maximum(want, self.vel - amax * dt), self.vel + amax * dt)
        # Only the limit being moved toward can need braking: mirror so that it is the upper.
        sign = np.copysign(1.0, v)
        room = np.where(sign > 0, self.upper - self.cmd, self.cmd - self.lower)
        v = sign * self._limit_braking(sign * v, sign * self.vel, room, amax, dt,
                                       0.5 * self.config.position_margin)
        v = np.minimum(np.maximum(v, -self.vmax), self.vmax)
        new = self.cmd + v * dt
        if goal is not None:
            # A step that ends on the goal up to the rounding of the positions takes it
            # exactly, so no rounding is left to overshoot or chatter around.
            rounding = 8 * np.finfo(float).eps * (np.abs(self.cmd) + np.abs(goal))
            new = np.where(np.abs(new - goal) <= rounding, goal, new)
        # The braking keeps any step across a hard limit to rounding size; drop that rounding.
        # A command outside the limits (engaged out there) may only come back.
        bounded = np.minimum(np.maximum(new, np.minimum(self.lower, self.cmd)),
                             np.maximum(self.upper, self.cmd))
        if (bounded != new).any():
            v = np.where(bounded != new, (bounded - self.cmd) / dt, v)
        self.cmd, self.vel = bounded, v
        return Command(self.cmd.copy(), self.vel.copy(), self.state, self.reason)

    def _limit_braking(self, v: np.ndarray, vel: np.ndarray, room: np.ndarray,
                       amax: np.ndarray, dt: float, spare: float) -> np.ndarray:
        """Bounds velocities `v` >= 0 (after the previous `vel`) toward a hard limit `room`
        away, so the joint always stops before it.

        Braking toward the goal, which lies inside the margin-limits, already keeps every
        joint within its braking distance of them (holding brakes the same way), so this binds
        only when acceleration_scale was lowered mid-motion: braking at the new a then uses
        the margin, and where not even the hard limit leaves room for that, the joint brakes
        uniformly just as hard as stopping `spare` (half the margin) short of the hard limit
        needs, no harder than the unscaled limit (whose braking curve ends before the
        margin-limit, so that stop always fits): it never reaches the hard limit at speed."""
        short = v > _stop_speed(room, amax, dt)  # then v already brakes as hard as a allows
        if not short.any():
            return v
        aim = np.maximum(room - spare, 0.0)
        need = np.clip(vel * vel / np.maximum(2.0 * aim + vel * dt, 1e-300), amax, self.amax)
        forced = np.maximum(np.maximum(vel - self.amax * dt, 0.0),
                            np.minimum(vel - need * dt, _stop_speed(aim, self.amax, dt)))
        return np.where(short, forced, v)

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
        vmax = self.vmax * self.config.speed_scale * max(_clamped_scale(external_scale), 1e-3)
        out_t = [0.0]
        for k in range(1, len(t)):
            need = float(np.max(np.abs(pos[k] - pos[k - 1]) / vmax))
            out_t.append(out_t[-1] + max(t[k] - t[k - 1], need))
        out_t = np.array(out_t)
        vel = np.gradient(pos, out_t, axis=0) if len(out_t) > 1 else np.zeros_like(pos)
        vel[-1] = 0.0
        vel = np.clip(vel, -vmax, vmax)
        return out_t, pos, vel
