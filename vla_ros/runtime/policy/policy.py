"""The policy: observation in, ActionChunk out, with early exit and a deadline.

Modes
  full        run every segment, then the head once (num_steps Euler steps for flow heads).
  fixed       stop at `exit_layer`.
  early_exit  at every exit compute the action and stop when its discrepancy with the
              previous exit's action is within the calibrated threshold (A1/DeeR). Flow heads
              use A1's inter-layer truncated flow matching by default: `truncated_steps` Euler
              steps per exit, warm-started from the previous exit's action, the schedule
              restarting at the noise end; with truncated=False every exit solves from the same
              noise with num_steps.
Exit runtime: 'ours' solves exit 0 from the observation's noise and (truncated) warm-starts
every later exit from the one before; 'a1' is A1's `ActionValueNet` at run time (seeds.md 2a-b):
every solve that is not warm-started draws fresh noise, the first decision's two solves both
start from noise, and the action list is never reset, so an observation's first decision
compares with (and, truncated, warm-starts from) the previous observation's last action.
Deadline (ours): given an absolute deadline on the monotonic clock, the policy skips any next
segment (plus its head work) that would end past the deadline by a conservative quantile of
its measured costs (deadline.py), and returns the deepest action computed so far, so latency
stays within the deadline plus one segment unless a cost jumps past its recent quantile by
more than that. Every exit's action is valid, so there is always one to return after the
first exit (which always runs: a deadline shorter than the first exit cannot be kept).

Real-time chunking for flow heads (guidance.py): with `prefix` (a Guidance: the executing
plan at this chunk's times, RTC's soft mask, the method), every flow solve is steered toward
the prefix, either by RTC's guided inpainting (method 'guided', Black et al. 2025, Algorithm 1,
with the exported VJP graph of the head step, guidance weight clipped at `rtc_beta`) or by
replacement inpainting (method 'inpaint'). A bare (actions, weights) tuple means 'inpaint'.
Imports numpy (and what the backend imports).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vla_ros.runtime.backends.base import Backend
from vla_ros.runtime.chunking.chunk import ActionChunk
from vla_ros.runtime.package.loader import ModelPackage
from vla_ros.runtime.policy.deadline import CostModel, DeadlineConfig
from vla_ros.runtime.policy.early_exit import METRICS, discrepancy
from vla_ros.runtime.policy.flow import sample_noise
from vla_ros.runtime.policy.guidance import Guidance, guided_solve, guided_support, inpaint_solve
from vla_ros.runtime.policy.pipeline import ExitPipeline, ModelInputs
from vla_ros.runtime.policy.preprocess import (
    ImagePreprocessor,
    PromptBuilder,
    SpaceNormalizer,
    postprocess_gripper,
)

MODES = ('full', 'fixed', 'early_exit')
EXIT_RUNTIMES = ('ours', 'a1')


@dataclass(frozen=True)
class PolicyConfig:
    mode: str = 'early_exit'  # falls back to full when the package has no thresholds
    threshold_set: str | None = None  # None: the package's default set
    exit_layer: int | None = None  # fixed mode
    num_steps: int | None = None  # flow steps per full solve (None: the package's)
    truncated: bool = True  # early exit on flow heads: A1's truncated flow matching
    truncated_steps: int | None = None
    seed: int | None = 0  # noise seed; None draws from entropy
    rtc_beta: float = 5.0  # RTC's guidance weight clip (kinetix's default; LeRobot uses 10)
    exit_runtime: str = 'ours'  # 'a1': A1's noise draws and never-reset action list

    def __post_init__(self) -> None:
        if not self.rtc_beta >= 0:
            raise ValueError(f'rtc_beta must be >= 0, got {self.rtc_beta}')
        if self.mode not in MODES:
            raise ValueError(f'policy mode {self.mode!r} is not one of {MODES}')
        if self.exit_runtime not in EXIT_RUNTIMES:
            raise ValueError(f'exit_runtime {self.exit_runtime!r} is not one of {EXIT_RUNTIMES}')
        if self.mode == 'fixed' and self.exit_layer is None:
            raise ValueError('fixed mode needs exit_layer')
        for name in ('num_steps', 'truncated_steps'):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f'{name} must be >= 1, got {v}')


@dataclass
class Observation:
    images: dict[str, tuple[np.ndarray, str]]  # camera -> (image, ROS encoding)
    state: np.ndarray  # raw, in the package's state order
    instruction: str
    stamp_s: float  # observation time on the control clock
    extras: dict = field(default_factory=dict)


class Policy:
    """Owned by one thread (the inference worker), like its backend."""

    def __init__(self, package: ModelPackage, backend: Backend,
                 config: PolicyConfig | None = None) -> None:
        self.package = package
        self.m = m = package.manifest
        self.backend = backend
        self.config = config or PolicyConfig()
        self.pipeline = ExitPipeline(m, backend)
        self.images = {c.name: ImagePreprocessor(c) for c in m.cameras}
        self.state_norm = SpaceNormalizer(m.state)
        self.action_norm = SpaceNormalizer(m.action)
        self.prompt = PromptBuilder(m.prompt, str(package.path(m.prompt.tokenizer_file)))
        self.exits = self.pipeline.exits
        self.rng = np.random.default_rng(self.config.seed)
        self.clock = time.monotonic  # the deadline's clock (tests inject their own)
        segs = self.pipeline.segments
        # A1's expert runs layers 0..exit at exit k, so its head cost grows with the exit.
        depths = [e + 1 if m.head.type == 'flow_expert' else 1 for e in self.exits]
        self.costs = CostModel([g.layers[1] - g.layers[0] for g in segs], depths,
                               DeadlineConfig())
        self._carried: np.ndarray | None = None  # exit_runtime 'a1': A1's action_list[-1]
        self.set_config(self.config)
        # Action dims that are deltas from a state entry of the same name.
        self._delta_map = [(i, m.state.names.index(n)) for i, n in enumerate(m.action.names)
                           if n in m.state.names]

    def reset_exit_state(self) -> None:
        """Forgets the action carried between observations (A1's `reset_actions`)."""
        self._carried = None

    def describe(self) -> str:
        return self.backend.describe()

    def close(self) -> None:
        self.backend.close()

    def set_config(self, config: PolicyConfig) -> None:
        """Switches mode or threshold set between calls (validated first)."""
        ts = None
        if config.mode == 'early_exit':
            ts = self.m.threshold_set(config.threshold_set)  # KeyError names the sets
            if ts is not None and ts.metric not in METRICS:
                raise ValueError(f'unknown metric {ts.metric}')
        if config.mode == 'fixed' and config.exit_layer not in self.exits:
            raise ValueError(f'exit_layer {config.exit_layer} is not an exit of this package '
                             f'(exits: {list(self.exits)})')
        self.config = config
        self.thresholds = ts

    # --- inputs ------------------------------------------------------------------------------

    def prepare(self, obs: Observation) -> ModelInputs:
        images, missing, patch_masks = {}, set(), {}
        for cam in self.m.cameras:
            pre = self.images[cam.name]
            if cam.name in obs.images:
                img, enc = obs.images[cam.name]
                images[cam.name] = pre(img, enc)
                size = img.shape[:2]
            elif cam.required:
                raise ValueError(f'observation lacks camera {cam.name!r}, which the model '
                                 'requires')
            else:
                images[cam.name] = pre.blank()
                missing.add(cam.name)
                size = (cam.height, cam.width)
            patch_mask = pre.patch_mask(*size)
            if patch_mask is not None:
                patch_masks[cam.name] = patch_mask
        ids, mask = self.prompt(obs.instruction, frozenset(missing))
        state = self.state_norm.normalize(np.asarray(obs.state, np.float64))[None]
        if not np.all(np.isfinite(state)):
            raise ValueError('state holds non-finite values')
        return ModelInputs(images, ids, mask, state, patch_masks)

    def noise(self) -> np.ndarray:
        kind = self.m.flow.noise if self.m.flow else 'gaussian'
        return sample_noise(self.rng, (self.m.action.chunk_len, self.m.action.model_dim), kind)

    # --- inference ---------------------------------------------------------------------------

    def infer(self, obs: Observation, deadline_s: float | None = None,
              prefix: Guidance | tuple[np.ndarray, np.ndarray] | None = None) -> ActionChunk:
        """One chunk for one observation. `prefix` (a Guidance, or (actions (H, A) in the
        robot's space, weights (H,)) for inpainting) steers flow heads toward the executing
        plan. Guided RTC on a package without the VJP graph is a ValueError saying what to
        do."""
        t0 = time.perf_counter()
        inputs = self.prepare(obs)
        t_pre = (time.perf_counter() - t0) * 1000.0
        cfg, m = self.config, self.m
        flow = m.flow is not None
        run = self.pipeline.start(inputs)
        mode = cfg.mode if (cfg.mode != 'early_exit' or self.thresholds is not None) else 'full'
        # set_config checked that a fixed exit layer is an exit of this package.
        target = self.exits.index(cfg.exit_layer) if mode == 'fixed' else len(self.exits) - 1
        every_exit = mode == 'early_exit' or deadline_s is not None
        truncated = flow and cfg.truncated and every_exit
        full_steps = cfg.num_steps or (m.flow.num_steps if flow else 1)
        steps = (cfg.truncated_steps or m.flow.truncated_steps) if truncated else full_steps
        a1 = flow and cfg.exit_runtime == 'a1' and every_exit
        noise = self.noise() if flow else None
        guide = self._guidance(prefix, obs) if (prefix is not None and flow) else None
        kind = (steps if flow else 1, guide[2] if guide is not None else '')
        action, prev, values, deadline_hit = None, None, [], False
        if not every_exit:  # no decision before the target: one chained call where possible
            self._run_to(run, target)
        for k in range(0 if every_exit else target, target + 1):
            if deadline_s is not None and action is not None and \
                    self.costs.should_stop(self.clock(), deadline_s, k, kind):
                deadline_hit = True
                break
            if every_exit:
                ts = time.perf_counter()
                run.advance()
                self.costs.record_segment(k, (time.perf_counter() - ts) * 1000.0)
            th = time.perf_counter()
            if a1 and k == 0 and self._carried is not None:
                action = self._carried  # A1 compares with its last listed action
            else:
                action = self._action(run, self._start(k, prev, noise, truncated, a1), steps,
                                      guide)
                self.costs.record_head(k, kind, (time.perf_counter() - th) * 1000.0)
            if mode == 'early_exit' and prev is not None and k < len(self.exits) - 1:
                names = m.action.model_dim if self.thresholds.dims == 'all' else m.action.dim
                v = float(discrepancy(action[:, :names], prev[:, :names], self.thresholds.metric))
                values.append(v)
                if v <= self.thresholds.values[k - 1]:
                    break
            prev = action
        exit_k = run.index
        if a1:
            self._carried = action
        timings = dict(run.timings_ms)
        timings['preprocess'] = t_pre
        timings['total'] = (time.perf_counter() - t0) * 1000.0
        actions = self._to_robot(action, obs.state)
        return ActionChunk(
            stamp_s=obs.stamp_s, dt_s=m.action.dt_s, actions=actions,
            exit_layer=self.exits[exit_k], timings_ms=timings,
            info={'exit_index': exit_k, 'metric_values': values, 'mode': mode,
                  'deadline_hit': deadline_hit,
                  'compute_fraction': (self.exits[exit_k] + 1) / m.exits.num_layers})

    def actions_at_all_exits(self, inputs: ModelInputs, truncated: bool = True,
                             noise: np.ndarray | None = None) -> list[np.ndarray]:
        """Every exit's model-space action for one observation (calibration)."""
        m = self.m
        flow = m.flow is not None
        steps = ((self.config.truncated_steps or m.flow.truncated_steps) if truncated
                 else (self.config.num_steps or m.flow.num_steps)) if flow else 1
        noise = self.noise() if (flow and noise is None) else noise
        run = self.pipeline.start(inputs)
        out, prev = [], None
        while not run.done:
            run.advance()
            x0 = prev if (truncated and prev is not None) else noise
            prev = run.action(x0, steps)
            out.append(prev)
        return out

    # --- helpers -----------------------------------------------------------------------------

    def _run_to(self, run, target: int) -> None:
        """Segments up to exit `target`: the package's chain in one call, or one by one (then
        each segment's cost is a sample for deadlines; a chain's is not one segment's)."""
        if target in self.pipeline.chains:
            run.advance_to(target)
            return
        for k in range(target + 1):
            ts = time.perf_counter()
            run.advance()
            self.costs.record_segment(k, (time.perf_counter() - ts) * 1000.0)

    def _start(self, k: int, prev, noise, truncated: bool, a1: bool) -> np.ndarray:
        """Where exit k's flow solve starts (see 'Exit runtime' in the module docstring)."""
        if not a1:
            return prev if (truncated and prev is not None) else noise
        if k == 0:
            return noise
        first_decision = k == 1 and self._carried is None
        return prev if (truncated and not first_decision) else self.noise()

    def _action(self, run, x0, steps, guide) -> np.ndarray:
        if guide is None or self.m.flow is None:
            return run.action(x0, steps)
        known, w, method = guide
        if method == 'guided':
            # The error is taken on the robot's action dims only, not on padding.
            wa = np.zeros_like(known)
            wa[:, :self.m.action.dim] = w[:, None]
            return guided_solve(run, x0, steps, known, wa, self.m.flow.noise_at,
                                self.config.rtc_beta)
        return inpaint_solve(run, x0, steps, known, w[:, None], self.m.flow.noise_at)

    def _guidance(self, prefix, obs):
        if not isinstance(prefix, Guidance):
            prefix = Guidance(np.asarray(prefix[0]), np.asarray(prefix[1]), 'inpaint')
        if prefix.method == 'guided':
            reason = guided_support(self.m)
            if reason:
                raise ValueError(reason)
        known = self.action_norm.normalize(self._from_robot(np.asarray(prefix.actions),
                                                            obs.state))
        return (known.astype(np.float32), np.asarray(prefix.weights, np.float32),
                prefix.method)

    def _to_robot(self, action: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = self.action_norm.denormalize(action)
        if self.m.action.mode == 'delta':
            state = np.asarray(state, np.float64)
            for ai, si in self._delta_map:
                out[:, ai] += state[si]
        return postprocess_gripper(out, self.m.action.gripper)

    def _from_robot(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        out = np.array(actions, np.float64)
        if self.m.action.mode == 'delta':
            state = np.asarray(state, np.float64)
            for ai, si in self._delta_map:
                out[:, ai] -= state[si]
        return out
