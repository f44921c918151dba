"""Every parameter of the vla_policy node, declared in one place with its type, default,
description, range or choices, and whether it can change while the node runs.

Every value is checked the same way wherever it comes from (a parameter file at start, a
SetParameters request at run time): type (an integer is accepted for a double), range or
choices, length. The node declares them with typed ROS descriptors (FloatingPointRange /
IntegerRange, choices in additional_constraints); dynamic ones change while the node runs,
the others only while it is unconfigured. No rclpy here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vla_ros.adapters.gripper_filter import FAULT_BEHAVIORS
from vla_ros.adapters.robots import ROBOTS
from vla_ros.runtime.chunking.merge import RTC_SCHEDULES, STRATEGIES

MAX_STRING_LENGTH = 4096  # PATH_MAX: longer paths and instructions are refused, not parsed


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    dynamic: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None  # inclusive

    @property
    def kind(self) -> str:
        """The ROS parameter type, from the default: double, integer, bool, string or
        string_array."""
        d = self.default
        return ('bool' if isinstance(d, bool) else 'integer' if isinstance(d, int) else
                'double' if isinstance(d, float) else 'string' if isinstance(d, str) else
                'string_array')

    def coerce(self, value: Any) -> Any:
        """An integer given for a double parameter (`speed_scale: 1` in a YAML file, `ros2
        param set ... speed_scale 1`) is that double; anything else is left as given."""
        if self.kind == 'double' and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def check(self, value: Any) -> str:
        """'' if acceptable, else the reason."""
        expected = {'bool': (bool,), 'integer': (int,), 'double': (float,), 'string': (str,),
                    'string_array': (list, tuple)}[self.kind]
        if not isinstance(value, expected) or (self.kind == 'integer' and
                                               isinstance(value, bool)):
            return f'{self.name} must be a {self.kind}, got {value!r}'
        if self.kind == 'string_array' and not all(isinstance(v, str) for v in value):
            return f'{self.name} must be a list of strings, got {value!r}'
        if self.kind == 'string' and len(value) > MAX_STRING_LENGTH:
            return f'{self.name} is {len(value)} characters long; at most {MAX_STRING_LENGTH}'
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {list(self.choices)}, got {value!r}'
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            return f'{self.name} must be within [{self.range[0]}, {self.range[1]}], got {value}'
        return ''


PARAMS: tuple[Param, ...] = (
    Param('model_path', '', 'Model package directory. Setting it while active hot-swaps the '
          'model: validated at once, loaded in the background, swapped at a chunk boundary.',
          dynamic=True),
    Param('robot', 'xarm6', 'Robot type (joint names, limits, controllers).',
          choices=tuple(sorted(ROBOTS))),
    Param('controller', '', 'Controller to command; empty = the robot\'s default.'),
    Param('command_topic', '', 'Override of the controller\'s command topic.'),
    Param('joint_states_topic', 'joint_states', 'sensor_msgs/JointState input.'),
    Param('camera_names', ['scene', 'wrist'], 'Model camera slots fed by camera_topics.'),
    Param('camera_topics', ['camera/scene/image_raw', 'camera/wrist/image_raw'],
          'Image topics, one per camera_names entry; topics ending in /compressed are '
          'sensor_msgs/CompressedImage.'),
    Param('instruction', '', 'Language instruction (also settable on ~/instruction).',
          dynamic=True),
    Param('control_rate_hz', 100.0, 'Rate of streamed setpoints and safety checks.',
          range=(1.0, 1000.0)),
    Param('trajectory_rate_hz', 10.0, 'Rate of JointTrajectory updates for trajectory '
          'controllers.', range=(0.5, 100.0)),
    Param('max_staleness_ms', 200.0, 'Hold when a camera or the joint states are older.',
          dynamic=True, range=(1.0, 10000.0)),
    Param('max_camera_skew_ms', 100.0, 'Largest stamp difference between cameras in one '
          'observation.', dynamic=True, range=(0.0, 10000.0)),
    Param('hold_on_stale_inference', True, 'Hold when the action queue runs dry.',
          dynamic=True),
    Param('policy_mode', 'early_exit', 'full | fixed | early_exit.', dynamic=True,
          choices=('full', 'fixed', 'early_exit')),
    Param('threshold_set', '', 'Early-exit threshold set; empty = the package default.',
          dynamic=True),
    Param('exit_layer', -1, 'Exit layer for fixed mode.', dynamic=True),
    Param('deadline_ms', 0.0, 'Inference deadline (0 = none): return the deepest action '
          'ready by then.', dynamic=True, range=(0.0, 10000.0)),
    Param('added_latency_ms', 0.0, 'Evaluation only: delay each chunk this long before it is '
          'queued, as a slower computer would (its observation stamp is kept).', dynamic=True,
          range=(0.0, 5000.0)),
    Param('merge_strategy', 'rtc_blend', 'How a new chunk merges with the executing one '
          '(rtc_guided: RTC guidance, needs a package exported with --rtc-vjp).',
          dynamic=True, choices=STRATEGIES),
    Param('rtc_schedule', 'exp', 'Soft-mask schedule of rtc_blend.', dynamic=True,
          choices=RTC_SCHEDULES),
    Param('interpolation', 'linear', 'Between actions: linear | cubic.',
          choices=('linear', 'cubic')),
    Param('latency_compensation', True, 'Drop the part of a chunk already in the past.',
          dynamic=True),
    Param('request_fraction', 0.5, 'Infer again when the plan left, after the expected delay, '
          'is at most this fraction of a chunk.', dynamic=True, range=(0.0, 1.0)),
    Param('speed_scale', 0.5, 'Fraction of the velocity limits the filter allows.',
          dynamic=True, range=(0.01, 1.0)),
    Param('acceleration_scale', 1.0, 'Fraction of the acceleration limits.', dynamic=True,
          range=(0.01, 1.0)),
    Param('position_margin', 0.02, 'Distance kept from joint limits (rad or m).',
          range=(0.0, 0.5)),
    Param('gripper_interface', 'gripper_command', 'How a gripper behind a driver action is '
          'commanded: control_msgs/GripperCommand on its action, or (Franka Hand) franka_msgs '
          'Move to open and Grasp to close (needs franka_msgs).',
          choices=('gripper_command', 'franka_move_grasp')),
    Param('gripper_open_threshold', 0.3, 'The gripper opens when the model\'s fraction '
          'closed (0 open, 1 closed) falls to this; below gripper_close_threshold.',
          range=(0.0, 1.0)),
    Param('gripper_close_threshold', 0.7, 'The gripper closes when the fraction closed '
          'reaches this; between the two thresholds the command stays.', range=(0.0, 1.0)),
    Param('gripper_min_dwell_s', 0.5, 'Least time between two gripper command changes.',
          range=(0.0, 10.0)),
    Param('gripper_fault_behavior', 'hold', 'What the gripper does when the arm holds on a '
          'fault or the node leaves active: hold its command, open or close.', dynamic=True,
          choices=FAULT_BEHAVIORS),
    Param('gripper_max_effort', 20.0, 'max_effort of gripper goals (N; the Franka Hand\'s '
          'grasp force), capped by the gripper (Franka Hand 70, Robotiq 2F-85 235).',
          dynamic=True, range=(0.0, 1000.0)),
    Param('backend', 'onnxruntime', 'onnxruntime | tensorrt.',
          choices=('onnxruntime', 'tensorrt')),
    Param('device', 'cpu', 'onnxruntime device: cpu | cuda | tensorrt.',
          choices=('cpu', 'cuda', 'tensorrt')),
    Param('precision', 'fp32', 'fp32 | fp16.', choices=('fp32', 'fp16')),
    Param('threads', 0, 'Inference threads (0 = all cores).', range=(0, 256)),
    Param('control_rt_priority', 0, 'SCHED_FIFO priority of the control thread (0 = normal '
          'scheduling; needs an rtprio limit or CAP_SYS_NICE).', range=(0, 99)),
    Param('control_process', True, 'Run the control loop (joint states in, safety filter, '
          'commands out) in its own process with its own ROS node, so it never waits for the '
          'GIL the executor holds while it deserializes images; the plan and the fault inputs '
          'reach it over a pipe.'),
    Param('inference_process', True, 'Run the model in its own process (lower priority) so '
          'inference never holds the GIL the control loop needs.'),
    Param('qos_reliable_sensors', False, 'Subscribe to cameras and joint states RELIABLE '
          'instead of sensor-data QoS (BEST_EFFORT, keep last 1).'),
    Param('autostart', False, 'Configure and activate on start (without a lifecycle '
          'manager).'),
    Param('engage_on_activate', False, 'Engage at activation instead of waiting for '
          '~/engage.'),
)

BY_NAME = {p.name: p for p in PARAMS}
