"""Graph calls per inference, counted through the backend interface: the segment chain where
no exit decision falls between segments, one flow context per exit, and unchanged actions."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_policy import observation, with_thresholds

from vla_ros.runtime.backends import load_backend
from vla_ros.runtime.backends.base import Backend
from vla_ros.runtime.package.loader import load_package
from vla_ros.runtime.policy.policy import Policy, PolicyConfig

FAMILIES = ('evo1', 'a1', 'vla_adapter', 'edgevla', 'a1_regression')


class Counting(Backend):
    """A backend that counts graph calls and can hide graphs (as a package without them)."""

    def __init__(self, inner: Backend, hide: tuple[str, ...] = ()) -> None:
        self.inner, self.hide, self.calls = inner, hide, Counter()

    def run(self, graph, feeds):
        self.calls[graph] += 1
        return self.inner.run(graph, feeds)

    def to_host(self, value):
        return self.inner.to_host(value)

    def has_graph(self, graph):
        return graph not in self.hide and self.inner.has_graph(graph)


def counted(pkg, hide=(), **cfg) -> tuple[Policy, Counting]:
    be = Counting(load_backend(pkg), hide)
    return Policy(pkg, be, PolicyConfig(**cfg)), be


@pytest.fixture
def evo1(exported, tmp_path):
    shutil.copytree(exported['evo1'][1].root, tmp_path / 'evo1')
    return load_package(tmp_path / 'evo1')


@pytest.mark.parametrize('family', FAMILIES)
def test_small_packages_are_exported_with_a_chain_of_every_segment(exported, family):
    m = exported[family][1].manifest
    (chain,) = m.graphs_with_role('segment_chain')
    assert chain.layers == (0, m.exits.num_layers) and m.schema_version == 2


@pytest.mark.parametrize('family', FAMILIES)
def test_full_depth_runs_the_chain_once_with_the_actions_of_the_segments(exported, family):
    pkg = exported[family][1]
    chained, be = counted(pkg, mode='full', seed=1)
    plain, be_plain = counted(pkg, hide=('segment_chain',), mode='full', seed=1)
    obs = observation(pkg)
    a, b = chained.infer(obs), plain.infer(obs)
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
    segments = [g.name for g in pkg.manifest.graphs_with_role('segment')]
    assert be.calls['segment_chain'] == 1 and not any(be.calls[s] for s in segments)
    assert be_plain.calls['segment_chain'] == 0
    assert all(be_plain.calls[s] == 1 for s in segments)


def test_early_exit_runs_each_segment_and_one_flow_context_per_exit(evo1):
    pkg = with_thresholds(evo1, [-1.0, -1.0])  # never exits: every exit is reached
    pol, be = counted(pkg, mode='early_exit', seed=2)
    chunk = pol.infer(observation(pkg))
    n, steps = len(pkg.manifest.exits.layers), pkg.manifest.flow.truncated_steps
    assert chunk.exit_layer == pkg.manifest.exits.layers[-1]
    assert be.calls['segment_chain'] == 0
    assert be.calls['head_context'] == n and be.calls['head_step'] == n * steps


def test_an_exit_taken_early_computes_only_the_contexts_up_to_it(evo1):
    pkg = with_thresholds(evo1, [1e6, 1e6])  # stops at the first decision (exit 2)
    pol, be = counted(pkg, mode='early_exit')
    pol.infer(observation(pkg))
    assert be.calls['head_context'] == 2 and be.calls['segment_2'] == 0


def test_deadline_mode_computes_one_flow_context_per_exit_reached(evo1):
    pol, be = counted(evo1, mode='full')
    pol.infer(observation(evo1), deadline_s=time.monotonic() + 60)
    n = len(evo1.manifest.exits.layers)
    assert be.calls['head_context'] == n and be.calls['segment_chain'] == 0


def test_truncated_actions_equal_the_solve_written_out(evo1):
    """The actions of early exit, against its definition run graph by graph."""
    pkg = with_thresholds(evo1, [-1.0, -1.0])
    pol, _ = counted(pkg, mode='early_exit', seed=4)
    obs = observation(pkg)
    chunk = pol.infer(obs)
    be = load_backend(pkg)
    ref = Policy(pkg, be, PolicyConfig(mode='full'))
    ref.rng = np.random.default_rng(4)
    x = ref.noise()[None]
    inputs = ref.prepare(obs)
    hidden = be.run('embed', {'input_ids': inputs.input_ids, 'vision_tokens': be.run(
        'vision', {f'image.{c}': a for c, a in inputs.images.items()})['vision_tokens'],
        **({'state': inputs.state} if 'state' in {t.name for t in pkg.manifest.graph(
            'embed').inputs} else {})})['hidden']
    steps = pkg.manifest.flow.truncated_steps
    for seg in sorted(pkg.manifest.graphs_with_role('segment'), key=lambda g: g.layers):
        hidden = be.run(seg.name, {'hidden': hidden,
                                   'attention_mask': inputs.attention_mask})['hidden_out']
        ctx = be.run('head_context', {'hidden': hidden, 'state': inputs.state})
        for i in range(steps):  # Evo-1: noise at t = 0, restarting at every exit
            v = be.run('head_step', {'noisy_actions': x.astype(np.float32),
                                     't': np.array([i / steps], np.float32), **ctx})['velocity']
            x = x + v / steps
    np.testing.assert_allclose(chunk.actions, ref.action_norm.denormalize(x[0]), atol=1e-5)


def test_the_torch_backend_runs_the_same_chain(exported):
    from vla_ros.export.torch_backend import TorchBackend

    _, pkg, ckpt = exported['a1']
    be = Counting(TorchBackend.from_checkpoint(str(ckpt)))
    obs = observation(pkg)
    got = Policy(pkg, be, PolicyConfig(mode='full', seed=0)).infer(obs).actions
    want = Policy(pkg, load_backend(pkg), PolicyConfig(mode='full', seed=0)).infer(obs).actions
    assert be.calls['segment_chain'] == 1
    np.testing.assert_allclose(got, want, atol=1e-4)


def _without_chain(root: Path) -> None:
    """Makes the package at root a schema-1 package without a chain, as packages were."""
    from dataclasses import replace

    from vla_ros.runtime.package.loader import write_manifest

    m = load_package(root).manifest
    for g in m.graphs_with_role('segment_chain'):
        for v in g.variants.values():
            (root / v.file).unlink()
    write_manifest(root, replace(m, schema_version=1, graphs=tuple(
        g for g in m.graphs if g.role != 'segment_chain')))


def test_an_old_package_gets_a_chain_with_unchanged_actions(tmp_path):
    from vla_ros.export.chain import add_segment_chain

    src = Path(__file__).parents[1] / 'models' / 'default'
    old, new = tmp_path / 'old', tmp_path / 'new'
    for d in (old, new):
        shutil.copytree(src, d)
        _without_chain(d)
    old_pkg = load_package(old)
    assert old_pkg.manifest.schema_version == 1
    new_pkg = add_segment_chain(new, progress=lambda _: None)
    assert new_pkg.manifest.schema_version == 2
    obs = observation(old_pkg)
    a = Policy(old_pkg, load_backend(old_pkg), PolicyConfig(mode='full')).infer(obs)
    pol, be = counted(new_pkg, mode='full')
    b = pol.infer(obs)
    assert be.calls['segment_chain'] == 1
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
