"""The ROS 2 side of packaging: package.xml is a valid format-3 manifest whose every key
resolves with rosdep, and setup.py installs the node scripts, launch, config and model files
where ros2 run / ros2 launch look for them (the layout colcon produces)."""

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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
    'pybullet': 'python3-pybullet-pip', 'pybullet_data': 'python3-pybullet-pip',
    'matplotlib': 'python3-matplotlib', 'PIL': 'python3-pil',
    'rclpy': 'rclpy', 'builtin_interfaces': 'builtin_interfaces', 'std_msgs': 'std_msgs',
    'std_srvs': 'std_srvs', 'sensor_msgs': 'sensor_msgs', 'trajectory_msgs': 'trajectory_msgs',
    'diagnostic_msgs': 'diagnostic_msgs', 'rcl_interfaces': 'rcl_interfaces',
    'ament_index_python': 'ament_index_python', 'launch': 'launch', 'launch_ros': 'launch_ros',
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


# REP 149's package_format3.xsd (with package_common.xsd), which is not reachable at test
# time: the order and multiplicity of <package>'s children, and the patterns of the typed ones.
_DEPENDS = ('build_depend', 'build_export_depend', 'buildtool_depend',
            'buildtool_export_depend', 'exec_depend', 'depend', 'doc_depend', 'test_depend',
            'conflict', 'replace')
_SEQUENCE = (  # (element names at this position, min, max); None: unbounded
    (('name',), 1, 1), (('version',), 1, 1), (('description',), 1, 1),
    (('maintainer',), 1, None), (('license',), 1, None), (('url',), 0, None),
    (('author',), 0, None), (_DEPENDS, 0, None), (('group_depend',), 0, None),
    (('member_of_group',), 0, None), (('export',), 0, 1))
_NAME = r'[a-z](_?[a-z0-9]+)*'
_VERSION = r'(0|[1-9][0-9]*)(.(0|[1-9][0-9]*)){2}'
_VERSION_LIMIT = r'(0|[1-9][0-9]*)(.(0|[1-9][0-9]*)){0,2}'
_EMAIL = (r'[-a-zA-Z0-9_%+]+(\.[-a-zA-Z0-9_%+]+)*@[-a-zA-Z0-9%]+(\.[-a-zA-Z0-9%]+)*'
          r'\.[a-zA-Z]{2,}')
_DEPEND_ATTRS = {'version_lt', 'version_lte', 'version_eq', 'version_gte', 'version_gt',
                 'condition'}
_ALLOWED_ATTRS = {'name': set(), 'version': {'compatibility'}, 'description': set(),
                  'maintainer': {'email'}, 'license': {'file'}, 'url': {'type'},
                  'author': {'email'}, 'group_depend': {'condition'},
                  'member_of_group': {'condition'}, 'export': set(),
                  **{d: _DEPEND_ATTRS for d in _DEPENDS}}


def _text(e: ET.Element) -> str:
    return ' '.join((e.text or '').split())


def format3_errors(path: Path) -> list[str]:
    """Where package.xml breaks the format-3 schema, or [] when it is valid."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return [f'not well-formed XML: {exc}']
    if root.tag != 'package':
        return [f'root element is <{root.tag}>, not <package>']
    errors = []
    if root.get('format') != '3':
        errors.append(f'<package format="{root.get("format")}">: format must be "3"')
    if set(root.attrib) - {'format'}:
        errors.append(f'<package> has unknown attributes {sorted(set(root.attrib) - {"format"})}')
    children = list(root)
    i = 0
    for names, low, high in _SEQUENCE:
        count = 0
        while i < len(children) and children[i].tag in names and (high is None or count < high):
            count, i = count + 1, i + 1
        if count < low:
            errors.append(f'<{names[0]}> is required (at least {low}) at this position')
    for extra in children[i:]:
        known = any(extra.tag in names for names, _, _ in _SEQUENCE)
        errors.append(f'<{extra.tag}> is out of order' if known
                      else f'<{extra.tag}> is not a format-3 element')
    for e in children:
        attrs = set(e.attrib) - _ALLOWED_ATTRS.get(e.tag, set(e.attrib))
        if attrs:
            errors.append(f'<{e.tag}> has unknown attributes {sorted(attrs)}')
        if e.tag == 'name' and not re.fullmatch(_NAME, _text(e)):
            errors.append(f'name {_text(e)!r} does not match {_NAME}')
        if e.tag == 'version' and not re.fullmatch(_VERSION, _text(e)):
            errors.append(f'version {_text(e)!r} is not X.Y.Z')
        if e.tag in ('maintainer', 'author') and ('email' in e.attrib or e.tag == 'maintainer'):
            if not re.fullmatch(_EMAIL, e.get('email', '')):
                errors.append(f'<{e.tag}> email {e.get("email")!r} is missing or invalid')
        if e.tag == 'url' and e.get('type', 'website') not in ('website', 'bugtracker',
                                                               'repository'):
            errors.append(f'<url type="{e.get("type")}"> is not website/bugtracker/repository')
        if e.tag in _DEPENDS:
            for attr in _DEPEND_ATTRS - {'condition'}:
                if attr in e.attrib and not re.fullmatch(_VERSION_LIMIT, e.get(attr)):
                    errors.append(f'<{e.tag} {attr}="{e.get(attr)}"> is not a version limit')
        if e.tag != 'description' and e.tag != 'export' and len(e):
            errors.append(f'<{e.tag}> holds elements; only text is allowed')
        if e.tag != 'export' and e.tag != 'description' and not _text(e):
            errors.append(f'<{e.tag}> is empty')
    return errors


def test_package_xml_passes_the_format_3_schema():
    assert format3_errors(ROOT / 'package.xml') == []


@pytest.mark.parametrize('old,new,expected', [
    ('format="3"', 'format="2"', 'format must be "3"'),
    ('<license>Apache-2.0</license>', '', '<license> is required'),
    ('<version>0.1.0</version>', '<version>0.1</version>', 'is not X.Y.Z'),
    ('<name>vla_ros</name>', '<name>VLA-ros</name>', 'does not match'),
    ('email="maintainers@vla-ros.dev"', '', 'email None is missing'),
    ('export>', 'exports>', '<exports> is not a format-3 element'),
    ('<maintainer email="maintainers@vla-ros.dev">vla_ros maintainers</maintainer>', '',
     '<maintainer> is required'),
    ('<exec_depend>rclpy</exec_depend>', '<exec_depend version_gte="x">rclpy</exec_depend>',
     'is not a version limit'),
    ('<url type="repository">', '<url type="source">', 'is not website'),
    ('</package>', '<name>again</name></package>', '<name> is out of order'),
    ('</package>', '', 'not well-formed'),
])
def test_the_format_3_check_rejects_a_broken_package_xml(tmp_path, old, new, expected):
    text = (ROOT / 'package.xml').read_text()
    assert old in text
    broken = tmp_path / 'package.xml'
    broken.write_text(text.replace(old, new))
    errors = format3_errors(broken)
    assert any(expected in e for e in errors), errors


def test_the_format_3_check_rejects_a_dependency_after_the_export(tmp_path):
    text = (ROOT / 'package.xml').read_text()
    broken = tmp_path / 'package.xml'
    broken.write_text(text.replace('</package>', '<exec_depend>x</exec_depend></package>'))
    assert '<exec_depend> is out of order' in format3_errors(broken)


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
