"""The physics tabletop: fingers that close on blocks, blocks that are lifted and placed, the
success detectors, and the scripted pick-and-place expert."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.sim.pick_expert import PickExpert, collect_pick, pick_episode_task
from vla_ros.sim.pick_scene import (
    BLOCK_HALF,
    STROKE_M,
    PickPlaceScene,
    pick_words,
    sample_pick_episode,
)
from vla_ros.sim.scene import COLORS


@pytest.fixture(scope='module')
def scene():
    s = PickPlaceScene('xarm6', (32, 32))
    yield s
    s.close()


def _move(s: PickPlaceScene, tip, closure: float, steps: int = 10) -> None:
    q0, q1 = s.q.copy(), s.ik(np.asarray(tip, float), seed=s.q)
    for k in range(1, steps + 1):
        s.step(q0 + (q1 - q0) * k / steps, closure, 0.1)


def test_layouts_are_reproducible_apart_and_name_a_destination():
    for seed in range(40):
        ep = sample_pick_episode(seed)
        again = sample_pick_episode(seed)
        assert ep.describe() == again.describe()
        xy = np.array([p[:2] for p in ep.blocks.values()])
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(3)
        assert d.min() >= 0.11
        assert (np.linalg.norm(xy - ep.bowl[:2], axis=1) >= 0.11 + 0.06).all()
        assert ep.destination == 'bowl' or ep.destination in set(COLORS) - {ep.target}
        assert ep.target in ep.instruction and ep.destination in ep.instruction
        assert set(ep.instruction.split()) <= set(pick_words())
    pick = sample_pick_episode(3, 'pick', 'blue')
    assert pick.destination == '' and 'blue' in pick.instruction
    with pytest.raises(ValueError, match='destination'):
        sample_pick_episode(3, 'pick_place', 'red', 'red')
    with pytest.raises(ValueError, match='unknown task'):
        sample_pick_episode(3, 'push')


def test_fingers_stall_on_a_block_and_lift_it_by_friction(scene):
    ep = scene.reset(3, 'green', 'bowl')
    start = ep.blocks['green']
    _move(scene, start + [0, 0, 0.12], 0.0)
    _move(scene, start + [0, 0, 0.002], 0.0)
    assert scene.held() == '' and scene.closure() < 0.05
    _move(scene, start + [0, 0, 0.002], 1.0, steps=8)
    # closed on a 5 cm block: the fingers stop at its width, far from closed
    assert scene.held() == 'green'
    # (the contact solver lets the pads sink a few millimetres in)
    assert scene.closure() == pytest.approx(1 - 2 * BLOCK_HALF / STROKE_M, abs=0.07)
    _move(scene, start + [0, 0, 0.15], 1.0)
    st = scene.status()
    assert st['held'] == 'green' and st['lifted'] and not st['success']
    assert st['target_at'][2] > 0.12  # carried up with the fingers
    _move(scene, start + [0, 0, 0.15], 0.0, steps=8)  # let go: it falls back to the table
    assert scene.held() == '' and scene.block('green')[0][2] == pytest.approx(BLOCK_HALF,
                                                                               abs=0.005)


def test_open_fingers_lift_nothing(scene):
    ep = scene.reset(4)
    start = ep.blocks[ep.target]
    _move(scene, start + [0, 0, 0.12], 0.0)
    _move(scene, start + [0, 0, 0.002], 0.0)
    _move(scene, start + [0, 0, 0.15], 0.0)
    assert not scene.status()['lifted']
    np.testing.assert_allclose(scene.block(ep.target)[0], start, atol=0.01)


def test_place_in_the_bowl_succeeds_only_once_released(scene):
    ep = scene.reset(3, 'green', 'bowl')
    start = ep.blocks['green']
    _move(scene, start + [0, 0, 0.12], 0.0)
    _move(scene, start + [0, 0, 0.002], 0.0)
    _move(scene, start + [0, 0, 0.002], 1.0, steps=8)
    _move(scene, start + [0, 0, 0.17], 1.0)
    _move(scene, [*ep.bowl[:2], 0.17], 1.0, steps=15)
    _move(scene, [*ep.bowl[:2], 0.045], 1.0)
    st = scene.status()
    assert st['placed'] and st['held'] == 'green' and not st['success']  # still in the hand
    _move(scene, [*ep.bowl[:2], 0.045], 0.0, steps=6)
    _move(scene, [*ep.bowl[:2], 0.15], 0.0, steps=6)
    assert scene.status()['success']


@pytest.mark.parametrize('robot', ['xarm6', 'fr3'])
def test_expert_picks_and_places_on_every_destination(robot):
    s = PickPlaceScene(robot, (16, 16))
    try:
        ok = []
        for e in range(6):  # one layout: each block into the bowl, each onto the next one
            ep = s.reset(*pick_episode_task(11, e, 'pick_place'))
            expert = PickExpert(s, horizon=8)
            expert.plan(ep)
            q = s.home.copy()
            for _ in range(100):
                chunk = expert.chunk(q)
                assert chunk.shape == (8, len(q) + 1)
                assert set(np.unique(chunk[:, -1])) <= {0.0, 1.0}
                assert np.abs(chunk[0, :-1] - q).max() <= 0.08 + 1e-9
                q = chunk[0, :-1]
                s.step(q, chunk[0, -1], 0.1)
                if s.success():
                    break
            ok.append(s.success())
        assert sum(ok) >= 5, ok
    finally:
        s.close()


def test_stacking_needs_the_block_on_top_of_the_other(scene):
    ep = scene.reset(5, 'red', 'blue')
    assert ep.instruction == 'put the red block on the blue block'
    under = scene.block('blue')[0]
    # dropped beside the blue block: not placed
    src = ep.blocks['red']
    _move(scene, src + [0, 0, 0.12], 0.0)
    _move(scene, src + [0, 0, 0.002], 0.0)
    _move(scene, src + [0, 0, 0.002], 1.0, steps=8)
    _move(scene, src + [0, 0, 0.17], 1.0)
    beside = under + [0.0, 0.09, 0.0]
    _move(scene, [*beside[:2], 0.17], 1.0, steps=15)
    _move(scene, [*beside[:2], 0.03], 1.0)
    _move(scene, [*beside[:2], 0.03], 0.0, steps=6)
    _move(scene, [*beside[:2], 0.15], 0.0, steps=6)
    st = scene.status()
    assert not st['placed'] and not st['success']


def test_collect_records_the_gripper_in_state_and_actions():
    d = collect_pick('xarm6', 2, image_size=(16, 16), max_steps=80, progress=lambda _: None)
    n = len(d['state'])
    assert d['state'].shape == (n, 7) and d['actions'].shape == (n, 10, 7)
    assert d['scene'].shape == (n, 16, 16, 3)
    assert ((d['state'][:, -1] >= 0) & (d['state'][:, -1] <= 1)).all()
    # the expert closes the gripper at some point of each episode, and the fingers follow
    for e in range(2):
        rows = d['episode'] == e
        assert d['actions'][rows, 0, -1].max() == 1.0
        assert d['state'][rows, -1].max() > 0.3
    assert d['dest_xy'].shape == (n, 2)


def test_each_robot_draws_layouts_it_can_reach_and_a_too_small_workspace_is_refused():
    from vla_ros.sim.scene import sample_layout

    fr3 = PickPlaceScene('fr3', (16, 16), 'pick_place')
    try:
        for seed in range(5):
            ep = fr3.reset(seed)
            for c in COLORS:  # within the FR3's limits, the tool can point down over each
                top = ep.blocks[c] + [0, 0, 0.1]
                assert np.linalg.norm(fr3.tip(fr3.ik(top)) - top) < 0.005
            q = fr3.ik(ep.blocks[ep.target] + [0, 0, 0.1])
            assert (q >= np.array(fr3.lower) - 1e-9).all() and (q <= np.array(fr3.upper)
                                                                + 1e-9).all()
        assert fr3.upper[3] == pytest.approx(-0.1518)  # the FR3's joint 4, not the Panda's
    finally:
        fr3.close()
    with pytest.raises(ValueError, match='no layout of 4 objects fits'):
        sample_layout(np.random.default_rng(0), 4, ((0.3, 0.35), (0.0, 0.05)),
                      lambda d: bool(d.min() >= 0.1))
