"""The inference process reads camera frames from shared memory: the same chunk as frames
pickled over the pipe, and the segment is gone after close and after either side is killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vla_ros.runtime.backends import BackendError
from vla_ros.runtime.policy.policy import Observation, PolicyConfig
from vla_ros.runtime.serving.policy_process import PolicyProcess

PKG = Path(__file__).resolve().parents[1] / 'models' / 'default'


def _obs(m, seed: int = 1) -> Observation:
    rng = np.random.default_rng(seed)
    return Observation({c.name: (rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), 'rgb8')
                        for c in m.cameras}, rng.uniform(-0.5, 0.5, m.state.dim), 'pick up',
                       time.monotonic())


def _gone(name: str, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while os.path.exists(f'/dev/shm/{name}') and time.monotonic() < end:
        time.sleep(0.1)
    return not os.path.exists(f'/dev/shm/{name}')


def test_frames_through_shared_memory_give_the_chunk_of_pickled_frames():
    cfg = PolicyConfig(mode='full', seed=3)
    shared = PolicyProcess(str(PKG), config=cfg, warmup=0, shared_frames=True)
    piped = PolicyProcess(str(PKG), config=cfg, warmup=0, shared_frames=False)
    try:
        for seed in (1, 2):  # a second frame goes through the other slot
            obs = _obs(shared.m, seed)
            a, b = shared.infer(obs), piped.infer(obs)
            np.testing.assert_allclose(a.actions, b.actions, atol=1e-6)
        assert shared._ring is not None and piped._ring is None
        name = shared._ring.spec.name
    finally:
        shared.close()
        piped.close()
    assert not os.path.exists(f'/dev/shm/{name}')  # close unlinks


def test_a_killed_inference_process_is_an_error_and_close_unlinks_the_frames():
    proc = PolicyProcess(str(PKG), warmup=0)
    proc.infer(_obs(proc.m))
    name = proc._ring.spec.name
    os.kill(proc._proc.pid, signal.SIGKILL)
    proc._proc.join(5)
    with pytest.raises(BackendError, match='ended'):
        proc.infer(_obs(proc.m))
    proc.close()
    assert _gone(name, 1.0)


_PARENT = """
import os, sys, time
import numpy as np
from vla_ros.runtime.policy.policy import Observation
from vla_ros.runtime.serving.policy_process import PolicyProcess
proc = PolicyProcess({pkg!r}, warmup=0)
m = proc.m
obs = Observation({{c.name: (np.zeros((480, 640, 3), np.uint8), 'rgb8') for c in m.cameras}},
                  np.zeros(m.state.dim), 'pick up', time.monotonic())
proc.infer(obs)
print(proc._ring.spec.name, proc._proc.pid, flush=True)
time.sleep(60)
"""


def test_a_killed_parent_leaves_no_shared_memory_and_no_inference_process():
    parent = subprocess.Popen([sys.executable, '-c', _PARENT.format(pkg=str(PKG))],
                              stdout=subprocess.PIPE, text=True)
    name, child_pid = parent.stdout.readline().split()
    assert os.path.exists(f'/dev/shm/{name}')
    parent.kill()
    parent.wait(5)
    # The child sees its pipe close and ends; the resource tracker then unlinks the segment.
    assert _gone(name, 20.0)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            os.kill(int(child_pid), 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f'inference process {child_pid} outlived its parent')
