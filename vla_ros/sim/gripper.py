"""A simulated gripper: one joint moving toward its goal at a finite speed, optionally blocked
by a simulated object (then it stalls there, as a gripper closing on something does).

It replaces only the gripper mechanism; the action server in front of it is the real
control_msgs/GripperCommand interface (vla_ros/ros/sim_gripper.py). No ROS, no numpy.
"""

from __future__ import annotations

from vla_ros.adapters.robots import Gripper

REACHED_TOLERANCE = 1e-9  # joint units (rad or m): a step lands on the goal exactly


class SimGripper:
    """Not thread-safe: the sim robot's executor thread steps and commands it."""

    def __init__(self, gripper: Gripper, stroke_s: float = 0.5) -> None:
        if not stroke_s > 0:
            raise ValueError(f'stroke_s {stroke_s} must be > 0 (the time of a full stroke)')
        self.gripper = gripper
        self.lower, self.upper = gripper.joint_range
        self.speed = (self.upper - self.lower) / stroke_s  # joint units per second
        self.position = gripper.joint_open
        self.target = self.position
        # Where an object between the fingers stops them when closing (None: nothing there).
        self.object_at: float | None = None

    def command(self, position: float) -> float:
        """A new goal, clamped into the joint range; returns the goal taken."""
        self.target = min(max(float(position), self.lower), self.upper)
        return self.target

    def _limit(self) -> float:
        """The target as far as the fingers can go: an object stops a closing motion."""
        g = self.gripper
        if self.object_at is None:
            return self.target
        s = 1.0 if g.joint_closed > g.joint_open else -1.0  # the closing direction
        if s * (self.target - self.object_at) > 0 and \
                s * (self.object_at - self.position) >= -REACHED_TOLERANCE:
            return self.object_at
        return self.target

    def step(self, dt: float) -> None:
        goal = self._limit()
        step = min(max(goal - self.position, -self.speed * dt), self.speed * dt)
        self.position += step

    @property
    def reached(self) -> bool:
        return abs(self.position - self.target) <= REACHED_TOLERANCE

    @property
    def stalled(self) -> bool:
        """At rest short of the goal, held by an object."""
        return not self.reached and abs(self.position - self._limit()) <= REACHED_TOLERANCE
