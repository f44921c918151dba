"""The node bench's yardstick: tick statistics count like the node, and the bare reference
loop in its own process ticks at its rate and ends cleanly when told to."""

import json
import subprocess
import sys
import time

from vla_ros.ros.evaluation.reference_loop import tick_stats, window


def test_tick_stats_count_missed_ticks_like_the_node():
    ticks = [0.00, 0.01, 0.02, 0.05, 0.06]  # one 30 ms gap at 100 Hz: 2 ticks missed
    stats = tick_stats(ticks, 100.0)
    assert stats['missed_ticks'] == 2 and stats['ticks'] == 5
    assert abs(stats['tick_error_ms']['max'] - 20.0) < 1e-9
    assert window(ticks, 0.015, 0.055) == [0.02, 0.05]


def test_the_reference_loop_ticks_at_its_rate_and_stops_cleanly():
    proc = subprocess.Popen([sys.executable, '-m', 'vla_ros.ros.evaluation.reference_loop',
                             '100'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'ticking'
    time.sleep(0.5)
    out, _ = proc.communicate('\n', timeout=10)
    assert proc.returncode == 0
    ticks = json.loads(out)
    # No timing bound (the machine may be loaded): it ticked, in order, on the shared clock.
    assert len(ticks) > 10 and ticks == sorted(ticks) and ticks[-1] <= time.monotonic()
