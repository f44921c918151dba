"""The control loop's schedule: absolute tick times, a late tick resynchronizes (never a burst
of catch-up ticks). Shared by the node's control thread and the bare reference loop that
`vla-ros bench node` measures it against, so both keep the same schedule. Imports no ROS.
"""

from __future__ import annotations

import time

# A thread waking for its tick waits for the GIL until the running thread yields it, up to
# the switch interval (5 ms by default): 0.5 ms bounds that wait (measured p99 1.15 ms with
# a busy second thread, against 10 ms at the default).
SWITCH_INTERVAL_S = 0.0005


def wait_for_next_tick(next_t: float, period: float) -> float:
    """Sleeps until the tick after `next_t` (monotonic seconds) and returns its time; a tick
    more than a period late restarts the schedule from now."""
    next_t += period
    delay = next_t - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    elif delay < -period:
        next_t = time.monotonic()
    return next_t
