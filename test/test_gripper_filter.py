"""The gripper filter (vla_ros/adapters/gripper_filter.py), without ROS: hysteresis, dwell,
fault behaviour, the gripper's range and effort cap."""

import math

import pytest

from vla_ros.adapters.gripper_filter import GripperFilter, GripperFilterConfig
from vla_ros.adapters.robots import robot_spec


def _filter(robot: str = 'xarm6', **cfg) -> GripperFilter:
    return GripperFilter(robot_spec(robot).grippers[0],
                         GripperFilterConfig(**{'min_dwell_s': 0.5, **cfg}))


def test_the_gripper_closes_when_the_value_reaches_the_close_threshold():
    f = _filter()
    assert f.track(0.0, 0.69) is None
    goal = f.track(0.01, 0.7)
    assert goal is not None and goal.closed and goal.position == pytest.approx(0.85)


def test_the_gripper_opens_when_the_value_falls_to_the_open_threshold():
    f = _filter()
    f.track(0.0, 1.0)
    assert f.track(1.0, 0.31) is None
    goal = f.track(1.01, 0.3)
    assert goal is not None and not goal.closed and goal.position == 0.0


def test_values_between_the_thresholds_keep_the_current_command():
    f = _filter()
    f.track(0.0, 1.0)
    assert all(f.track(1.0 + 0.1 * k, v) is None for k, v in enumerate([0.6, 0.4, 0.5, 0.35]))
    assert f.closed is True


def test_nothing_is_commanded_until_the_value_first_leaves_the_band():
    f = _filter()
    assert f.track(0.0, 0.5) is None and f.goal is None
    assert f.track(0.1, 0.2).closed is False


def test_a_change_within_the_dwell_waits_until_the_dwell_is_over():
    f = _filter(min_dwell_s=0.5)
    f.track(0.0, 1.0)
    assert f.track(0.2, 0.0) is None and f.closed is True
    assert f.track(0.49, 0.0) is None
    goal = f.track(0.5, 0.0)
    assert goal is not None and not goal.closed


def test_a_value_flipping_at_the_chunk_rate_changes_the_command_at_most_once_per_dwell():
    f = _filter(min_dwell_s=0.5)
    changes = [t for k in range(100) if f.track(t := 0.01 * k, 1.0 if (k // 10) % 2 else 0.0)]
    # Flips every 0.1 s for 1 s: changes at most every 0.5 s.
    assert len(changes) <= 3
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(changes, changes[1:], strict=False))


def test_fault_hold_keeps_the_command():
    f = _filter(fault_behavior='hold')
    f.track(0.0, 1.0)
    assert f.fault(0.1, 'e-stop') is None and f.closed is True


@pytest.mark.parametrize('behavior,closed', [('open', False), ('close', True)])
def test_fault_open_or_close_is_commanded_at_once_even_within_the_dwell(behavior, closed):
    f = _filter(fault_behavior=behavior, min_dwell_s=5.0)
    f.track(0.0, 0.0 if closed else 1.0)
    goal = f.fault(0.01, 'e-stop')
    assert goal is not None and goal.closed is closed and goal.reason == 'fault: e-stop'


def test_a_fault_before_any_command_opens_or_closes_as_configured():
    assert _filter(fault_behavior='open').fault(0.0, 'stale').closed is False
    assert _filter(fault_behavior='hold').fault(0.0, 'stale') is None


def test_a_repeated_fault_sends_its_command_once():
    f = _filter(fault_behavior='open')
    f.track(0.0, 1.0)
    assert f.fault(1.0, 'stale') is not None
    assert f.fault(1.01, 'stale') is None


def test_tracking_after_a_fault_waits_for_the_dwell():
    f = _filter(fault_behavior='open', min_dwell_s=0.5)
    f.track(0.0, 1.0)
    f.fault(1.0, 'stale')
    assert f.track(1.2, 1.0) is None
    assert f.track(1.5, 1.0).closed is True


@pytest.mark.parametrize('robot,opened,closed', [('xarm6', 0.0, 0.85), ('fr3', 0.04, 0.0),
                                                 ('ur5e', 0.0, 0.8)])
def test_goals_are_the_ends_of_each_grippers_joint_range(robot, opened, closed):
    f = _filter(robot)
    assert f.track(0.0, 1.0).position == pytest.approx(closed)
    assert f.track(1.0, 0.0).position == pytest.approx(opened)


@pytest.mark.parametrize('robot,asked,sent', [('fr3', 500.0, 70.0), ('ur5e', 500.0, 235.0),
                                              ('fr3', 20.0, 20.0), ('xarm6', 500.0, 500.0)])
def test_max_effort_is_capped_by_the_gripper(robot, asked, sent):
    assert _filter(robot, max_effort=asked).track(0.0, 1.0).max_effort == sent


def test_a_non_finite_value_changes_nothing():
    f = _filter()
    f.track(0.0, 1.0)
    assert f.track(1.0, math.nan) is None and f.closed is True


def test_closure_reads_a_joint_position_as_the_fraction_closed_clamped():
    g = robot_spec('fr3').grippers[0]  # open at 0.04 m, closed at 0
    assert g.closure(0.04) == 0.0 and g.closure(0.0) == 1.0
    assert g.closure(0.01) == pytest.approx(0.75)
    assert g.closure(-1.0) == 1.0 and math.isnan(g.closure(math.nan))


@pytest.mark.parametrize('cfg,field', [({'open_threshold': 0.8}, 'open_threshold'),
                                       ({'close_threshold': 1.5}, 'close_threshold'),
                                       ({'min_dwell_s': -1.0}, 'min_dwell_s'),
                                       ({'fault_behavior': 'drop'}, 'fault_behavior'),
                                       ({'max_effort': math.inf}, 'max_effort')])
def test_a_bad_config_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=field):
        GripperFilterConfig(**cfg)
