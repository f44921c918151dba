"""The ROS 2 side of packaging: package.xml is a valid format-3 manifest whose every key
resolves with rosdep, and setup.py installs the node scripts, launch, config and model files
where ros2 run / ros2 launch look for them (the layout colcon produces)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xmlschema

ROOT = Path(__file__).resolve().parents[1]
ROSDEP_CHECK = ROOT.parent / 'shared' / 'ros-tools' / 'rosdep-check.sh'


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


# Every third-party module imported by the package or its launch files -> the rosdep key
# that provides it on a robot, or None where rosdep must not install it.
IMPORT_KEYS = {
    'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml',
    'onnxruntime': 'python3-onnxruntime-pip', 'tokenizers': 'python3-tokenizers-pip',
    'simplejpeg': 'python3-simplejpeg-pip',
    'pybullet': 'python3-pybullet-pip', 'pybullet_data': 'python3-pybullet-pip',
    'matplotlib': 'python3-matplotlib', 'PIL': 'python3-pil',
    'rclpy': 'rclpy', 'builtin_interfaces': 'builtin_interfaces', 'std_msgs': 'std_msgs',
    'std_srvs': 'std_srvs', 'sensor_msgs': 'sensor_msgs', 'trajectory_msgs': 'trajectory_msgs',
    'diagnostic_msgs': 'diagnostic_msgs', 'rcl_interfaces': 'rcl_interfaces',
    'ament_index_python': 'ament_index_python', 'launch': 'launch', 'launch_ros': 'launch_ros',
    'control_msgs': 'control_msgs', 'action_msgs': 'action_msgs',
    # Imported only with gripper_interface franka_move_grasp, where franka_ros2 is installed
    # (released for Humble, not in Jazzy's rosdistro): not a dependency of every robot.
    'franka_msgs': None,
    # Export, training and the torch reference backend only: several GB that a robot never
    # runs (requirements/dev.txt installs them where models are exported).
    'torch': None, 'transformers': None, 'safetensors': None, 'onnx': None,
    'onnxscript': None, 'tqdm': None,
    # Come with JetPack or NVIDIA's CUDA repository (docker/), not from rosdep.
    'tensorrt': None, 'cuda': None,
}
OFFLINE_KEYS = {'python3-torch', 'python3-transformers-pip', 'python3-safetensors-pip'}


def _imported_modules() -> set[str]:
    found = set()
    for path in [*(ROOT / 'vla_ros').rglob('*.py'), *(ROOT / 'launch').glob('*.py')]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split('.')[0])
    return found - set(sys.stdlib_module_names) - {'vla_ros', '__future__'}


def test_package_xml_declares_a_rosdep_key_for_every_imported_module():
    pkg, _ = _parse()
    declared = {d.name for d in pkg.exec_depends}
    imported = _imported_modules()
    assert imported <= set(IMPORT_KEYS), f'decide a rosdep key for {imported - set(IMPORT_KEYS)}'
    needed = {IMPORT_KEYS[m] for m in imported} - {None}
    # Used through rclpy.lifecycle, never imported by name.
    needed.add('lifecycle_msgs')
    assert needed <= declared, needed - declared


def test_package_xml_keeps_offline_only_dependencies_off_robots():
    pkg, _ = _parse()
    every = {d.name for d in pkg.build_depends + pkg.buildtool_depends + pkg.exec_depends
             + pkg.test_depends + pkg.build_export_depends}
    assert not every & OFFLINE_KEYS, every & OFFLINE_KEYS


def test_ament_python_is_the_build_type_and_not_a_dependency():
    # ament_python is no rosdep key: `rosdep install` fails on it.
    pkg, _ = _parse()
    assert pkg.get_build_type() == 'ament_python'
    every = {d.name for d in pkg.build_depends + pkg.buildtool_depends + pkg.exec_depends
             + pkg.test_depends + pkg.build_export_depends + pkg.buildtool_export_depends}
    assert 'ament_python' not in every


def test_package_xml_declares_the_test_tools():
    pkg, _ = _parse()
    assert {'python3-pytest', 'python3-hypothesis'} <= {d.name for d in pkg.test_depends}


@pytest.fixture(scope='module')
def rosdep_env():
    """PATH with a `rosdep` executable (requirements/dev.txt pins it; installed here from PyPI
    when a venv lacks it), or a skip saying why the check cannot run."""
    if not ROSDEP_CHECK.is_file():
        pytest.skip(f'{ROSDEP_CHECK} is not there (the ROS tools live beside the repository '
                    'in CI)')
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join([bindir, os.environ.get('PATH', '')])
    if shutil.which('rosdep', path=path) is None:
        pin = next((line.strip() for line in (ROOT / 'requirements' / 'dev.txt')
                    .read_text().splitlines() if line.startswith('rosdep==')), 'rosdep')
        got = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', pin],
                             capture_output=True, text=True)
        if got.returncode != 0 or shutil.which('rosdep', path=path) is None:
            pytest.skip(f'rosdep is not installed and `pip install {pin}` failed: '
                        f'{got.stderr[-500:]}')
    return {**os.environ, 'PATH': path}


@pytest.mark.parametrize('distro', ['jazzy', 'humble'])
def test_every_package_xml_key_resolves_with_rosdep(rosdep_env, distro):
    result = subprocess.run(['bash', str(ROSDEP_CHECK), str(ROOT), distro], env=rosdep_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_package_xml_version_matches_python_package():
    import vla_ros

    pkg, _ = _parse()
    assert pkg.version == vla_ros.__version__


# REP 149's schema (ros-infrastructure/rep xsd/, copied into test/data/rep149: the URL in
# package.xml's xml-model line is not reachable at test time), checked by a real XSD validator.
SCHEMA = ROOT / 'test' / 'data' / 'rep149' / 'package_format3.xsd'


@pytest.fixture(scope='module')
def format3():
    return xmlschema.XMLSchema(str(SCHEMA))


def format3_errors(schema, path: Path) -> list[str]:
    """Where package.xml breaks the format-3 schema, or [] when it is valid."""
    try:
        return [f'{e.path}: {e.reason}' for e in schema.iter_errors(str(path))]
    except xmlschema.XMLResourceError as exc:
        return [f'not well-formed XML: {exc}']


def test_package_xml_passes_the_format_3_schema(format3):
    assert format3_errors(format3, ROOT / 'package.xml') == []


@pytest.mark.parametrize('old,new,expected', [
    ('format="3"', 'format="2"', "'format' has a fixed value '3'"),
    ('<license>Apache-2.0</license>', '', "Tag 'license' expected"),
    ('<version>0.1.0</version>', '<version>0.1</version>', '(0|[1-9][0-9]*)(.(0|[1-9][0-9]*)){2}'),
    ('<name>vla_ros</name>', '<name>VLA-ros</name>', '[a-z](_?[a-z0-9]+)*'),
    ('email="maintainers@vla-ros.dev"', '', "missing required attribute 'email'"),
    ('export>', 'exports>', "Unexpected child with tag 'exports'"),
    ('<maintainer email="maintainers@vla-ros.dev">vla_ros maintainers</maintainer>', '',
     "Tag 'maintainer' expected"),
    ('<exec_depend>rclpy</exec_depend>', '<exec_depend version_gte="x">rclpy</exec_depend>',
     "version_gte='x'"),
    ('<url type="repository">', '<url type="source">', "type='source'"),
    ('</package>', '<name>again</name></package>', "Unexpected child with tag 'name'"),
    ('</package>', '<exec_depend>x</exec_depend></package>',
     "Unexpected child with tag 'exec_depend'"),
    ('</package>', '', 'not well-formed'),
])
def test_the_format_3_schema_rejects_a_broken_package_xml(format3, tmp_path, old, new,
                                                          expected):
    text = (ROOT / 'package.xml').read_text()
    assert old in text
    broken = tmp_path / 'package.xml'
    broken.write_text(text.replace(old, new))
    errors = format3_errors(format3, broken)
    assert any(expected in e for e in errors), errors


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
