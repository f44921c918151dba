"""A hot-swap's model loads on one CPU at a low scheduling priority, and the process (every
thread, also those started while loading) gets its CPUs and policy back when ready."""

import os
import subprocess
import sys

import pytest

_PROBE = """
import os, threading
from vla_ros.runtime.serving.background import BackgroundLoad
cpus = os.sched_getaffinity(0)
bg = BackgroundLoad()
bg.enter()
during = (os.sched_getaffinity(0), os.sched_getscheduler(0))
started = threading.Event(); done = threading.Event(); seen = {}
def worker():  # like a thread pool made while the model loads
    seen['during'] = (os.sched_getaffinity(0), os.sched_getscheduler(0))
    started.set(); done.wait(10)
    seen['after'] = (os.sched_getaffinity(0), os.sched_getscheduler(0))
t = threading.Thread(target=worker); t.start(); started.wait(10)
bg.leave()
done.set(); t.join(10)
after = (os.sched_getaffinity(0), os.sched_getscheduler(0))
print(repr((sorted(cpus), sorted(during[0]), during[1], sorted(seen['during'][0]),
            sorted(seen['after'][0]), seen['after'][1], sorted(after[0]), after[1], bg.state)))
"""


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
                    reason='needs Linux and at least 2 CPUs')
def test_loading_runs_on_one_cpu_at_low_priority_and_gets_everything_back():
    out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True,
                         check=True).stdout
    (cpus, during, policy_during, thread_during, thread_after, thread_policy, after,
     policy_after, state) = eval(out)  # our own probe's repr
    assert len(during) == 1 and thread_during == during  # threads made meanwhile share it
    assert policy_during == os.SCHED_BATCH
    assert after == cpus and thread_after == cpus
    assert policy_after == os.SCHED_OTHER and thread_policy == os.SCHED_OTHER
    assert 'cpu' in state
