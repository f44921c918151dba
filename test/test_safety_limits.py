"""The safety filter's motion limits on every tick: position, velocity, acceleration.

Property tests drive random robots (joint counts, limits, dt, margins, scales) through random
episodes (targets inside and beyond the limits, jumps, ramps, NaN, faults, config changes,
engage/disengage/e-stop) and check every tick twice: from the velocities the filter reports and
from finite differences of its command positions, which is what a position controller sees.
The reviewed cases, pinned one by one, are in test_safety_regressions.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.adapters.safety import SafetyConfig, SafetyFilter

REL = 1e-9  # relative float tolerance on every limit
PROPERTY = settings(deadline=None, max_examples=45, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Robot:
    lower: np.ndarray
    upper: np.ndarray
    vmax: np.ndarray
    amax: np.ndarray
    dt: float
    config: SafetyConfig
    commanded: np.ndarray
    start: np.ndarray


@dataclass(frozen=True)
class Run:
    robot: Robot
    x: np.ndarray  # (T + 1, J) command positions, the engage pose first
    v: np.ndarray  # (T + 1, J) reported velocities, 0 first
    accel: np.ndarray  # (T, J) acceleration limit in force at each tick (scaled)
    speed: np.ndarray  # (T, J) velocity limit in force at each tick (scaled)


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _per_joint(j, lo, hi):
    return st.lists(_floats(lo, hi), min_size=j, max_size=j).map(np.array)


@st.composite
def robots(draw, dt=(0.002, 0.05), vmax=(0.05, 3.0), amax=(0.1, 50.0), scale=(0.05, 1.0)):
    j = draw(st.integers(1, 4))
    lower = draw(_per_joint(j, -3.0, 0.5))
    span = draw(_per_joint(j, 0.2, 4.0))
    commanded = np.array(draw(st.lists(st.booleans(), min_size=j, max_size=j)))
    commanded[draw(st.integers(0, j - 1))] = True
    margin = draw(st.one_of(st.just(0.0), _floats(0.0, 0.45))) * min(float(span.min()), 2.0)
    config = SafetyConfig(margin, draw(_floats(*scale)), draw(_floats(*scale)))
    return Robot(lower, lower + span, draw(_per_joint(j, *vmax)), draw(_per_joint(j, *amax)),
                 draw(_floats(*dt)), config, commanded,
                 lower + span * draw(_per_joint(j, 0.0, 1.0)))


def segments(j, scale=(0.05, 1.0)):
    """Episode pieces, motion first and half of them motion: a target held, ramped or streamed
    (jumping every few ticks, like policy chunks) in fractions of the joint range, beyond it
    too, or jittering near the command (inside the stopping distance), each maybe with a
    speed/acceleration scale change at some tick of it; NaN targets, holds, config changes
    between motions, transitions, alone or as disengage (e-stop, reset), wait, engage."""
    fractions = _per_joint(j, -0.5, 1.5)
    ticks = st.integers(1, 60)
    external = st.one_of(st.just(1.0), _floats(0.0, 1.5), st.just(float('nan')))
    change = st.one_of(st.none(), st.tuples(st.integers(0, 59), _floats(*scale),
                                            _floats(*scale)))
    motion = st.one_of(
        st.tuples(st.just('goto'), ticks, fractions, external, change),
        st.tuples(st.just('ramp'), ticks, fractions, fractions, external, change),
        st.tuples(st.just('stream'), st.integers(1, 10),
                  st.lists(fractions, min_size=1, max_size=8), external, change),
        st.tuples(st.just('jitter'), st.integers(1, 10),
                  st.lists(_per_joint(j, -0.05, 0.05), min_size=1, max_size=8), external,
                  change),
    )
    event = st.one_of(
        st.tuples(st.just('nan'), st.integers(1, 3)),
        st.tuples(st.just('hold'), st.integers(1, 40), st.booleans()),
        st.tuples(st.just('scale'), _floats(*scale), _floats(*scale)),
        st.sampled_from([('engage',), ('disengage',), ('estop',), ('reset',)]),
        # stopped and engaged again a few ticks later, often before the joint is at rest
        st.tuples(st.sampled_from(['pause', 'estop_reset']), st.integers(0, 3)),
    )
    return st.tuples(motion, st.lists(st.one_of(motion, event), max_size=8)).map(
        lambda first_rest: [first_rest[0], *first_rest[1]])


@st.composite
def episodes(draw, **robot_kw):
    robot = draw(robots(**robot_kw))
    return robot, draw(segments(len(robot.lower), robot_kw.get('scale', (0.05, 1.0))))


def _ticks(robot, segment, f):
    """(target, fault, external_scale, scale change or None) per tick of one segment."""
    kind, span = segment[0], robot.upper - robot.lower
    if kind in ('goto', 'ramp', 'stream', 'jitter'):
        change, external = segment[-1], segment[-2]
        changes = {change[0]: change[1:]} if change else {}
        if kind in ('stream', 'jitter'):
            ticks, i = segment[1], 0
            for frac in segment[2]:
                target = (f.cmd if kind == 'jitter' else robot.lower) + span * frac
                for _ in range(ticks):
                    yield target, '', external, changes.get(i)
                    i += 1
        else:
            n = segment[1]
            for i in range(n):
                frac = segment[2] if kind == 'goto' else \
                    segment[2] + (segment[3] - segment[2]) * (i + 1) / n
                yield robot.lower + span * frac, '', external, changes.get(i)
    elif kind == 'nan':
        for _ in range(segment[1]):
            yield np.where(np.arange(len(span)) == 0, np.nan, robot.start), '', 1.0, None
    elif kind in ('pause', 'estop_reset'):
        for _ in range(segment[1]):
            yield None, '', 1.0, None
    else:  # hold: a fault reported with a valid target, or no target
        target, fault = (robot.start, 'camera stale') if segment[2] else (None, '')
        for _ in range(segment[1]):
            yield target, fault, 1.0, None


BEFORE = {'pause': ('disengage',), 'estop_reset': ('estop',)}  # transitions around ticks
AFTER = {'pause': ('engage',), 'estop_reset': ('reset', 'engage')}


def _transition(f, kind, measured):
    if kind == 'engage':
        if f.state != 'estop':  # refused there, by design
            f.engage(measured)
    else:
        getattr(f, kind)()


def simulate(robot, plan, raise_acceleration_only=False, f=None) -> Run:
    """The arm follows the command exactly (measured = last command)."""
    if f is None:
        f = SafetyFilter(robot.lower, robot.upper, robot.vmax, robot.amax, robot.config,
                         robot.commanded)
        f.engage(robot.start)

    def rescale(speed_scale, acceleration_scale):
        if raise_acceleration_only:
            acceleration_scale = max(acceleration_scale, f.config.acceleration_scale)
        f.config = replace(f.config, speed_scale=speed_scale,
                           acceleration_scale=acceleration_scale)

    xs, vs = [f.cmd.copy()], [f.vel.copy()]
    accel, speed = [], []
    for segment in plan:
        kind = segment[0]
        if kind == 'scale':
            rescale(*segment[1:])
            continue
        if kind in ('engage', 'disengage', 'estop', 'reset'):
            _transition(f, kind, xs[-1])
            continue
        for before in BEFORE.get(kind, ()):
            _transition(f, before, xs[-1])
        for target, fault, external, change in _ticks(robot, segment, f):
            if change:
                rescale(*change)
            cmd = f.step(target, xs[-1], robot.dt, fault, external)
            xs.append(cmd.positions)
            vs.append(cmd.velocities)
            ext = min(max(external, 0.0), 1.0) if np.isfinite(external) else 0.0
            accel.append(robot.amax * f.config.acceleration_scale)
            speed.append(robot.vmax * f.config.speed_scale * ext)
        for after in AFTER.get(kind, ()):
            _transition(f, after, xs[-1])
    j = len(robot.lower)
    return Run(robot, np.array(xs), np.array(vs), np.array(accel).reshape(-1, j),
               np.array(speed).reshape(-1, j))


def velocity_sources(run):
    """(name, velocities, absolute tolerance): reported, and finite differences of positions,
    whose rounding (and the filter's snapping onto a goal reached up to rounding) is that of
    the positions divided by dt."""
    fd = np.concatenate([run.v[:1], np.diff(run.x, axis=0) / run.robot.dt])
    rounding = 32 * np.finfo(float).eps * max(float(np.max(np.abs(run.x))), 1.0) / run.robot.dt
    return [('reported', run.v, 1e-12), ('finite difference', fd, rounding)]


def allowed_velocity_change(run, v, respect_hard_limit=True):
    """Per tick allowed |dv|: the scaled limit x dt or, with respect_hard_limit, the unscaled
    one where even the continuous stopping distance at the scaled limit, v^2 / (2 a), does not
    fit before the hard limit (a lowered acceleration_scale mid-motion: the documented
    exception, which the filter may only take when the discrete one does not fit either)."""
    r = run.robot
    prev_v, prev_x = v[:-1], run.x[:-1]
    room = np.where(prev_v > 0, r.upper - prev_x, prev_x - r.lower)
    must_brake_harder = respect_hard_limit & (prev_v ** 2 / (2 * run.accel) > room)
    return np.where(must_brake_harder, r.amax, run.accel) * r.dt


def _assert_acceleration_within_limits(run, respect_hard_limit):
    for name, v, tol in velocity_sources(run):
        dv = np.abs(np.diff(v, axis=0))
        allowed = allowed_velocity_change(run, v, respect_hard_limit)
        ratio = float(np.max(dv / allowed, initial=0.0))
        assert np.all(dv <= allowed * (1 + REL) + 2 * tol), f'{name}: {ratio:.3f} x the limit'


# --- properties --------------------------------------------------------------------------------

@PROPERTY
@given(episodes())
def test_command_never_leaves_the_position_limits(episode):
    run = simulate(*episode)
    r = run.robot
    assert np.all(run.x >= r.lower) and np.all(run.x <= r.upper)


@PROPERTY
@given(episodes())
def test_speed_never_exceeds_the_unscaled_velocity_limit(episode):
    run = simulate(*episode)
    for name, v, tol in velocity_sources(run):
        assert np.all(np.abs(v) <= run.robot.vmax * (1 + REL) + tol), name


@PROPERTY
@given(episodes())
def test_speed_stays_within_the_scaled_limit_or_comes_down_to_it_at_the_acceleration_limit(
        episode):
    run = simulate(*episode)
    for name, v, tol in velocity_sources(run):
        bound = np.maximum(run.speed, np.abs(v[:-1]) - run.accel * run.robot.dt)
        assert np.all(np.abs(v[1:]) <= bound * (1 + REL) + tol), name


@PROPERTY
@given(episodes())
def test_acceleration_never_exceeds_the_scaled_limit_while_it_is_not_lowered(episode):
    run = simulate(*episode, raise_acceleration_only=True)
    _assert_acceleration_within_limits(run, respect_hard_limit=False)


@PROPERTY
@given(episodes())
def test_lowered_acceleration_scale_applies_at_once_unless_the_hard_limit_needs_more(episode):
    run = simulate(*episode)
    _assert_acceleration_within_limits(run, respect_hard_limit=True)


@PROPERTY
@given(episodes())
def test_command_stays_out_of_the_margin_while_the_acceleration_is_not_lowered(episode):
    # The margin is what braking at a lowered acceleration_scale has to spare: ordinary motion,
    # targets behind the joint and holds included, must not use it.
    robot, plan = episode
    m = robot.config.position_margin
    robot = replace(robot, start=np.clip(robot.start, robot.lower + m, robot.upper - m))
    run = simulate(robot, plan, raise_acceleration_only=True)
    rounding = 8 * np.finfo(float).eps * np.maximum(np.abs(robot.lower), np.abs(robot.upper))
    assert np.all(run.x >= robot.lower + m - rounding)
    assert np.all(run.x <= robot.upper - m + rounding)


@st.composite
def rushes_at_a_limit(draw):
    """Full speed toward targets beyond a limit, acceleration_scale lowered at a random tick
    (often too late to stop inside the limit at the new value), then back."""
    robot = draw(robots())
    robot = replace(robot, config=replace(robot.config, speed_scale=1.0, acceleration_scale=1.0))
    j = len(robot.lower)
    beyond = draw(st.lists(st.sampled_from([-0.5, 1.5]), min_size=j, max_size=j))
    lowered = (draw(st.integers(0, 150)), draw(_floats(0.05, 1.0)), draw(_floats(0.02, 0.5)))
    return robot, [('goto', 200, np.array(beyond), 1.0, lowered),
                   ('goto', 100, 1.0 - np.array(beyond), 1.0, None)]


@settings(PROPERTY, max_examples=35)
@given(rushes_at_a_limit())
def test_acceleration_lowered_while_rushing_at_a_limit_still_stops_inside_it(episode):
    run = simulate(*episode)
    r = run.robot
    assert np.all(run.x >= r.lower) and np.all(run.x <= r.upper)
    _assert_acceleration_within_limits(run, respect_hard_limit=True)


@settings(PROPERTY, max_examples=35)
@given(rushes_at_a_limit())
def test_a_lowered_acceleration_scale_never_brings_a_joint_to_a_hard_limit(episode):
    # With a margin, braking at the lowered scale comes to rest inside the margin, and where
    # that does not fit before the hard limit it stops half the margin short of it: the hard
    # limit is never reached, let alone at speed.
    robot, plan = episode
    m = max(robot.config.position_margin, 0.05 * float(np.min(robot.upper - robot.lower)))
    robot = replace(robot, config=replace(robot.config, position_margin=m),
                    start=np.clip(robot.start, robot.lower + m, robot.upper - m))
    run = simulate(robot, plan)
    assert np.all(run.x > robot.lower) and np.all(run.x < robot.upper)


@st.composite
def interrupted_motions(draw):
    """Motions cut by disengage or e-stop (+ reset) at random ticks and engaged again a few
    ticks later, mostly while the joint is still braking."""
    robot = draw(robots())
    j = len(robot.lower)
    plan = []
    for _ in range(draw(st.integers(1, 4))):
        plan.append(('goto', draw(st.integers(1, 60)), draw(_per_joint(j, -0.5, 1.5)), 1.0, None))
        plan.append((draw(st.sampled_from(['pause', 'estop_reset'])), draw(st.integers(0, 5))))
    return robot, [*plan, ('goto', 30, draw(_per_joint(j, -0.5, 1.5)), 1.0, None)]


@settings(PROPERTY, max_examples=30)
@given(interrupted_motions())
def test_engaging_again_while_still_braking_keeps_every_limit(episode):
    run = simulate(*episode)
    r = run.robot
    assert np.all(run.x >= r.lower) and np.all(run.x <= r.upper)
    _assert_acceleration_within_limits(run, respect_hard_limit=False)


@settings(PROPERTY, max_examples=25)
@given(episodes())
def test_uncommanded_joints_never_move(episode):
    run = simulate(*episode)
    still = ~run.robot.commanded
    assert np.all(run.x[:, still] == run.robot.start[still])
    assert not np.any(run.v[:, still])


@settings(PROPERTY, max_examples=30)
@given(episodes(dt=(0.005, 0.05), vmax=(0.5, 3.0), amax=(2.0, 50.0), scale=(0.3, 1.0)),
       st.data())
def test_a_stationary_target_is_reached_exactly_in_bounded_time_and_held(episode, data):
    robot, plan = episode
    f = SafetyFilter(robot.lower, robot.upper, robot.vmax, robot.amax, robot.config,
                     robot.commanded)
    f.engage(robot.start)
    simulate(robot, plan, f=f)
    f.reset()
    f.engage(f.cmd)
    span = robot.upper - robot.lower
    target = robot.lower + span * data.draw(_per_joint(len(span), -0.5, 1.5))
    m = f.config.position_margin
    goal = np.where(robot.commanded, np.clip(target, robot.lower + m, robot.upper - m), f.cmd)
    a = robot.amax * f.config.acceleration_scale
    vs = robot.vmax * f.config.speed_scale
    # stop from any speed, speed up, cross the range, slow down; a tick of rounding per phase
    bound = int(np.max(np.ceil((2 * robot.vmax / a + 2 * vs / a + span / vs) / robot.dt))) + 10

    def at_rest_on_the_goal():
        cmd = f.step(target, f.cmd, robot.dt)
        return np.array_equal(cmd.positions, goal) and not np.any(cmd.velocities)

    assert any(at_rest_on_the_goal() for _ in range(bound)), f'not there in {bound} ticks'
    assert all(at_rest_on_the_goal() for _ in range(20))  # and no chattering once there
