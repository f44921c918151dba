"""What the node and its control process (control_process.py) exchange, and how.

The pipe (one multiprocessing Connection; control_link.py is the node's end). Not shared
memory: the plan changes only when a chunk is merged (a few times a second, a few KB) and
the other inputs are a few numbers 50 times a second; a pipe keeps their order (a clear is
never overtaken by the plan it clears), has no lock a dead peer could hold, and its end of
file tells either side at once that the other is gone.
  node -> child 'plan' (the merged plan, a Trajectory, or None after a clear), 'inputs'
                every FEED_PERIOD_S (camera arrival times, the node's faults, speed scale,
                fault parameters; also its heartbeat), 'engage' (answered by 'reply'),
                'disengage', 'estop', 'reset', 'safety_config', 'gripper_config', 'stop'.
  child -> node 'ready', then 'report' every REPORT_EVERY_TICKS ticks and on each change of
                the filter's state (tick times, the command, gripper targets, e2e latency).
Imports no rclpy.
"""

from __future__ import annotations

import array
import fcntl
import termios
from dataclasses import dataclass

from vla_ros.adapters.gripper_filter import GripperFilterConfig
from vla_ros.adapters.safety import SafetyConfig

REPORT_EVERY_TICKS = 2
FEED_PERIOD_S = 0.02  # the node's inputs and heartbeat
MIN_FEED_TIMEOUT_S = 0.1  # a silent node holds the arm after max(this, max_staleness_ms)
REST_TIMEOUT_S = 5.0  # as engage.py: far above the slowest stop of any supported arm
PROCESS_NAME = 'vla_control'  # /proc/PID/comm, what ps and top show
# A send never blocks: with more than this waiting unread in the pipe (a stopped or hung
# peer), the message is not sent (ticks wait for the next report; inputs are missed, and the
# control process holds without them).
MAX_UNREAD_BYTES = 64 * 1024
# An engage that comes before this process's first joint states (just started: its
# subscription is still being matched) waits this long for them.
ENGAGE_WAIT_S = 5.0


@dataclass(frozen=True)
class ControlSpec:
    """Everything the control process is built from (pickled once, at its start)."""

    node_name: str
    namespace: str
    robot: str
    controller: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    topics: dict  # 'command', 'joint_states', 'estop' -> fully resolved names
    cameras: tuple[str, ...]
    control_rate_hz: float
    trajectory_rate_hz: float
    safety: SafetyConfig
    gripper: GripperFilterConfig
    qos_reliable_sensors: bool
    rt_priority: int
    parent_pid: int


def send_if_room(conn, msg: tuple) -> bool:
    """Sends `msg` unless the peer has left MAX_UNREAD_BYTES unread (False then): a pipe
    send blocks once the socket buffer is full, and neither side may wait on the other.
    OSError when the peer is gone."""
    unread = array.array('i', [0])
    fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, unread)
    if unread[0] > MAX_UNREAD_BYTES:
        return False
    conn.send(msg)
    return True
