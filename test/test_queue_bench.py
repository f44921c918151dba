"""The closed-loop queue bench (simulated time, so these are behaviours, not timings)."""

import json

from vla_ros.cli import main
from vla_ros.runtime.bench.queue_bench import Case, QueueBenchConfig, run_bench, summarize

SHORT = QueueBenchConfig(duration_s=6.0, seeds=(0,))


def test_rtc_blend_changes_velocity_at_switches_less_than_compensated_replace():
    replace, blend = run_bench(SHORT, [Case('replace'), Case('rtc_blend')])
    assert blend.dvel_max_rad_s * 3 <= replace.dvel_max_rad_s
    assert blend.tracking_rms_rad <= replace.tracking_rms_rad * 1.2


def test_ordinary_motion_is_not_counted_as_a_discontinuity():
    # One chunk per 0.2 s of an exactly predicted reference, no latency: every switch lands
    # on the same trajectory, so the velocity change beyond the reference's is ~0.
    cfg = QueueBenchConfig(duration_s=4.0, seeds=(0,), latency_s=0.0, jitter_s=0.0,
                           tail_prob=0.0, chunk_offset_std=0.0, step_noise_std=0.0,
                           velocity_limit=100.0)
    (r,) = run_bench(cfg, [Case('replace')])
    assert r.max_jump_position_rad > 1e-3  # the command does move at switches
    assert r.dvel_max_rad_s < 0.05


def test_averaging_two_modes_leaves_the_command_between_them():
    replace, average = run_bench(SHORT, [Case('replace', scenario='bimodal'),
                                         Case('average', scenario='bimodal')])
    assert average.mode_rms_rad > 3 * replace.mode_rms_rad
    assert average.mode_rms_rad > 0.3 * SHORT.mode_rad


def test_without_latency_the_naive_client_has_no_lag_penalty():
    cfg = QueueBenchConfig(duration_s=6.0, seeds=(0,), latency_s=0.0, jitter_s=0.0,
                           tail_prob=0.0)
    naive, comp = run_bench(cfg, [Case('replace', False), Case('replace', True)])
    assert naive.tracking_rms_rad == comp.tracking_rms_rad


def test_the_headline_baseline_is_compensated_replace():
    summary = summarize(SHORT, run_bench(SHORT, [Case('replace', False), Case('replace'),
                                                 Case('rtc_blend')]))
    h = summary['headline']['unimodal']
    assert h['baseline'] == 'replace with latency compensation' and h['best'] == 'rtc_blend'


def test_cli_writes_json_and_plots(tmp_path, capsys):
    out = tmp_path / 'queue.json'
    assert main(['bench', 'queue', '--json', '--duration-s', '3', '--seeds', '1',
                 '--out', str(out), '--plots', str(tmp_path / 'plots')]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert {(r['strategy'], r['scenario']) for r in printed['results']} >= {
        ('replace', 'unimodal'), ('rtc_blend', 'bimodal'), ('temporal_ensemble', 'unimodal')}
    assert (tmp_path / 'plots' / 'queue_bimodal.png').exists()


def test_switches_are_split_by_whether_their_chunk_came_later_than_estimated():
    from dataclasses import replace as with_

    steady = QueueBenchConfig(duration_s=6.0, seeds=(0,), jitter_s=0.0, tail_prob=0.0)
    (r,) = run_bench(steady, [Case('rtc_blend')])
    # A constant latency (3 steps) is estimated exactly once the estimator has a sample: it
    # skips its first 2 delays (cold start) and guesses 0.1 s (2 steps) until then.
    assert r.late_switches <= 3
    (r,) = run_bench(with_(steady, tail_prob=0.5, tail_s=0.3), [Case('rtc_blend')])
    assert r.late_switches > 1 and r.dvel_max_on_time_rad_s is not None
    assert max(r.dvel_max_on_time_rad_s, r.dvel_max_late_rad_s) == r.dvel_max_rad_s
