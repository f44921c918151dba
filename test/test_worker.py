"""The inference worker thread: faults never escape, swaps and settings land between
inferences, and stop() joins the thread."""

import threading
import time

import numpy as np

from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.package.manifest import ActionSpec
from vla_ros.runtime.serving.worker import InferenceWorker


class _Manifest:
    name = 'stand-in'
    flow = None
    action = ActionSpec(names=('a', 'b'), model_dim=2, chunk_len=5, dt_s=0.05)


class StandInPolicy:
    """Stands in for Policy at the worker's interface (m, infer, set_config)."""

    def __init__(self, value: float, fail: bool = False) -> None:
        self.m, self.value, self.fail = _Manifest(), value, fail
        self.configs, self.calls = [], 0
        self.thread_ids = set()

    def infer(self, obs, deadline_s=None, prefix=None) -> ActionChunk:
        self.calls += 1
        self.thread_ids.add(threading.get_ident())
        if self.fail:
            raise ValueError('chunk holds non-finite actions (NaN/inf); it is rejected')
        return ActionChunk(obs.stamp_s, 0.05, np.full((5, 2), self.value), exit_layer=3)

    def set_config(self, config) -> None:
        self.configs.append(config)
        self.thread_ids.add(threading.get_ident())


class _Obs:
    def __init__(self) -> None:
        self.stamp_s = time.monotonic()


def _wait(pred, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.005)
    return pred()


def test_failed_inferences_are_reported_and_the_loop_goes_on():
    faults = []
    policy = StandInPolicy(0.0, fail=True)
    queue = ActionQueue(2)
    w = InferenceWorker(policy, queue, time.monotonic, _Obs, on_fault=faults.append,
                        failure_backoff_s=0.01)
    w.start()
    try:
        assert _wait(lambda: len(faults) >= 3)
        assert 'non-finite' in faults[-1] and queue.chunks_merged == 0 and w.running
    finally:
        assert w.stop(timeout_s=2)


def test_swap_and_settings_are_applied_in_the_worker_thread_between_inferences():
    old, new = StandInPolicy(1.0), StandInPolicy(2.0)
    queue = ActionQueue(2, 'replace')
    swapped = []
    w = InferenceWorker(old, queue, time.monotonic, _Obs)
    w.start()
    try:
        assert _wait(lambda: queue.chunks_merged >= 2)
        w.reconfigure('fixed-exit-settings')
        w.swap(new, swapped.append)
        assert _wait(lambda: new.calls >= 2)
        assert swapped == [old] and w.stats.swaps == 1 and w.stats.model_name == 'stand-in'
        assert old.configs == ['fixed-exit-settings']  # applied before the swap took effect
        assert old.thread_ids == new.thread_ids == {w._thread.ident}
        assert queue.target(time.monotonic()).position[0] == 2.0
    finally:
        assert w.stop(timeout_s=2)
    assert not w.running


def test_no_observation_means_no_inference():
    policy = StandInPolicy(1.0)
    w = InferenceWorker(policy, ActionQueue(2), time.monotonic, lambda: None,
                        retry_sleep_s=0.005)
    w.start()
    try:
        assert _wait(lambda: w.stats.skipped >= 5)
        assert policy.calls == 0
    finally:
        assert w.stop(timeout_s=2)
