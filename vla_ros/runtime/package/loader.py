"""Model packages on disk: loading with full validation, and writing the manifest.

A package is a directory holding `manifest.json` and the files it lists (ONNX graphs and
their external data, the tokenizer, optional JSON/safetensors side files). Loading checks,
besides the manifest itself (`parse.py`): every listed file exists, no unlisted file is
present, hashes match, each file passes `files.py` (no path escapes the directory,
symlinks included; nothing can execute code when loaded), and each ONNX graph uses only the
standard operator domains and its own listed external data (`onnx_refs.py`). Standard library
only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.files import (
    MANIFEST,
    check_file_safe,
    check_relative_path,
    scan_files,
    sha256_file,
)
from vla_ros.runtime.package.manifest import FileEntry, Manifest
from vla_ros.runtime.package.onnx_refs import check_graph_file
from vla_ros.runtime.package.parse import parse_manifest

MAX_MANIFEST_BYTES = 1 << 20


def _check_references(manifest: Manifest) -> None:
    for rel in sorted(manifest.referenced_files()):
        check_relative_path(rel, 'referenced file')
        if rel not in manifest.files:
            raise PackageError('inconsistent', f'{rel!r} is used by the manifest but not listed '
                               'in its files (with a hash)')


@dataclass(frozen=True)
class ModelPackage:
    """A validated package: its directory and manifest. Immutable; hot-swap makes a new one."""

    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        if rel not in self.manifest.files:
            raise PackageError('missing_file', f'{rel!r} is not a file of package {self.root}')
        return self.root / rel

    def graph_path(self, name: str, precision: str = 'fp32') -> Path:
        graph = self.manifest.graph(name)
        if precision not in graph.variants:
            raise PackageError('missing_file', f'graph {name!r} has no {precision} variant '
                               f'(has {sorted(graph.variants)}); re-export with --precision '
                               f'{precision}')
        return self.path(graph.variants[precision].file)

    @property
    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.manifest.files.values())


def read_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Parses and validates manifest.json alone (fast; no file hashing)."""
    root = Path(root)
    if not root.is_dir():
        raise PackageError('missing_file', f'model package {root} is not a directory')
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise PackageError('missing_file', f'{root} has no {MANIFEST}; is it a model package? '
                           'Create one with `vla-ros export`')
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        # A manifest is a few kB; parsing a huge one would stall whoever asked (a hot-swap
        # request is answered on the node's executor, beside the e-stop).
        raise PackageError('invalid', f'{mpath} is {size} bytes; a manifest is at most '
                           f'{MAX_MANIFEST_BYTES} bytes')
    try:
        data = json.loads(mpath.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackageError('invalid', f'{mpath} is not valid JSON: {e}') from e
    return parse_manifest(data)


def load_package(root: str | os.PathLike[str], *, verify_hashes: bool = True) -> ModelPackage:
    """Loads and fully validates a package. Raises PackageError naming the first fault found.

    verify_hashes=False skips hashing the contents (sizes are still checked); use it only
    for a quick pre-check that a full load will follow.
    """
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest.files
    _check_references(manifest)
    present = scan_files(root)
    for rel in present:
        check_file_safe(root, rel)  # an unlisted pickle is reported as unsafe, not as extra
    extra = sorted(set(present) - set(listed))
    if extra:
        raise PackageError('extra_file', f'{root} holds files the manifest does not list: '
                           f'{extra[:5]}{" ..." if len(extra) > 5 else ""}; remove them, or '
                           're-export so they are hashed')
    for rel, entry in sorted(listed.items()):
        path = check_file_safe(root, rel)
        if not path.is_file():
            raise PackageError('missing_file', f'{rel!r} is listed in the manifest but missing '
                               f'from {root}; the package is incomplete (copy it again)')
        size = path.stat().st_size
        if size != entry.bytes:
            raise PackageError('hash_mismatch', f'{rel!r} has {size} bytes, the manifest says '
                               f'{entry.bytes}; the file is corrupt or was changed')
        if verify_hashes and sha256_file(path) != entry.sha256:
            raise PackageError('hash_mismatch', f'{rel!r} does not match its sha256 in the '
                               'manifest; the file is corrupt or was changed after export')
    if verify_hashes:  # the quick pre-check (a swap request, on the executor) reads no graph
        for g in manifest.graphs:
            for v in g.variants.values():
                check_graph_file(root, g.name, v.file, v.data_files)
    return ModelPackage(root=root, manifest=manifest)


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> ModelPackage:
    """Hashes every file under root into the manifest, validates it, and writes manifest.json
    atomically. The files must already be in place. Returns the loaded package."""
    root = Path(root)
    files = {}
    for rel in scan_files(root):
        path = check_file_safe(root, rel)
        files[rel] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    manifest = replace(manifest, files=files)
    _check_references(manifest)
    # Round-trip through the parser so the writer can never produce what the loader rejects.
    data = manifest.to_dict()
    parse_manifest(json.loads(json.dumps(data)))
    _atomic_write_json(root / MANIFEST, data)
    return load_package(root, verify_hashes=False)


def update_manifest(package: ModelPackage, manifest: Manifest) -> ModelPackage:
    """Rewrites the manifest of an existing package (e.g. new threshold sets). The file list
    and hashes are kept; the package's files are not touched."""
    manifest = replace(manifest, files=package.manifest.files)
    data = manifest.to_dict()
    parse_manifest(json.loads(json.dumps(data)))
    _atomic_write_json(package.root / MANIFEST, data)
    return ModelPackage(root=package.root, manifest=read_manifest(package.root))


def _atomic_write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.manifest-', suffix='.tmp')
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a package is meant to be shared
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write('\n')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
