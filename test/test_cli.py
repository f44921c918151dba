"""`vla-ros inspect`: a readable summary for a good package, a clear error for a bad one."""

import subprocess
import sys

from vla_ros.cli import main


def test_inspect_summarizes_a_valid_package(tiny_package, capsys):
    assert main(['inspect', str(tiny_package)]) == 0
    out = capsys.readouterr().out
    assert 'family evo1, head flow_dit' in out
    assert 'scene: 16x16 rgb' in out
    assert 'chunk 4 x 100 ms' in out
    assert 'head_step (head_step; fp32' in out
    assert 'no calibrated thresholds' in out


def test_inspect_reports_a_broken_package_with_exit_code_2(tiny_package, capsys):
    (tiny_package / 'tokenizer.json').unlink()
    assert main(['inspect', str(tiny_package)]) == 2
    err = capsys.readouterr().err
    assert 'invalid model package (missing_file)' in err and 'tokenizer.json' in err


def test_console_script_runs_as_a_module():
    result = subprocess.run([sys.executable, '-m', 'vla_ros.cli', '--version'],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith('vla_ros ')
