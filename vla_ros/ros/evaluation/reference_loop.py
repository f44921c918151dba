"""A bare control loop in its own process: the yardstick for the node's control loop.

It ticks at the same rate with the same absolute-time schedule and the same GIL switch
interval as the node's control thread, but does no work and shares no interpreter, so its
period error is what the machine's load alone costs a loop at that rate. `vla-ros bench node`
runs it beside the node for the whole run; both record monotonic tick times (CLOCK_MONOTONIC
is shared by all processes), so any window of the run compares like with like.
Run: `python -m vla_ros.ros.evaluation.reference_loop RATE_HZ`; it prints 'ticking' once its
loop runs, ticks until stdin closes or a line arrives, then prints its tick times as one JSON
list. Imports no ROS.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np

from vla_ros.ros.node.ticks import SWITCH_INTERVAL_S, wait_for_next_tick


def tick_stats(ticks, rate_hz: float) -> dict:
    """Period error over every consecutive pair of ticks, and ticks missed (a gap of n
    periods, n >= 1.5, missed round(n) - 1), counted as the node counts them."""
    t = np.asarray(ticks, np.float64)
    period = 1.0 / rate_hz
    if t.size < 2:
        return {'tick_error_ms': {}, 'missed_ticks': 0, 'ticks': int(t.size)}
    gaps = np.diff(t)
    err = np.abs(gaps - period) * 1000.0
    late = gaps > 1.5 * period
    missed = int(np.sum(np.maximum(1, np.round(gaps[late] / period) - 1))) if late.any() else 0
    return {'tick_error_ms': {'p50': float(np.percentile(err, 50)),
                              'p99': float(np.percentile(err, 99)), 'max': float(err.max())},
            'missed_ticks': missed, 'ticks': int(t.size), 'seconds': float(t[-1] - t[0])}


def window(ticks, t0: float, t1: float) -> list[float]:
    return [t for t in ticks if t0 <= t <= t1]


def run(rate_hz: float, stop: threading.Event) -> list[float]:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    period = 1.0 / rate_hz
    ticks: list[float] = []
    next_t = time.monotonic()
    while not stop.is_set():
        ticks.append(time.monotonic())
        next_t = wait_for_next_tick(next_t, period)
    return ticks


def main() -> None:
    rate_hz = float(sys.argv[1])
    stop = threading.Event()
    waiter = threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True)
    waiter.start()
    print('ticking', flush=True)
    ticks = run(rate_hz, stop)
    print(json.dumps(ticks), flush=True)


if __name__ == '__main__':
    main()
