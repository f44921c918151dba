"""Parity with the seed models' upstream code: each case under VLA_ROS_PARITY_DIR (default:
the copy in test/data/parity) holds tiny random weights in the upstream key layout, the
upstream config and statistics files, raw inputs and the upstream outputs. Each case is laid
out as a published checkpoint, converted with `vla-ros convert`, exported with
`vla-ros export`, run through our runtime (ONNX Runtime and the torch reference) and
compared, intermediates included, at the tolerance the case states. A family without a case
is reported as skipped with the reason, never passed."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vla_ros.export.convert import FAMILIES, available

HERE = Path(__file__).parent
PARITY_DIR = Path(os.environ.get('VLA_ROS_PARITY_DIR', HERE / 'data' / 'parity'))


def _cases() -> dict[str, list[Path]]:
    """family -> case folders (a folder named for its family, or `<family>-<anything>`)."""
    found: dict[str, list[Path]] = {f: [] for f in FAMILIES}
    if PARITY_DIR.is_dir():
        for d in sorted(PARITY_DIR.iterdir()):
            if (d / 'case.npz').is_file():
                fam = next((f for f in FAMILIES if d.name == f or d.name.startswith(f + '-')),
                           None)
                if fam is None:
                    raise AssertionError(f'{d}: case folder name does not start with a family '
                                         f'({", ".join(FAMILIES)})')
                found[fam].append(d)
    return found


CASES = _cases()
PARAMS = [pytest.param(f, c, id=c.name) for f, cs in CASES.items() for c in cs]


def _vla_ros(*args: str) -> None:
    result = subprocess.run([sys.executable, '-m', 'vla_ros.cli', *args], capture_output=True,
                            text=True)
    assert result.returncode == 0, f'vla-ros {" ".join(args)} failed:\n{result.stderr}'


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """(checkpoint, package) per case, converted and exported once for both backends."""
    done: dict[Path, tuple[Path, Path]] = {}

    def get(family: str, case: Path) -> tuple[Path, Path]:
        if case not in done:
            driver = importlib.import_module(f'parity.{family}')
            tmp = tmp_path_factory.mktemp(case.name)
            src = driver.arrange(case, tmp / 'published')
            ckpt, pkg = tmp / 'checkpoint', tmp / 'package'
            _vla_ros('convert', str(src), str(ckpt), '--no-progress')
            # The comparison with upstream checks the graphs more strictly than export's own
            # ONNX-vs-torch check, which is skipped to keep the suite short.
            _vla_ros('export', str(ckpt), str(pkg), '--no-verify')
            done[case] = (ckpt, pkg)
        return done[case]

    return get


@pytest.mark.parametrize('family', FAMILIES)
def test_family_has_a_parity_case(family):
    if not CASES[family]:
        pytest.skip(f'no parity case for {family} under {PARITY_DIR}')


@pytest.mark.parametrize('backend', ['ort', 'torch'])
@pytest.mark.parametrize('family,case', PARAMS)
def test_runtime_reproduces_upstream(family, case, backend, converted):
    if family not in available() or importlib.util.find_spec(f'parity.{family}') is None:
        pytest.skip(f'{case.name}: no converter or parity driver for {family} yet')
    ckpt, pkg = converted(family, case)
    driver = importlib.import_module(f'parity.{family}')
    checks = driver.compare(case, ckpt, pkg, backend)
    assert checks, 'the driver compared nothing'
    table = '\n'.join(f'  {c.name:32s} max|err| {c.max_abs_err:.3g} (tol {c.tol:g})'
                      f'{"" if c.ok else "  <- FAILS"}' for c in checks)
    print(f'\n{case.name} [{backend}]\n{table}')
    assert all(c.ok for c in checks), f'{case.name} [{backend}] diverges:\n{table}'
