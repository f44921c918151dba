"""The shipped default model, the demo's episode loop over real ROS services, and vla-ros eval's
parameter parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_ros.ros.evaluate import parse_assignments, per_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / 'models' / 'default'


def test_parameter_assignments_are_typed_by_the_parameter():
    got = parse_assignments(['policy_mode=full', 'latency_compensation=false',
                             'deadline_ms=150', 'exit_layer=3', 'merge_strategy=replace'])
    assert got == {'policy_mode': 'full', 'latency_compensation': False, 'deadline_ms': 150.0,
                   'exit_layer': 3, 'merge_strategy': 'replace'}


@pytest.mark.parametrize('bad,match', [('nonsense=1', 'unknown vla_policy parameter'),
                                       ('deadline_ms=soon', 'expected a float'),
                                       ('latency_compensation=maybe', 'expected a bool'),
                                       ('policy_mode', 'not NAME=VALUE')])
def test_bad_assignments_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_assignments([bad])


def test_results_are_broken_down_per_target_and_template():
    res = [{'target': 'red', 'instruction': 'touch the red block', 'success': True},
           {'target': 'red', 'instruction': 'tap the red cube', 'success': False},
           {'target': 'blue', 'instruction': 'touch the blue block', 'success': True}]
    got = per_task(res)
    assert got['target=red'] == {'episodes': 2, 'success_rate': 0.5}
    assert got['template=touch'] == {'episodes': 2, 'success_rate': 1.0}
    assert got['template=tap'] == {'episodes': 1, 'success_rate': 0.0}


def test_the_default_model_is_a_valid_calibrated_package_for_the_xarm6():
    from vla_ros.runtime.package import load_package

    m = load_package(DEFAULT).manifest
    assert m.state.names == tuple(f'joint{i}' for i in range(1, 7))
    assert [c.name for c in m.cameras] == ['scene', 'wrist']
    assert m.exits.default_threshold_set and len(m.exits.threshold_sets) > 0
    assert m.provenance['made_by'].startswith('vla-ros make-default')


def test_the_default_model_reaches_blocks_in_offline_rollouts():
    """A regression check of the shipped weights with the runtime (no ROS, no wall clock) on
    layouts it was not trained on. What the model has learned is to put the tool on a block
    (4 of these 10; random weights touch none); which block the instruction names it has not
    learned (1 of 10 is the named one), so that is reported, not asserted."""
    from vla_ros.sim.rollout import rollout

    results = rollout(str(DEFAULT), range(5000, 5010))
    assert sum(r.touching != '' for r in results) >= 3, [r.touching for r in results]


def test_demo_episodes_run_over_the_real_services_and_write_media(tmp_path):
    from vla_ros.ros.episodes import run_episodes, write_media

    report = run_episodes(str(DEFAULT), 'xarm6', episodes=2, seed0=7000, timeout_s=8.0,
                          record_episodes=1, progress=lambda _: None)
    assert report['episodes'] == 2 and len(report['results']) == 2
    assert {r['seed'] for r in report['results']} == {7000, 7001}
    assert report['inferences'] > 0 and report['inference_failures'] == 0
    assert sum(report['exit_histogram'].values()) > 0
    assert report['frames'], 'no scene-camera frames were recorded'
    paths = write_media(report, tmp_path)
    assert (tmp_path / 'demo.gif').stat().st_size > 0
    assert (tmp_path / 'report.png') in paths
