"""Package files on disk: content hashes, path containment and the no-pickle rule.

A package file must have a plain relative path inside the package (symlinks resolved), an
allowed suffix, and content that cannot execute code when loaded (no pickle, no torch
`.pt` zip). Standard library only; knows nothing of the manifest's schema.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path, PurePosixPath

from vla_ros.runtime.errors import PackageError

MANIFEST = 'manifest.json'
ALLOWED_SUFFIXES = ('.onnx', '.data', '.json', '.safetensors', '.txt', '.md', '.model')
PICKLE_SUFFIXES = ('.pt', '.pth', '.pkl', '.pickle', '.ckpt', '.bin', '.joblib', '.npy', '.npz')
_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_relative_path(rel: str, where: str) -> None:
    """Rejects a manifest path that could point outside the package."""
    p = PurePosixPath(rel)  # drops '.' parts: './x' differs from str(p), and '.' has none
    if not rel or p.is_absolute() or '\\' in rel or rel.startswith('~') or '..' in p.parts \
            or not p.parts or str(p) != rel:
        raise PackageError('path_escape', f'{where}: path {rel!r} must be a plain relative path '
                           'inside the package (no "..", no leading "/" or "./")')


def _looks_like_pickle(path: Path) -> bool:
    with open(path, 'rb') as f:
        head = f.read(4)
    # Pickle protocol 2+ starts with PROTO (0x80) and the protocol number.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    # torch.save writes a zip archive holding data.pkl.
    if head == b'PK\x03\x04':
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.endswith('.pkl') for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def check_file_safe(root: Path, rel: str) -> Path:
    """Returns the absolute path of a package file after the path and content checks."""
    check_relative_path(rel, 'files')
    path = root / rel
    real_root = root.resolve()
    real = path.resolve()
    if real_root not in real.parents:
        raise PackageError('path_escape', f'{rel!r} resolves to {real}, outside the package '
                           f'{real_root} (a symlink?); copy the file into the package instead')
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise PackageError('unsafe_file', f'{rel!r}: {suffix} files may hold pickled code and '
                           'are never loaded; convert the weights with `vla-ros export`')
    if suffix not in ALLOWED_SUFFIXES:
        raise PackageError('unsafe_file', f'{rel!r}: file type {suffix or "(none)"} is not '
                           f'allowed in a package (allowed: {", ".join(ALLOWED_SUFFIXES)})')
    if path.is_file() and _looks_like_pickle(path):
        raise PackageError('unsafe_file', f'{rel!r} holds pickled data although named '
                           f'{suffix}; packages never contain pickles')
    return path


def scan_files(root: Path) -> list[str]:
    """All entries below root except the manifest, as posix relative paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            rel = (base / name).relative_to(root).as_posix()
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)
