"""Model loading for the vla_policy node: building a policy for this robot, and hot-swap.

`_build_policy` (configure and swap alike) reads and checks the package against the robot
and the camera mapping, then loads and warms it up (in a child process by default). A swap is
checked synchronously (the answer goes back in the SetParameters result), then loaded on a
loader thread while the old model serves, and handed to the worker at a chunk boundary.
Mixed into VlaPolicyNode (policy_node.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rclpy.parameter import Parameter

from vla_ros.adapters.adapter import AdapterError, RobotAdapter
from vla_ros.adapters.robots import robot_spec
from vla_ros.runtime.backends import BackendError, load_backend
from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.loader import load_package, read_manifest
from vla_ros.runtime.policy.guidance import guided_support
from vla_ros.runtime.policy.policy import Observation, Policy, PolicyConfig
from vla_ros.runtime.serving.policy_process import BackendSpec, PolicyProcess

LOAD_ERRORS = (PackageError, AdapterError, BackendError, ValueError, KeyError, OSError)


class SwapMixin:
    """Builds policies for this robot (configure, swap) and runs the hot-swap."""

    def _policy_config(self) -> PolicyConfig:
        layer = self.p('exit_layer')
        return PolicyConfig(mode=self.p('policy_mode'), threshold_set=self.p('threshold_set')
                            or None, exit_layer=layer if layer >= 0 else None)

    def _build_policy(self, path: str, background: bool = False) -> tuple:
        """Loads, validates and warms up a package for this robot (any thread): in a child
        process by default, in this one with inference_process=False. `background` (a
        hot-swap): the child loads on one CPU at idle priority (serving/background.py)."""
        m = read_manifest(path)
        adapter = RobotAdapter(robot_spec(self.p('robot')), m.state.names, m.action.names,
                               self.p('controller') or None)
        self._check_cameras(m)
        config = self._policy_config()
        if config.mode == 'early_exit' and m.threshold_set(config.threshold_set) is None:
            config = replace(config, mode='full')
        kind = self.p('backend')
        if self.p('inference_process'):
            spec = BackendSpec(kind, self.p('device'), self.p('precision'),
                               self.p('threads') or None)
            return m, adapter, PolicyProcess(path, spec, config, background_load=background)
        pkg = load_package(path)
        # Spinning ORT threads would take the cores the control timer needs between graphs.
        options = ({'threads': self.p('threads') or None, 'spin': False}
                   if kind == 'onnxruntime' else {})
        backend = load_backend(pkg, kind, self.p('device'), self.p('precision'), **options)
        policy = Policy(pkg, backend, config)
        warm = self._warmup_observation(pkg.manifest)
        for _ in range(2):  # first calls allocate and tune; keep them off the robot's clock
            policy.infer(warm)
        return pkg.manifest, adapter, policy

    def _check_cameras(self, m) -> None:
        names, topics = list(self.p('camera_names')), list(self.p('camera_topics'))
        if len(names) != len(topics):
            raise ValueError(f'camera_names has {len(names)} entries but camera_topics '
                             f'{len(topics)}')
        slots = {c.name for c in m.cameras}
        unknown = [n for n in names if n not in slots]
        missing = [c.name for c in m.cameras if c.required and c.name not in names]
        if unknown or missing:
            raise ValueError(f'camera mapping does not fit the model: unknown slots {unknown}, '
                             f'required slots without a topic {missing}; the model has '
                             f'{sorted(slots)}')

    def _warmup_observation(self, m) -> Observation:
        images = {c.name: (np.zeros((c.height, c.width, 3), np.uint8), 'rgb8')
                  for c in m.cameras}
        return Observation(images, np.zeros(m.state.dim), 'warm up', 0.0)

    def _check_swap(self, path: str) -> str:
        """The fast, synchronous checks of a new model_path ('' or the reason): the answer
        goes back in the SetParameters result."""
        if self._swap['state'] == 'loading':
            return 'a model swap is already in progress'
        try:
            if not Path(path).is_dir():
                return f'{path} is not a directory'
            m = read_manifest(path)
            RobotAdapter(robot_spec(self.p('robot')), m.state.names, m.action.names,
                         self.p('controller') or None)
            self._check_cameras(m)
            if self.p('merge_strategy') == 'rtc_guided' and guided_support(m):
                raise ValueError(guided_support(m))
            if m.action.names != self.manifest.action.names:
                raise ValueError(f'its actions {list(m.action.names)} differ from the running '
                                 f'model\'s {list(self.manifest.action.names)}')
        except (PackageError, AdapterError, ValueError, KeyError, OSError) as e:
            self.get_logger().error(f'model swap to {path[:200]} rejected: {e}')
            return f'rejected: {e}'
        return ''

    def _begin_swap(self, path: str) -> None:
        """Loads `path` on a loader thread while the current model serves."""
        self._swap = {'state': 'loading', 'detail': path, 'started': time.monotonic(),
                      'missed': 0}
        threading.Thread(target=self._load_for_swap, args=(path,), name='vla_model_loader',
                         daemon=True).start()
        self.get_logger().info(f'loading {path} in the background; the current model keeps '
                               'serving')

    def _load_for_swap(self, path: str) -> None:
        try:
            manifest, _adapter, policy = self._build_policy(path, background=True)
        except LOAD_ERRORS as e:
            self._swap.update(state='failed', detail=f'{path}: {e}')
            self.get_logger().error(f'model swap to {path} failed while loading; '
                                    f'{self.manifest.name} keeps serving: {e}')
            # model_path names what serves, so a restart loads the model that worked.
            self.set_parameters([Parameter('model_path', value=self.model_path)])
            return

        def swapped(old_policy) -> None:
            self.manifest, self.policy, self.model_path = manifest, policy, path
            took = time.monotonic() - self._swap['started']
            self._swap.update(state='swapped', detail=f'{manifest.name} after {took:.1f} s, '
                              f'{self._swap["missed"]} control ticks missed')
            self.get_logger().info(f'model swapped to {manifest.name} ({path}); '
                                   f'{self._swap["missed"]} control ticks missed')
            old_policy.close()

        self.worker.swap(policy, swapped)
