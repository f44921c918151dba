"""The closed-loop queue bench (simulated time, so these are behaviours, not timings)."""

import json

from vla_ros.cli import main
from vla_ros.runtime.bench.queue_bench import Case, QueueBenchConfig, run_bench, summarize

SHORT = QueueBenchConfig(duration_s=6.0, seeds=(0,))


def test_compensation_and_blending_beat_naive_replace_at_150ms():
    results = run_bench(SHORT, [Case('replace', False), Case('rtc_blend', True)])
    naive, blend = results
    assert blend.max_jump_position_rad * 3 <= naive.max_jump_position_rad
    assert blend.tracking_rms_rad <= naive.tracking_rms_rad
    assert blend.max_discontinuity_rad < 1e-9  # RTC keeps the plan continuous


def test_without_latency_the_naive_client_has_no_lag_penalty():
    cfg = QueueBenchConfig(duration_s=6.0, seeds=(0,), latency_s=0.0, jitter_s=0.0)
    naive, comp = run_bench(cfg, [Case('replace', False), Case('replace', True)])
    assert naive.tracking_rms_rad == comp.tracking_rms_rad


def test_summary_names_the_best_blend_and_its_ratio():
    summary = summarize(SHORT, run_bench(SHORT, [Case('replace', False), Case('average', True),
                                                 Case('rtc_blend', True)]))
    h = summary['headline']
    assert h['best'] in ('average', 'rtc_blend') and h['jump_reduction_x'] > 1


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / 'queue.json'
    assert main(['bench', 'queue', '--json', '--duration-s', '3', '--seeds', '1',
                 '--out', str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert {r['strategy'] for r in printed['results']} >= {'replace', 'rtc_blend',
                                                          'temporal_ensemble'}
