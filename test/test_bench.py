"""`vla-ros bench PKG`: the report a user reads (run on a tiny package; no timing asserts)."""

import json

from vla_ros.cli import main
from vla_ros.export.torch_backend import bench_backends
from vla_ros.runtime.bench.package_bench import BenchConfig, bench_package, write_plots


def test_bench_reports_stages_exits_and_the_torch_ratio(exported, tmp_path):
    _, pkg, ckpt = exported['evo1']
    cfg = BenchConfig(warmup=1, runs=3, deadline_ms=1000.0, torch_checkpoint=str(ckpt))
    report = bench_package(pkg, cfg, progress=lambda _: None,
                           extra_backends=bench_backends(cfg))
    ort = report['backends']['onnxruntime']
    full = ort['modes']['full']
    assert set(full['latency_ms']) == {'preprocess', 'vision', 'embed', 'segment', 'head',
                                       'total'}
    assert full['exit_histogram'] == {'3': 3} and full['backbone_compute_fraction'] == 1.0
    deadline = ort['modes']['deadline']
    assert deadline['deadline_ms'] == 1000.0
    assert deadline['bound_ms'] == deadline['deadline_ms'] + deadline['segment_ms']
    assert deadline['met'] == (deadline['p99_ms'] <= deadline['bound_ms'])
    assert len(deadline['total_ms_samples']) == 3
    flow = ort['flow_truncation']
    assert flow['truncated_steps'] == 2 and flow['full_steps'] == 10
    n = len(pkg.manifest.exits.layers)
    assert len(flow['head_ratio_vs_full']) == len(flow['exit_head_ratio_vs_full']) == n
    # the head time up to exit k includes every exit before it
    assert flow['head_ratio_vs_full'] == sorted(flow['head_ratio_vs_full'])
    g = ort['gflops']
    assert g['flop_per_inference'] > 0 and g['ceiling'] > 0
    assert g['fraction'] == g['achieved'] / g['ceiling']
    assert 'torch' in report['backends'] and report['torch_over_onnxruntime_p50'] > 0
    paths = write_plots(report, tmp_path / 'plots')
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bench_cli_prints_json(exported, capsys):
    pkg = exported['vla_adapter'][1]
    assert main(['bench', str(pkg.root), '--json', '--runs', '2', '--warmup', '0']) == 0
    report = json.loads(capsys.readouterr().out)
    assert report['package'] == 'vla_adapter'
    assert 'flow_truncation' not in report['backends']['onnxruntime']
