#!/usr/bin/env python3
"""`make mutation`: mutmut over the modules where a silent bug hurts most, each with only the
tests that cover it (so a run fits a 2-core machine), and a report of the survivors.

    python scripts/mutation.py                  # every module below
    python scripts/mutation.py safety early_exit   # some of them
    python scripts/mutation.py --list
    python scripts/mutation.py --retest safety     # its survivors again, after new tests
    python scripts/mutation.py --resume safety     # an interrupted run to its end

Each module runs in its own copy of the tree under out/mutation/work/<module>/ (mutmut works
in the current directory and rewrites the sources it mutates there), with a [mutmut] section
naming its files and tests. The report is out/mutation/report.md (killed / total per module,
every survivor with its diff); out/mutation/<module>.json keeps each module's counts. Not in
CI: it runs the selected tests once per mutant. Which survivors are equivalent, and why, is
in test/MUTATION.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'out' / 'mutation'

# module -> (files to mutate, tests that cover them (glob patterns), pytest -k expression or '')
MODULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    'safety': (('vla_ros/adapters/safety.py',),
               ('test/test_safety_states.py', 'test/test_safety_limits.py',
                'test/test_safety_regressions.py'), ''),
    # The queue's thread-safety property test (9 s, threads and locks, which mutmut does not
    # mutate) would run for every mutant of the trajectory and chunk code.
    'chunking': (('vla_ros/runtime/chunking/*',),
                 ('test/test_action_queue.py', 'test/test_scheduling.py',
                  'test/test_chunk_timing.py', 'test/test_queue_bench.py',
                  'test/test_chunking_*.py'), 'not producer_and_consumer_threads'),
    # Early exit's own tests (the rule, hand-worked) run per mutant; the ones that calibrate
    # an exported model are calibration's.
    'early_exit': (('vla_ros/runtime/policy/early_exit.py',), ('test/test_calibration.py',),
                   'not calibrate and not observation and not recorded_ratio'),
    'calibration': (('vla_ros/runtime/policy/calibration.py',),
                    ('test/test_calibration*.py', 'test/test_a1_calibration.py'), ''),
    # Its own tests (test_policy.py, exported packages end to end, would add 10 s per mutant).
    'preprocess': (('vla_ros/runtime/policy/preprocess.py',), ('test/test_preprocess*.py',), ''),
    'package': (('vla_ros/runtime/package/*',),
                ('test/test_package_*.py', 'test/test_trt_engine_keys.py'), ''),
}
COPY = ('vla_ros', 'test', 'models', 'pytest.ini', 'README.md', 'package.xml')


def _cfg_list(items) -> str:
    return ''.join(f'\n    {i}' for i in items)


def prepare(name: str) -> Path:
    work = OUT / 'work' / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for item in COPY:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy2(src, work / item)
    _write_config(name, work)
    return work


def _write_config(name: str, work: Path) -> None:
    files, patterns, expr = MODULES[name]
    tests = sorted({str(p.relative_to(ROOT)) for pat in patterns for p in ROOT.glob(pat)})
    args = ['-p', 'no:cacheprovider', '-q'] + (['-k', expr] if expr else [])
    (work / 'setup.cfg').write_text(
        '[mutmut]\nsource_paths = vla_ros\n'
        f'only_mutate ={_cfg_list(files)}\n'
        f'also_copy ={_cfg_list(("models", "pytest.ini", "README.md", "package.xml"))}\n'
        f'pytest_add_cli_args_test_selection ={_cfg_list(tests)}\n'
        f'pytest_add_cli_args ={_cfg_list(args)}\n')


def _env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}  # the mutants must win
    # test/conftest.py's `exported`: the tiny families exported once per module run (by the
    # unmutated code, in mutmut's first, clean run), not once per mutant.
    env['VLA_ROS_TEST_EXPORT_CACHE'] = str(work / 'export-cache')
    env['VLA_ROS_MUTATION'] = '1'  # test/conftest.py: property tests stop at a failure
    return env


def _mutmut(work: Path, log: Path, args: list[str], children: int) -> None:
    mutmut = Path(sys.executable).parent / 'mutmut'
    with open(log, 'a') as f:
        subprocess.run(['nice', '-n', '10', str(mutmut), 'run', '--max-children',
                        str(children), *args], cwd=work, env=_env(work), stdout=f,
                       stderr=subprocess.STDOUT)
        subprocess.run([str(mutmut), 'export-cicd-stats'], cwd=work, env=_env(work), stdout=f,
                       stderr=subprocess.STDOUT)


def _survivors(work: Path) -> list[str]:
    mutmut = Path(sys.executable).parent / 'mutmut'
    results = subprocess.run([str(mutmut), 'results', '--all', 'true'], cwd=work, env=_env(work),
                             capture_output=True, text=True).stdout
    return [line.split(':')[0].strip() for line in results.splitlines()
            if line.strip().endswith((': survived', ': no tests'))]


def _collect(name: str, work: Path, log: Path) -> dict:
    stats_file = work / 'mutants' / 'mutmut-cicd-stats.json'
    if not stats_file.is_file():
        raise SystemExit(f'mutmut produced no statistics for {name}; see {log}')
    stats = json.loads(stats_file.read_text())
    mutmut = Path(sys.executable).parent / 'mutmut'
    diffs = {m: subprocess.run([str(mutmut), 'show', m], cwd=work, env=_env(work),
                               capture_output=True, text=True).stdout for m in _survivors(work)}
    summary = {'module': name, 'files': list(MODULES[name][0]), 'tests': list(MODULES[name][1]),
               'stats': stats, 'survivors': diffs}
    (OUT / f'{name}.json').write_text(json.dumps(summary, indent=1))
    return summary


def run(name: str, children: int) -> dict:
    work = prepare(name)
    log = OUT / f'{name}.log'
    log.unlink(missing_ok=True)
    _mutmut(work, log, [], children)
    return _collect(name, work, log)


def retest(name: str, children: int) -> dict:
    """The survivors of an earlier run again, against the tests as they are now."""
    work = _keep_verdicts(name)
    log = OUT / f'{name}.log'
    survivors = _survivors(work)
    if survivors:
        _mutmut(work, log, survivors, children)
    return _collect(name, work, log)


def resume(name: str, children: int) -> dict:
    """An interrupted run to its end: the mutants it has not tested yet."""
    work = _keep_verdicts(name)
    log = OUT / f'{name}.log'
    _mutmut(work, log, [], children)
    return _collect(name, work, log)


def _keep_verdicts(name: str) -> Path:
    """The module's work copy brought up to the code, tests and test list as they are now,
    keeping the verdicts of its run: a mutant killed by a test of the suite stays killed, and
    survivors are what a retest runs again."""
    work = OUT / 'work' / name
    if not (work / 'mutants').is_dir():
        raise SystemExit(f'{name} has not been run yet (no {work / "mutants"})')
    for dst in (work / 'test', work / 'mutants' / 'test'):
        shutil.rmtree(dst)
        shutil.copytree(ROOT / 'test', dst, ignore=shutil.ignore_patterns('__pycache__'))
    # The code as it is now: mutmut mutates a changed file again and tests the mutants of
    # its changed functions anew.
    shutil.copytree(ROOT / 'vla_ros', work / 'vla_ros', dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('__pycache__'))
    _write_config(name, work)
    # mutmut reads a changed test list or pytest arguments as a new run and resets every
    # verdict, and it maps new or moved functions to no test: without its coverage file it
    # collects the coverage of every test again and keeps the verdicts.
    (work / 'mutants' / 'mutmut-stats.json').unlink(missing_ok=True)
    return work


def _killed_total(stats: dict) -> tuple[int, int]:
    # Mutants mutmut could not test (no test reaches them, or skipped) count as not killed.
    total = stats['total'] - stats.get('skipped', 0)
    killed = stats['killed'] + stats.get('timeout', 0) + stats.get('segfault', 0)
    return killed, total


def report() -> Path:
    rows, details = [], []
    for name in MODULES:
        path = OUT / f'{name}.json'
        if not path.is_file():
            rows.append(f'| {name} | not run | | |')
            continue
        s = json.loads(path.read_text())
        killed, total = _killed_total(s['stats'])
        pct = 100.0 * killed / total if total else 0.0
        rows.append(f'| {name} | {killed} / {total} | {pct:.1f}% | '
                    f'{", ".join(s["tests"])} |')
        for mutant, diff in s['survivors'].items():
            details.append(f'### {name}: {mutant}\n```diff\n{diff.strip()}\n```\n')
    text = ('# Mutation testing (mutmut)\n\n| module | killed / total | | tests |\n'
            '|---|---|---|---|\n' + '\n'.join(rows) + '\n\n## Survivors\n\n'
            + ('\n'.join(details) or 'none\n'))
    out = OUT / 'report.md'
    out.write_text(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('modules', nargs='*', help=f'of {list(MODULES)} (default: all)')
    ap.add_argument('--list', action='store_true', help='print the module -> tests map')
    ap.add_argument('--children', type=int, default=1, help='parallel mutants (default 1)')
    ap.add_argument('--report-only', action='store_true', help='rewrite report.md only')
    ap.add_argument('--retest', action='store_true',
                    help="rerun an earlier run's survivors against the current tests")
    ap.add_argument('--resume', action='store_true',
                    help='go on with an interrupted run (its verdicts are kept)')
    a = ap.parse_args()
    unknown = [m for m in a.modules if m not in MODULES]
    if unknown:
        ap.error(f'unknown modules {unknown}; choose from {list(MODULES)}')
    if a.list:
        for name, (files, tests, expr) in MODULES.items():
            print(f'{name}: {" ".join(files)} <- {" ".join(tests)}'
                  + (f' -k {expr!r}' if expr else ''))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        for name in a.modules or list(MODULES):
            s = (retest if a.retest else resume if a.resume else run)(name, a.children)
            k, t = _killed_total(s['stats'])
            print(f'{name}: {k} / {t} killed', flush=True)
    print(report())


if __name__ == '__main__':
    main()
