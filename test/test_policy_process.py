"""The policy in a child process: same results, clear errors, a dead child is a fault and is
restarted with back-off."""

import os
import shutil
import signal
import time

import numpy as np
import pytest

from vla_ros.runtime.backends import BackendError, load_backend
from vla_ros.runtime.chunking.action_queue import ActionQueue
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig
from vla_ros.runtime.serving.policy_process import PolicyProcess
from vla_ros.runtime.serving.worker import InferenceWorker


def _obs(m) -> Observation:
    rng = np.random.default_rng(1)
    return Observation({c.name: (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), 'rgb8')
                        for c in m.cameras}, rng.uniform(-1, 1, m.state.dim), 'pick up',
                       time.monotonic())


def test_child_process_gives_the_same_chunk_as_in_process(exported):
    pkg = exported['evo1'][1]
    cfg = PolicyConfig(mode='full', seed=4)
    proc = PolicyProcess(str(pkg.root), config=cfg, warmup=0)
    try:
        obs = _obs(pkg.manifest)
        remote = proc.infer(obs)
        local = Policy(pkg, load_backend(pkg), cfg).infer(obs)
        np.testing.assert_allclose(remote.actions, local.actions, atol=1e-6)
        assert remote.exit_layer == local.exit_layer and 'process' in proc.describe()
    finally:
        proc.close()


def test_a_package_that_fails_to_load_is_reported(exported, tmp_path):
    bad = tmp_path / 'bad'
    shutil.copytree(exported['evo1'][1].root, bad)
    (bad / 'tokenizer.json').write_text('{}')
    with pytest.raises(BackendError, match='hash_mismatch|bytes'):
        PolicyProcess(str(bad), warmup=0)


def test_a_dead_child_is_a_backend_error(exported):
    pkg = exported['edgevla'][1]
    proc = PolicyProcess(str(pkg.root), warmup=0)
    os.kill(proc._proc.pid, signal.SIGKILL)
    proc._proc.join(5)
    with pytest.raises(BackendError, match='ended'):
        proc.infer(_obs(pkg.manifest))
    proc.close()


def test_the_worker_survives_a_dead_child_and_reports_faults(exported):
    pkg = exported['edgevla'][1]
    proc = PolicyProcess(str(pkg.root), warmup=0)
    faults = []
    worker = InferenceWorker(proc, ActionQueue(pkg.manifest.action.dim), time.monotonic,
                             lambda: _obs(pkg.manifest), on_fault=faults.append,
                             failure_backoff_s=0.05, restart_backoff_s=30.0)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while worker.stats.inferences < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.stats.inferences >= 2
        os.kill(proc._proc.pid, signal.SIGKILL)
        while len(faults) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(faults) >= 2 and 'ended' in faults[-1]
        assert worker.running
    finally:
        assert worker.stop(timeout_s=5)
        proc.close()


def _kill(proc: PolicyProcess) -> None:
    os.kill(proc._proc.pid, signal.SIGKILL)
    proc._proc.join(5)


def test_restart_gives_a_working_child_with_the_same_results(exported):
    pkg = exported['edgevla'][1]
    proc = PolicyProcess(str(pkg.root), warmup=0)
    try:
        obs = _obs(pkg.manifest)
        before = proc.infer(obs)
        old_pid = proc._proc.pid
        _kill(proc)
        proc.restart()
        assert proc.alive and proc._proc.pid != old_pid and proc.restarts == 1
        np.testing.assert_allclose(proc.infer(obs).actions, before.actions, atol=1e-6)
    finally:
        proc.close()


def _wait(predicate, timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return bool(predicate())


def test_the_worker_restarts_a_dead_child_and_serves_again(exported):
    pkg = exported['edgevla'][1]
    proc = PolicyProcess(str(pkg.root), warmup=0)
    faults = []
    worker = InferenceWorker(proc, ActionQueue(pkg.manifest.action.dim), time.monotonic,
                             lambda: _obs(pkg.manifest), on_fault=faults.append,
                             failure_backoff_s=0.05, restart_backoff_s=0.05)
    worker.start()
    try:
        assert _wait(lambda: worker.stats.inferences >= 2)
        _kill(proc)
        assert _wait(lambda: worker.stats.restarts == 1)
        served = worker.stats.inferences
        assert _wait(lambda: worker.stats.inferences > served + 1)
        assert worker.stats.restart_state == ''
        assert any('restart 1 in 0.1 s' in f or 'restart 1 in 0.0 s' in f for f in faults)
    finally:
        assert worker.stop(timeout_s=10)
        proc.close()


def test_failed_restarts_back_off_exponentially_until_the_package_is_back(exported, tmp_path):
    pkg = exported['edgevla'][1]
    root = tmp_path / 'pkg'
    shutil.copytree(pkg.root, root)
    proc = PolicyProcess(str(root), warmup=0)
    faults = []
    worker = InferenceWorker(proc, ActionQueue(pkg.manifest.action.dim), time.monotonic,
                             lambda: _obs(pkg.manifest), on_fault=faults.append,
                             failure_backoff_s=0.05, restart_backoff_s=0.1,
                             max_restart_backoff_s=0.4)
    worker.start()
    try:
        assert _wait(lambda: worker.stats.inferences >= 1)
        root.rename(tmp_path / 'gone')  # the package disappears: every restart fails
        _kill(proc)
        assert _wait(lambda: sum('failed' in f and 'restart' in f for f in faults) >= 4)
        waits = [float(f.split(' in ')[1].split(' s')[0]) for f in faults
                 if 'restart' in f and ' in ' in f and 'failed' not in f]
        assert waits[:4] == [0.1, 0.2, 0.4, 0.4]  # doubled, capped
        assert worker.running and worker.stats.restarts == 0
        (tmp_path / 'gone').rename(root)
        assert _wait(lambda: worker.stats.restarts == 1 and worker.stats.restart_state == '')
    finally:
        assert worker.stop(timeout_s=10)
        proc.close()
