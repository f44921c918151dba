"""The ROS 2 side of packaging: package.xml is a valid format-3 manifest, and setup.py
installs the node scripts, launch, config and model files where ros2 run / ros2 launch
look for them (the layout colcon produces)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _parse():
    from catkin_pkg.package import parse_package

    warnings = []
    pkg = parse_package(str(ROOT / 'package.xml'), warnings=warnings)
    return pkg, warnings


def test_package_xml_is_valid_format_3():
    pkg, warnings = _parse()  # raises InvalidPackage on any schema or content error
    assert pkg.package_format == 3
    assert pkg.name == 'vla_ros' and not warnings, warnings
    pkg.validate()
    assert pkg.get_build_type() == 'ament_python'


def test_package_xml_declares_the_runtime_dependencies():
    pkg, _ = _parse()
    declared = {d.name for d in pkg.exec_depends}
    needed = {'rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'trajectory_msgs',
              'diagnostic_msgs', 'lifecycle_msgs', 'rcl_interfaces', 'python3-numpy',
              'python3-opencv', 'python3-onnxruntime-pip', 'python3-yaml', 'launch_ros'}
    assert needed <= declared, needed - declared


def test_package_xml_version_matches_python_package():
    import vla_ros

    pkg, _ = _parse()
    assert pkg.version == vla_ros.__version__


@pytest.mark.skipif(shutil.which('xmllint') is None, reason='xmllint is not installed')
def test_package_xml_is_well_formed_for_xmllint():
    subprocess.run(['xmllint', '--noout', str(ROOT / 'package.xml')], check=True)


def _tracked(folder: str) -> list[Path]:
    return [p for p in (ROOT / folder).rglob('*') if p.is_file() and '__pycache__' not in p.parts]


def test_setup_py_installs_the_ament_layout(tmp_path):
    # What colcon's ament_python build runs (without --symlink-install).
    build = tmp_path / 'build'
    prefix = tmp_path / 'install'
    build.mkdir()
    result = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(build),
         'build', '--build-base', str(build), 'install', '--prefix', str(prefix),
         '--single-version-externally-managed', '--record', str(tmp_path / 'record.txt')],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    share = prefix / 'share' / 'vla_ros'
    assert (share / 'package.xml').is_file()
    assert (prefix / 'share/ament_index/resource_index/packages/vla_ros').is_file()
    # ros2 run and launch_ros look for executables in lib/<package>.
    assert (prefix / 'lib' / 'vla_ros' / 'vla-ros').is_file()
    for folder in ('launch', 'config', 'models'):
        files = _tracked(folder)
        for f in files:
            assert (share / f.relative_to(ROOT)).is_file(), f'{f} not installed'
    assert _tracked('config'), 'config/ has no files to install'
