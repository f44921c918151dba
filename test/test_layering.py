"""The tree is the architecture: vla_ros.runtime and vla_ros.adapters import without torch,
transformers or rclpy; each part imports only what its rule in ALLOWED names (so the runtime
never imports export/, model/, sim/ or ros/); only vla_ros.ros imports rclpy; files stay
small and every package says what it owns."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import vla_ros

ROOT = Path(vla_ros.__file__).parent
BLOCKED = ('torch', 'transformers', 'rclpy', 'onnx', 'onnxscript')

# Runs in a fresh interpreter: a meta-path finder makes the blocked packages unimportable,
# then every module of the two layers is imported.
_PROBE = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{{name}} is blocked in this test')
        return None
sys.meta_path.insert(0, Block())
import vla_ros.runtime, vla_ros.adapters
names = []
for pkg in (vla_ros.runtime, vla_ros.adapters):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
        importlib.import_module(info.name)
        names.append(info.name)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
assert not loaded, loaded
print(len(names))
"""


def test_runtime_and_adapters_import_without_torch_transformers_or_rclpy():
    result = subprocess.run([sys.executable, '-c', _PROBE.format(blocked=BLOCKED)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 3  # the probe really imported modules


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


# What each part of the tree may import from the project (prefixes of module names). A module
# is ruled by its longest matching key; every import counts, module-level or inside a function.
ALLOWED = {
    'vla_ros.runtime': (),  # its __init__; a new top-level module gets a rule on purpose
    'vla_ros.runtime.errors': (),
    'vla_ros.runtime.package': ('vla_ros.runtime.errors', 'vla_ros.runtime.package'),
    'vla_ros.runtime.backends': ('vla_ros.runtime.errors', 'vla_ros.runtime.package',
                                 'vla_ros.runtime.backends'),
    'vla_ros.runtime.chunking': ('vla_ros.runtime.chunking',),
    'vla_ros.runtime.policy': ('vla_ros.runtime.errors', 'vla_ros.runtime.package',
                               'vla_ros.runtime.backends', 'vla_ros.runtime.chunking',
                               'vla_ros.runtime.policy'),
    'vla_ros.runtime.serving': ('vla_ros.runtime.errors', 'vla_ros.runtime.package',
                                'vla_ros.runtime.backends', 'vla_ros.runtime.chunking',
                                'vla_ros.runtime.policy', 'vla_ros.runtime.serving'),
    'vla_ros.runtime.bench': ('vla_ros.runtime',),
    'vla_ros.adapters': ('vla_ros.adapters',),
    'vla_ros.model': ('vla_ros.model', 'vla_ros.runtime.policy.flow'),
    'vla_ros.export': ('vla_ros.export', 'vla_ros.model', 'vla_ros.runtime'),
    'vla_ros.sim': ('vla_ros.sim', 'vla_ros.adapters', 'vla_ros.runtime', 'vla_ros.model',
                    'vla_ros.export'),
    'vla_ros.ros': ('vla_ros.ros.conversions', 'vla_ros.ros.launch_logic',
                    'vla_ros.ros.sim_gripper', 'vla_ros.ros.sim_scene', 'vla_ros.adapters',
                    'vla_ros.runtime', 'vla_ros.sim'),
    'vla_ros.ros.node': ('vla_ros.ros.node', 'vla_ros.ros.conversions', 'vla_ros.adapters',
                         'vla_ros.runtime'),
    'vla_ros.ros.evaluation': ('vla_ros',),
    'vla_ros.cli': ('vla_ros',),
    'vla_ros.cli_package': ('vla_ros',),
    'vla_ros': ('vla_ros',),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + '.')


def _rule(module: str) -> str:
    return max((k for k in ALLOWED if _within(module, k)), key=len)


def _relative_imports(path: Path) -> int:
    tree = ast.parse(path.read_text(), str(path))
    return sum(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree))


def test_each_part_imports_only_the_parts_below_it():
    offenders = []
    for path in sorted(ROOT.rglob('*.py')):
        module = _module_name(path)
        allowed = ALLOWED[_rule(module)]
        for name in sorted(_imports(path)):
            if name.split('.')[0] == 'vla_ros' and name != 'vla_ros' and \
                    not any(_within(name, a) for a in allowed):
                offenders.append(f'{module} imports {name}')
        if _relative_imports(path):
            offenders.append(f'{module} uses relative imports')
    assert not offenders, offenders


def test_only_the_ros_layer_imports_rclpy():
    offenders = [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob('*.py'))
                 if not _within(_module_name(p), 'vla_ros.ros')
                 and any(n.split('.')[0] in ('rclpy', 'launch', 'launch_ros')
                         for n in _imports(p))]
    assert not offenders, offenders


def test_the_rules_know_every_module():
    # A new top-level module or package must be placed in ALLOWED on purpose.
    unknown = [_module_name(p) for p in ROOT.rglob('*.py')
               if _rule(_module_name(p)) == 'vla_ros' and _module_name(p) != 'vla_ros']
    assert not unknown, unknown


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob('*.py')
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_runtime_top_level_stays_a_map_of_sub_packages():
    top = [m.name for m in pkgutil.iter_modules([str(ROOT / 'runtime')]) if not m.ispkg]
    assert len(top) <= 8, top


def test_every_package_says_what_it_owns():
    bare = [str(p.relative_to(ROOT)) for p in ROOT.rglob('__init__.py')
            if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not bare, bare


def test_every_layer_is_a_package():
    found = {m.name for m in pkgutil.iter_modules([str(ROOT)]) if m.ispkg}
    assert {'runtime', 'adapters', 'export', 'model', 'ros', 'sim'} <= found
