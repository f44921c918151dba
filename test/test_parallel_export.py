"""Graphs exported in worker processes (vla_ros/export/parallel.py) are the graphs a single
process exports, and a model that does not rebuild from its config and weights is refused."""

from __future__ import annotations

import json

import pytest


def _graph_bytes(path) -> bytes:
    """A graph without the exporter's per-node metadata (its stack traces name the tracing
    process's generated-code counters, which differ from process to process)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    return model.SerializeToString()


def _export(tmp_path, name, jobs, mutate=None, progress=lambda _: None):
    import torch
    from families import WORDS, export_spec, tiny_configs

    from vla_ros.export.exporter import export_package
    from vla_ros.export.tokenizer import word_tokenizer
    from vla_ros.model.vla import VLA

    cfg = tiny_configs()['evo1']
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    if mutate:
        mutate(model)
    return export_package(model, tmp_path / name, export_spec('evo1'),
                          word_tokenizer(WORDS, cfg.lm.vocab_size), jobs=jobs,
                          progress=progress)


@pytest.fixture(scope='module')
def serial_and_parallel(tmp_path_factory, exported):
    """The same tiny Evo-1 exported in one process and by worker processes (the session's
    package where the default ran it in parallel, as it does on a machine with 2 CPUs)."""
    from families import EXPORT_LOG

    tmp = tmp_path_factory.mktemp('parallel')
    serial = _export(tmp, 'serial', 1)
    if any('worker processes' in line for line in EXPORT_LOG['evo1']):
        return serial, exported['evo1'][1], EXPORT_LOG['evo1']
    lines = []
    return serial, _export(tmp, 'parallel', 2, progress=lines.append), lines


def test_parallel_export_writes_the_graphs_one_process_writes(serial_and_parallel):
    serial, par, _ = serial_and_parallel
    s, p = serial.manifest, par.manifest
    assert [g.name for g in p.graphs] == [g.name for g in s.graphs]
    for gs, gp in zip(s.graphs, p.graphs, strict=True):
        assert (gp.inputs, gp.outputs, gp.layers, gp.role) == (gs.inputs, gs.outputs, gs.layers,
                                                                gs.role)
        assert set(gp.variants) == set(gs.variants) == {'fp32', 'fp16'}
        for v in gs.variants:
            assert _graph_bytes(par.root / gp.variants[v].file) == \
                _graph_bytes(serial.root / gs.variants[v].file), f'{gs.name} {v} differs'


def test_parallel_export_leaves_no_scratch_files(serial_and_parallel):
    _, par, _ = serial_and_parallel
    assert sorted(p.name for p in par.root.iterdir()) == ['graphs', 'manifest.json',
                                                         'tokenizer.json']
    json.loads((par.root / 'manifest.json').read_text())


def test_a_model_that_does_not_rebuild_from_its_config_is_refused(tmp_path):
    from vla_ros.export.exporter import ExportError

    def scale_rotary(model):  # a non-persistent buffer: not in the state_dict
        model.decoder.rotary_emb.inv_freq.mul_(3.0)

    with pytest.raises(ExportError, match='rebuilt from its config and weights'):
        _export(tmp_path, 'odd', 2, mutate=scale_rotary)


def test_parallel_export_reports_every_graph_once(serial_and_parallel):
    _, pkg, lines = serial_and_parallel
    assert any('worker processes' in line for line in lines), lines
    n = sum(g.role != 'segment_chain' for g in pkg.manifest.graphs)  # the chain comes after
    done = sorted(int(line.split('[')[1].split('/')[0]) for line in lines if '] ' in line)
    assert done == list(range(1, n + 1))


def test_idle_cpus_leave_out_the_busy_ones(monkeypatch):
    from vla_ros.export import parallel

    monkeypatch.setattr(parallel, 'available_cpus', lambda: 4)
    monkeypatch.setattr(parallel.os, 'getloadavg', lambda: (2.6, 0.0, 0.0))
    assert parallel.idle_cpus() == 2  # this process's own CPU counts as free
    monkeypatch.setattr(parallel.os, 'getloadavg', lambda: (9.0, 0.0, 0.0))
    assert parallel.idle_cpus() == 1
    monkeypatch.setattr(parallel.os, 'getloadavg', lambda: (1.1, 0.0, 0.0))
    assert parallel.idle_cpus() == 4


def test_auto_jobs_stays_within_idle_cpus_graphs_and_memory(monkeypatch):
    from vla_ros.export import parallel

    monkeypatch.setattr(parallel, 'idle_cpus', lambda: 8)
    monkeypatch.setattr(parallel, 'available_memory_bytes', lambda: 6 << 30)
    assert parallel.auto_jobs(3, 1 << 20) == 3
    assert parallel.auto_jobs(20, 1 << 20) == 5  # 6 GiB / (1 GiB + 2 MiB) per worker
    assert parallel.auto_jobs(20, 4 << 30) == 1
    monkeypatch.setattr(parallel, 'available_memory_bytes', lambda: None)
    assert parallel.auto_jobs(20, 1 << 20) == 8
