"""scripts/gpu_check.sh: it parses, and without CUDA it stops at once with a clear message and
exit status 2 (the GPU figures themselves need a CUDA machine)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'gpu_check.sh'


def test_the_script_parses():
    assert subprocess.run(['bash', '-n', str(SCRIPT)]).returncode == 0
    subprocess.run([sys.executable, '-m', 'py_compile', str(ROOT / 'scripts' / 'gpu_check.py')],
                   check=True)


def _run(tmp_path, path: str):
    # No device visible to CUDA, so the script stops at its checks on any machine.
    env = dict(os.environ, PATH=path, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='')
    return subprocess.run(['bash', str(SCRIPT), str(tmp_path / 'out.json')], env=env,
                          capture_output=True, text=True, timeout=180)


def test_without_nvidia_smi_it_says_so_and_exits_2(tmp_path):
    result = _run(tmp_path, '/usr/bin:/bin')  # no nvidia-smi on this path
    assert result.returncode == 2, result.stderr
    assert 'no CUDA here' in result.stderr and not (tmp_path / 'out.json').exists()


def test_with_a_gpu_tool_but_no_cuda_device_for_torch_it_exits_2(tmp_path):
    # An nvidia-smi that answers, as on a machine whose driver works but where torch sees no
    # device (a CPU build, or no device visible): the script stops at the torch check.
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'nvidia-smi').write_text('#!/bin/sh\necho "GPU 0: stand-in"\n')
    (fake / 'nvidia-smi').chmod(0o755)
    result = _run(tmp_path, f'{fake}:/usr/bin:/bin')
    assert result.returncode == 2, result.stderr
    assert 'torch' in result.stderr and 'CUDA' in result.stderr
