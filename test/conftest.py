"""Shared fixtures: tiny but real model packages built in a temporary directory."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest

# Every test run gets its own ROS domain and discovers on this host only, so two runs on one
# machine (or a run beside a robot on the network) never see each other's topics. Set before
# any test imports rclpy; child processes (launch, sim robot, node) inherit it. Under
# pytest-xdist (`make test` runs MAX_WORKERS processes) each worker of a run gets its own domain
# from a block of MAX_WORKERS that the run's id picks.
MAX_WORKERS = 4


def _ros_domain() -> int:
    worker, run = os.environ.get('PYTEST_XDIST_WORKER'), os.environ.get('PYTEST_XDIST_TESTRUNUID')
    if worker and run:
        index = int(worker.removeprefix('gw')) % MAX_WORKERS
        return 1 + (int(run, 16) % (100 // MAX_WORKERS)) * MAX_WORKERS + index
    return 1 + os.getpid() % 100


if os.environ.get('VLA_ROS_MUTATION'):
    # scripts/mutation.py: a failing property test kills the mutant at its first failing
    # example; shrinking it (many more runs of a broken filter) would change no verdict.
    from hypothesis import Phase, settings

    settings.register_profile('mutation', phases=(Phase.explicit, Phase.reuse, Phase.generate))
    settings.load_profile('mutation')

os.environ['ROS_DOMAIN_ID'] = str(_ros_domain())
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # Jazzy and later
if os.environ.get('ROS_DISTRO') == 'humble':  # deprecated (and warned about) from Jazzy on
    os.environ['ROS_LOCALHOST_ONLY'] = '1'


def manifest_dict() -> dict:
    """A valid manifest (before hashing) for a one-graph package."""
    return {
        'schema_version': 1,
        'name': 'tiny',
        'family': 'evo1',
        'head': {'type': 'flow_dit', 'config': {}},
        'cameras': [{
            'name': 'scene', 'height': 16, 'width': 16, 'channel_order': 'rgb',
            'resize': 'bilinear',
            'norms': [{'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225]}],
        }],
        'state': {
            'names': ['joint1', 'joint2'], 'model_dim': 2,
            'normalization': {'kind': 'bounds', 'stats': {'min': [-1.0, -2.0],
                                                          'max': [1.0, 2.0]}},
        },
        'action': {
            'names': ['joint1', 'joint2'], 'model_dim': 2,
            'normalization': {'kind': 'mean_std', 'stats': {'mean': [0.0, 0.0],
                                                            'std': [1.0, 1.0]}},
            'chunk_len': 4, 'dt_s': 0.1, 'mode': 'absolute',
        },
        'prompt': {'tokenizer_file': 'tokenizer.json', 'template': '{instruction}',
                   'max_length': 8, 'pad_id': 0},
        'exits': {'num_layers': 2, 'layers': [0, 1], 'threshold_sets': []},
        'flow': {'noise_at': 0, 'noise': 'uniform', 'num_steps': 4},
        'graphs': [{
            'name': 'head_step', 'role': 'head_step',
            'inputs': [{'name': 'noisy_actions', 'dtype': 'float32', 'shape': [1, 4, 2]}],
            'outputs': [{'name': 'velocity', 'dtype': 'float32', 'shape': [1, 4, 2]}],
            'variants': {'fp32': {'file': 'graphs/head_step.onnx'}},
        }],
        'embodiment': {'robot': 'test'},
    }


def write_tiny_files(root: Path) -> None:
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    (root / 'graphs').mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info('noisy_actions', TensorProto.FLOAT, [1, 4, 2])
    y = helper.make_tensor_value_info('velocity', TensorProto.FLOAT, [1, 4, 2])
    graph = helper.make_graph([helper.make_node('Neg', ['noisy_actions'], ['velocity'])],
                              'head_step', [x], [y])
    onnx.save(helper.make_model(graph), root / 'graphs' / 'head_step.onnx')
    tok = Tokenizer(models.WordLevel({'[PAD]': 0, '[UNK]': 1, 'pick': 2, 'up': 3},
                                     unk_token='[UNK]'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / 'tokenizer.json'))


@pytest.fixture
def tiny_package(tmp_path: Path) -> Path:
    from vla_ros.runtime.package.loader import write_manifest
    from vla_ros.runtime.package.parse import parse_manifest

    root = tmp_path / 'tiny'
    write_tiny_files(root)
    write_manifest(root, parse_manifest(manifest_dict()))
    return root


def edit_manifest(root: Path, fn) -> None:
    """Applies fn to the manifest dict on disk (hashes untouched)."""
    path = root / 'manifest.json'
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def manifest() -> dict:
    return copy.deepcopy(manifest_dict())


@pytest.fixture(scope='session')
def exported(tmp_path_factory):
    """Every tiny family exported once per test session, with its checkpoint:
    name -> (model, package, checkpoint dir)."""
    root = tmp_path_factory.mktemp('packages')
    cache = os.environ.get('VLA_ROS_TEST_EXPORT_CACHE')
    if cache:  # scripts/mutation.py: one export for every mutant's session
        return _exported_from_cache(Path(cache), root)
    return _export_tiny_families(root)


def _export_tiny_families(root: Path) -> dict:
    import torch
    from families import EXPORT_LOG, WORDS, export_spec, tiny_configs

    from vla_ros.export.checkpoint import save_checkpoint
    from vla_ros.export.exporter import export_package
    from vla_ros.export.tokenizer import word_tokenizer
    from vla_ros.model.vla import VLA

    out = {}
    for name, cfg in tiny_configs().items():
        torch.manual_seed(0)
        model = VLA(cfg).eval()
        tok = word_tokenizer(WORDS, cfg.lm.vocab_size)
        spec = export_spec(name)
        pkg = export_package(model, root / name, spec, tok,
                             progress=EXPORT_LOG.setdefault(name, []).append)
        ckpt = save_checkpoint(root / f'{name}-ckpt', model, spec, tok)
        out[name] = (model, pkg, ckpt)
    return out


def _exported_from_cache(cache: Path, root: Path) -> dict:
    """`exported` from packages exported once into `cache` (on first use) and copied into this
    session's `root`, so a test that writes into a package never alters the cache. For
    mutation runs, where every mutant is a new session; the packages are then the export of
    the code as it was before the mutation."""
    import shutil

    from families import tiny_configs

    from vla_ros.export.checkpoint import load_checkpoint
    from vla_ros.runtime.package.loader import load_package

    names = list(tiny_configs())
    if not (cache / 'complete').is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        _export_tiny_families(cache)
        (cache / 'complete').write_text('\n'.join(names))
    out = {}
    for name in names:
        for part in (name, f'{name}-ckpt'):
            shutil.copytree(cache / part, root / part)
        out[name] = (load_checkpoint(root / f'{name}-ckpt')[0].eval(),
                     load_package(root / name), root / f'{name}-ckpt')
    return out


@pytest.fixture(scope='session')
def exported_vjp(tmp_path_factory):
    """The tiny Evo-1 (flow_dit) exported with its head step's VJP graph: (model, package)."""
    from dataclasses import replace

    import torch
    from families import WORDS, export_spec, tiny_configs

    from vla_ros.export.exporter import export_package
    from vla_ros.export.tokenizer import word_tokenizer
    from vla_ros.model.vla import VLA

    cfg = tiny_configs()['evo1']
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    spec = replace(export_spec('evo1'), rtc_vjp=True, precisions=('fp32',))
    pkg = export_package(model, tmp_path_factory.mktemp('vjp') / 'evo1', spec,
                         word_tokenizer(WORDS, cfg.lm.vocab_size), progress=lambda _: None)
    return model, pkg


ROBOT_NAMES = {
    'xarm6': tuple(f'joint{i}' for i in range(1, 7)),
    'fr3': tuple(f'fr3_joint{i}' for i in range(1, 8)),
    'ur5e': ('shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint', 'wrist_1_joint',
             'wrist_2_joint', 'wrist_3_joint'),
    'agibot_g1': tuple(f'idx2{i}_arm_l_joint{i}' for i in range(1, 8))
    + tuple(f'idx6{i}_arm_r_joint{i}' for i in range(1, 8)) + ('left_gripper', 'right_gripper'),
}


@pytest.fixture(scope='session')
def robot_packages(tmp_path_factory):
    """A tiny Evo-1-shaped package (16-wide spaces) exported once, and a copy per robot whose
    manifest names that robot's joints: robot -> package directory."""
    import shutil
    from dataclasses import replace

    import torch

    from vla_ros.export.exporter import ExportSpec, export_package
    from vla_ros.export.tokenizer import word_tokenizer
    from vla_ros.model.config import VLAConfig
    from vla_ros.model.vla import VLA
    from vla_ros.runtime.package.loader import load_package, update_manifest
    from vla_ros.runtime.package.manifest import ActionSpec, Normalization, SpaceSpec

    root = tmp_path_factory.mktemp('robot_packages')
    torch.manual_seed(0)
    cfg = replace(VLAConfig.tiny('evo1'), state_dim=16, action_dim=16)
    base = export_package(VLA(cfg).eval(), root / 'base', ExportSpec(
        name='tiny', state_names=('a',), action_names=('a',), dt_s=0.1),
        word_tokenizer(['pick', 'up', 'the', 'red', 'block'], 64), progress=lambda _: None)
    out = {}
    for robot, names in ROBOT_NAMES.items():
        shutil.copytree(base.root, root / robot)
        pkg = load_package(root / robot)
        m = pkg.manifest
        n = len(names)
        # Small actions around zero: every robot's joint range contains them.
        norm = Normalization('bounds', {'min': (-0.3,) * n, 'max': (0.3,) * n})
        m = replace(m, name=f'tiny-{robot}',
                    state=SpaceSpec(names, 16, Normalization()),
                    action=ActionSpec(names, 16, norm, chunk_len=m.action.chunk_len,
                                      dt_s=0.1, mode='absolute'))
        update_manifest(pkg, m)
        out[robot] = root / robot
    return out


@pytest.fixture
def ros():
    """A real rclpy graph with a private Context (test/ros_harness.py), closed afterwards."""
    from ros_harness import RosHarness

    h = RosHarness()
    yield h
    h.close()


def pytest_configure(config):
    """The tiny models gain nothing from a second intra-op thread, and on a shared 2-core
    machine torch's OpenMP workers spin-wait for a descheduled sibling at every op (training
    steps measured 50x slower beside a busy process). Child processes keep their defaults."""
    import torch

    torch.set_num_threads(1)


# Expensive session fixtures: tests that use one run in one xdist worker, so it is built once.
SHARED_FIXTURES = ('exported', 'exported_vjp', 'robot_packages')


@pytest.hookimpl(optionalhook=True)  # known only where pytest-xdist is installed
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU, at most MAX_WORKERS (each builds the session fixtures
    its tests use, so more workers mean more repeated exports)."""
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for `--dist loadgroup`: the tests of one file stay together (module fixtures are
    built once), tests on a shared session fixture share its worker, and each parity case is
    its own group (its conversion and export are the suite's longest fixtures)."""
    for item in items:
        if item.get_closest_marker('xdist_group'):
            continue
        names = getattr(item, 'fixturenames', ())
        shared = [f for f in SHARED_FIXTURES if f in names]
        if shared:
            group = shared[0]
        elif 'converted' in names and 'case' in getattr(getattr(item, 'callspec', None),
                                                         'params', {}):
            group = f'parity-{Path(item.callspec.params["case"]).name}'
        else:
            group = item.nodeid.split('::')[0]
        item.add_marker(pytest.mark.xdist_group(group))


FAULT_ROWS: list[dict] = []  # every worker's fault table rows, gathered from the test reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Hands the rows a test added to ros_harness.FAULT_ROWS to its report, so the table is
    printed by the process that prints the summary (the xdist controller too)."""
    outcome = yield
    if call.when != 'call' or 'ros_harness' not in sys.modules:
        return
    rows = sys.modules['ros_harness'].FAULT_ROWS
    report = outcome.get_result()
    report.user_properties.extend(('fault_row', r) for r in rows)
    rows.clear()


def pytest_runtest_logreport(report):
    FAULT_ROWS.extend(v for k, v in report.user_properties if k == 'fault_row')


def pytest_terminal_summary(terminalreporter):
    """The fault table of the node's fault tests (ros_harness.Recorder.report)."""
    rows = FAULT_ROWS
    if not rows:
        return
    w = terminalreporter
    w.section('fault suite: ticks from injection to hold, peak |v|/vmax and |a|/amax')
    w.line(f'{"scenario":58s} {"ticks to hold":>13s} {"v ratio":>8s} {"a ratio":>8s} '
           f'{"recovered":>9s}')
    for r in rows:
        ticks = '-' if r['ticks_to_hold'] is None else str(r['ticks_to_hold'])
        rec = {True: 'yes', False: 'NO', None: 'n/a'}[r['recovered']]
        w.line(f'{r["scenario"]:58s} {ticks:>13s} {r["max_v_ratio"]:8.3f} '
               f'{r["max_a_ratio"]:8.3f} {rec:>9s}')
