"""Models for the pick tasks: make-default on the physics tabletop (the gripper in the state and
the actions), their episodes under the full ROS pipeline, offline rollouts, and the GIF a
person watches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def pick_package(tmp_path_factory):
    """A pick-and-place package for the UR5e made by make-default in two training steps."""
    from vla_ros.sim.train import make_default

    tmp = tmp_path_factory.mktemp('pick')
    return make_default(str(tmp / 'pkg'), str(tmp / 'work'), robot='ur5e', episodes=2,
                        minutes=30.0, max_steps=2, progress=lambda _: None, task='pick_place')


def test_resume_trains_on_from_the_last_run_and_adds_up_both(pick_package, tmp_path):
    import torch

    from vla_ros.export.checkpoint import load_checkpoint
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.sim.train import make_default

    work = Path(pick_package).parent / 'work'
    first = load_checkpoint(work / 'checkpoint')[0]
    out = make_default(str(tmp_path / 'pkg'), str(work), robot='ur5e', episodes=2,
                       minutes=30.0, max_steps=1, progress=lambda _: None, task='pick_place',
                       resume=True)
    training = load_package(out).manifest.provenance['training']
    assert training['steps'] == 1 and training['resumed_from']['steps'] == 2
    assert training['total_steps'] == 3
    # it started from the first run's weights: one step moved them only a little
    second = load_checkpoint(work / 'checkpoint')[0]
    a = torch.cat([p.flatten() for p in first.parameters()])
    b = torch.cat([p.flatten() for p in second.parameters()])
    assert 0 < (a - b).abs().max() < 0.01
    with pytest.raises(FileNotFoundError, match='no finished run'):
        make_default(str(tmp_path / 'x'), str(tmp_path / 'empty'), robot='ur5e', episodes=2,
                     max_steps=1, progress=lambda _: None, task='pick_place', resume=True)


def test_make_default_for_pick_and_place_adds_the_gripper_and_records_the_task(pick_package):
    from vla_ros.adapters.adapter import RobotAdapter
    from vla_ros.adapters.robots import robot_spec
    from vla_ros.runtime.package.loader import load_package
    from vla_ros.sim.pick_scene import pick_words

    m = load_package(pick_package).manifest
    joints = robot_spec('ur5e').joint_names
    assert m.state.names == (*joints, 'gripper') and m.action.names == (*joints, 'gripper')
    assert m.name == 'vla-ros-default-pick-place-ur5e'
    prov = m.provenance
    assert prov['task'] == 'pick_place' and prov['episodes'] == 2
    assert 0.0 <= prov['expert_success'] <= 1.0
    assert prov['training']['steps'] == 2 and 'first_frame_choice_per_exit' not in \
        prov['training']
    vocab = json.loads((Path(pick_package) / m.prompt.tokenizer_file).read_text())
    assert set(pick_words()) <= set(json.dumps(vocab).replace('"', ' ').split())
    # the runtime maps the gripper entry onto the Robotiq action and reads it back
    adapter = RobotAdapter(robot_spec('ur5e'), m.state.names, m.action.names)
    assert [g.action_server for _, g in adapter.action_grippers] == [
        'robotiq_gripper_controller/gripper_cmd']


def test_agibot_pick_names_are_its_right_arm_and_right_gripper():
    from vla_ros.sim.train import task_names

    names = task_names('agibot_g1', 'pick')
    assert names == (*(f'idx6{i}_arm_r_joint{i}' for i in range(1, 8)), 'right_gripper')
    assert task_names('xarm6', 'pick_place')[-1] == 'gripper'
    assert task_names('xarm6') == tuple(f'joint{i}' for i in range(1, 7))


def test_offline_pick_rollouts_step_the_physics_with_the_model(pick_package):
    from vla_ros.sim.rollout import rollout

    res = rollout(str(pick_package), [5], robot='ur5e', max_steps=6, task='pick_place')
    # whole chunks' first 5 actions run: two inferences reach 6 steps
    assert len(res) == 1 and res[0].steps == 10 and len(res[0].exits) == 2
    assert 'put the' in res[0].instruction


@pytest.mark.ros
def test_pick_episodes_run_over_the_real_services_and_write_a_readable_gif(pick_package,
                                                                          tmp_path):
    from PIL import Image

    from vla_ros.ros.evaluation.episodes import run_episodes, write_media

    report = run_episodes(str(pick_package), 'ur5e', episodes=1, seed0=7100, timeout_s=2.5,
                          record_episodes=1, progress=lambda _: None, task='pick_place',
                          view_rate_hz=5.0)
    r = report['results'][0]
    assert r['seed'] == 7100 and r['destination'] in ('bowl', 'red', 'green', 'blue')
    assert report['inferences'] > 0 and report['inference_failures'] == 0
    frames = report['frames']
    assert frames and frames[0].shape == (360, 480, 3)  # the third-person view, not a camera
    assert frames[0].std() > 20  # a rendered scene, not a blank frame
    assert len(report['captions']) == len(frames) and r['instruction'] in report['captions'][0]
    assert report['frame_s'] == pytest.approx(0.2)
    write_media(report, tmp_path)
    gif = Image.open(tmp_path / 'demo.gif')
    # (identical consecutive frames are merged into one longer frame)
    assert gif.size == (480, 360) and 2 <= gif.n_frames <= len(frames)


def test_a_gif_of_small_camera_frames_is_enlarged_and_captioned(tmp_path):
    from PIL import Image

    from vla_ros.ros.evaluation.episodes import write_gif

    frames = [np.full((96, 96, 3), v, np.uint8) for v in (0, 80)]
    write_gif(tmp_path / 'a.gif', frames, ['1/1  "put the red block in the bowl"', 'x - success'])
    gif = Image.open(tmp_path / 'a.gif')
    assert gif.size == (288, 288) and gif.n_frames == 2
    first = np.asarray(gif.convert('RGB'))
    assert first[-10:].max() > 200  # the caption's white text on the black band
    assert first[:200].max() == 0


def test_a_pick_demo_without_a_pick_model_is_a_clear_error(tmp_path, capsys):
    from vla_ros.cli import main

    assert main(['demo', '--task', 'pick_place', '--robot', 'fr3', '--out',
                 str(tmp_path / 'demo')]) == 2
    err = capsys.readouterr().err
    assert 'no pick_place model for the fr3' in err and 'make-default --task pick_place' in err
