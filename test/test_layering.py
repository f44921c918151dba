"""The robot-side layers stay light: vla_ros.runtime and vla_ros.adapters import without
torch, transformers or rclpy, and no lower layer imports vla_ros.ros."""

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


def test_lower_layers_never_import_the_ros_layer():
    offenders = []
    for layer in ('runtime', 'adapters', 'export', 'model'):
        for path in (ROOT / layer).rglob('*.py'):
            bad = [n for n in _imports(path) if n == 'vla_ros.ros' or n.startswith('vla_ros.ros.')
                   or n.split('.')[0] == 'rclpy']
            if bad:
                offenders.append(f'{path.relative_to(ROOT)}: {bad}')
    assert not offenders, offenders


def test_every_layer_is_a_package():
    found = {m.name for m in pkgutil.iter_modules([str(ROOT)]) if m.ispkg}
    assert {'runtime', 'adapters', 'export', 'model', 'ros', 'sim'} <= found
