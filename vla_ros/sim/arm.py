"""A simulated arm: joint-space kinematics behind the real controllers' interfaces.

It replaces only the arm. Commands arrive as the real controllers take them: a position vector
in controller joint order (forward_position_controller), name+position pairs (AgiBot's
/joint_command), or a JointTrajectory (joint_trajectory_controller: points timed from receipt,
interpolated linearly from the state at receipt, the last point held; its time runs at
`speed_scaling`, as UR's scaled controller does). Each physics step moves
every joint toward its setpoint within its velocity limit, like a stiff position-controlled
joint. Grippers behind a driver action are SimGrippers (vla_ros/sim/gripper.py); AgiBot's
are joints here. Numpy only; the ROS wrapper is vla_ros/ros/sim_nodes.py.
"""

from __future__ import annotations

import threading

import numpy as np

from vla_ros.adapters.robots import RobotSpec


class SimArm:
    def __init__(self, spec: RobotSpec, initial: np.ndarray | None = None) -> None:
        self.spec = spec
        n = len(spec.joints)
        self.lower = np.array([j.lower for j in spec.joints])
        self.upper = np.array([j.upper for j in spec.joints])
        self.vmax = np.array([j.velocity for j in spec.joints])
        mid = np.clip(np.zeros(n), self.lower, self.upper)
        self.position = np.array(initial if initial is not None else mid, float)
        self.velocity = np.zeros(n)
        self.setpoint = self.position.copy()
        self._traj: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._traj_s = 0.0  # trajectory time elapsed, at the speed scaling of each moment
        self._lock = threading.Lock()
        self.commands = 0
        # UR's scaled_joint_trajectory_controller: a trajectory's time runs at this fraction
        # of real time (the pendant's speed slider times the robot's own slowing).
        self.speed_scaling = 1.0

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.joint_names

    def reset(self, positions) -> None:
        """Teleports to `positions` and holds there (a new simulated episode)."""
        with self._lock:
            self.position = np.clip(np.asarray(positions, float), self.lower, self.upper)
            self.velocity = np.zeros_like(self.position)
            self.setpoint = self.position.copy()
            self._traj = None

    def command_positions(self, positions) -> None:
        p = np.asarray(positions, float)
        if p.shape != self.position.shape or not np.all(np.isfinite(p)):
            raise ValueError(f'expected {len(self.position)} finite positions, got {p.shape}')
        with self._lock:
            self._traj = None
            self.setpoint = np.clip(p, self.lower, self.upper)
            self.commands += 1

    def command_named(self, names, positions) -> None:
        with self._lock:
            sp = self.setpoint.copy()
            for n, v in zip(names, positions, strict=True):
                if n in self.names and np.isfinite(v):
                    sp[self.names.index(n)] = v
            self._traj = None
            self.setpoint = np.clip(sp, self.lower, self.upper)
            self.commands += 1

    def command_trajectory(self, now: float, names, times, positions) -> None:
        """A JointTrajectory: `times` from receipt, `positions` (K, len(names))."""
        idx = [self.names.index(n) for n in names]
        with self._lock:
            full = np.repeat(self.setpoint[None], len(times), axis=0)
            full[:, idx] = np.asarray(positions, float)
            t = np.concatenate([[0.0], np.asarray(times, float)])
            pts = np.concatenate([self.position[None], np.clip(full, self.lower, self.upper)])
            self._traj = (now, t, pts, np.asarray(idx))
            self._traj_s = 0.0
            self.commands += 1

    def step(self, now: float, dt: float) -> None:
        with self._lock:
            if self._traj is not None:
                t0, t, pts, _ = self._traj
                self._traj_s += self.speed_scaling * max(0.0, now - max(now - dt, t0))
                s = self._traj_s
                k = int(np.clip(np.searchsorted(t, s, side='right') - 1, 0, len(t) - 2))
                a = float(np.clip((s - t[k]) / max(t[k + 1] - t[k], 1e-9), 0.0, 1.0))
                self.setpoint = pts[k] + a * (pts[k + 1] - pts[k])
            step = np.clip(self.setpoint - self.position, -self.vmax * dt, self.vmax * dt)
            self.position = self.position + step
            self.velocity = step / dt

    def hold(self) -> None:
        """Stops where it is and drops the trajectory (a controller deactivated)."""
        with self._lock:
            self._traj = None
            self.setpoint = self.position.copy()

    def measured(self, index: int, value: float) -> None:
        """Joint `index` is held at `value` by something in its way (a gripper joint on an
        object); its setpoint stays."""
        with self._lock:
            self.position[index] = value

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.position.copy(), self.velocity.copy()
