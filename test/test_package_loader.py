"""Packages on disk (`loader.py`, `files.py`): what a load checks and the error each fault
gives, the manifest written atomically (beside the old one, readable by all, in schema order),
`update_manifest` keeping the files, and the file rules (plain relative paths, no pickles)."""

from __future__ import annotations

import contextlib
import json
import locale
import os
import pickle
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import edit_manifest

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.loader import (
    MAX_MANIFEST_BYTES,
    ModelPackage,
    load_package,
    read_manifest,
)

ESCAPE = ' must be a plain relative path inside the package (no "..", no leading "/" or "./")'


@contextlib.contextmanager
def _fails(kind: str, message: str):
    """A PackageError of `kind` whose whole message is `message`."""
    with pytest.raises(PackageError, match=f'^{re.escape(message)}$') as info:
        yield info
    assert info.value.kind == kind


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# ModelPackage


def test_a_listed_file_resolves_inside_the_package(tiny_package):
    pkg = load_package(tiny_package)
    assert pkg.path('tokenizer.json') == tiny_package / 'tokenizer.json'
    assert pkg.graph_path('head_step') == tiny_package / 'graphs' / 'head_step.onnx'
    assert pkg.graph_path('head_step', 'fp32') == tiny_package / 'graphs' / 'head_step.onnx'


@pytest.mark.parametrize('rel', ['notes.txt', '../tiny/tokenizer.json', '/etc/passwd'])
def test_only_a_listed_file_has_a_path(tiny_package, rel):
    pkg = load_package(tiny_package)
    with _fails('missing_file', f'{rel!r} is not a file of package {tiny_package}'):
        pkg.path(rel)


def test_a_missing_precision_says_how_to_export_it(tiny_package):
    pkg = load_package(tiny_package)
    with _fails('missing_file', "graph 'head_step' has no fp16 variant (has ['fp32']); "
                're-export with --precision fp16'):
        pkg.graph_path('head_step', 'fp16')


def test_an_unknown_graph_lists_the_graphs(tiny_package):
    pkg = load_package(tiny_package)
    with pytest.raises(KeyError, match=re.escape(
            "package 'tiny' has no graph 'vision'; graphs: ['head_step']")):
        pkg.graph_path('vision')


def test_a_graph_file_escaping_the_package_has_no_path(tiny_package):
    pkg = load_package(tiny_package)
    g = pkg.manifest.graphs[0]
    moved = replace(g, variants={'fp32': replace(g.variants['fp32'], file='../x.onnx')})
    escaped = ModelPackage(tiny_package, replace(pkg.manifest, graphs=(moved,)))
    with _fails('missing_file', f"'../x.onnx' is not a file of package {tiny_package}"):
        escaped.graph_path('head_step')


def test_total_bytes_add_up_the_listed_files(tiny_package):
    pkg = load_package(tiny_package)
    sizes = [(tiny_package / rel).stat().st_size for rel in pkg.manifest.files]
    assert pkg.total_bytes == sum(sizes) and len(sizes) == 2


# read_manifest


def test_a_package_must_be_a_directory(tmp_path):
    (tmp_path / 'file.txt').write_text('x')
    with _fails('missing_file', f'model package {tmp_path / "file.txt"} is not a directory'):
        read_manifest(tmp_path / 'file.txt')
    with _fails('missing_file', f'model package {tmp_path / "absent"} is not a directory'):
        load_package(str(tmp_path / 'absent'))


def test_a_directory_without_manifest_says_how_to_make_one(tmp_path):
    with _fails('missing_file', f'{tmp_path} has no manifest.json; is it a model package? '
                'Create one with `vla-ros export`'):
        read_manifest(tmp_path)


def _pad_manifest_to(root: Path, size: int) -> None:
    path = root / 'manifest.json'
    data = json.loads(path.read_text())
    data['provenance'] = {'padding': ''}
    base = len(json.dumps(data).encode())
    data['provenance'] = {'padding': 'x' * (size - base)}
    path.write_text(json.dumps(data))
    assert path.stat().st_size == size


def test_a_manifest_of_the_maximum_size_is_read(tiny_package):
    _pad_manifest_to(tiny_package, MAX_MANIFEST_BYTES)
    assert read_manifest(tiny_package).name == 'tiny'


def test_a_manifest_over_the_maximum_size_is_refused_with_its_size(tiny_package):
    _pad_manifest_to(tiny_package, MAX_MANIFEST_BYTES + 1)
    path = tiny_package / 'manifest.json'
    with _fails('invalid', f'{path} is {MAX_MANIFEST_BYTES + 1} bytes; a manifest is at most '
                f'{MAX_MANIFEST_BYTES} bytes'):
        read_manifest(tiny_package)


def test_a_manifest_that_is_not_utf8_is_refused_as_invalid_json(tiny_package):
    path = tiny_package / 'manifest.json'
    path.write_bytes(b'{"name": "\xff"}')
    with pytest.raises(PackageError, match=f'^{re.escape(str(path))} is not valid JSON: '
                       "'utf-8' codec can't decode byte 0xff") as info:
        read_manifest(tiny_package)
    assert info.value.kind == 'invalid'


def test_a_manifest_that_is_not_json_names_the_fault(tiny_package):
    path = tiny_package / 'manifest.json'
    path.write_text('{"name": ')
    with _fails('invalid', f'{path} is not valid JSON: Expecting value: line 1 column 10 '
                '(char 9)'):
        read_manifest(tiny_package)


@pytest.fixture
def ascii_locale():
    """The process's text encoding is ASCII (a robot's minimal C locale) while a test runs."""
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, 'C')
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_a_manifest_is_read_as_utf8_whatever_the_locale(tiny_package, ascii_locale):
    path = tiny_package / 'manifest.json'
    data = json.loads(path.read_bytes())
    data['embodiment']['robot'] = 'Fünf'
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode('utf-8'))
    assert read_manifest(tiny_package).embodiment == {'robot': 'Fünf'}


# load_package


def test_a_file_used_but_not_listed_is_named(tiny_package):
    edit_manifest(tiny_package, lambda d: d['files'].pop('tokenizer.json'))
    with _fails('inconsistent', "'tokenizer.json' is used by the manifest but not listed in its "
                'files (with a hash)'):
        load_package(tiny_package)


def test_a_used_path_escaping_the_package_is_refused_before_any_file_is_read(tiny_package):
    edit_manifest(tiny_package, lambda d: d['prompt'].update(tokenizer_file='../tok.json'))
    with _fails('path_escape', f"referenced file: path '../tok.json'{ESCAPE}"):
        load_package(tiny_package)


def test_the_first_five_extra_files_are_named(tiny_package):
    for i in range(5):
        (tiny_package / f'note{i}.txt').write_text('x')
    names = [f'note{i}.txt' for i in range(5)]
    with _fails('extra_file', f'{tiny_package} holds files the manifest does not list: {names}; '
                'remove them, or re-export so they are hashed'):
        load_package(tiny_package)
    (tiny_package / 'note5.txt').write_text('x')
    with _fails('extra_file', f'{tiny_package} holds files the manifest does not list: {names} '
                '...; remove them, or re-export so they are hashed'):
        load_package(tiny_package)


def test_an_unlisted_pickle_is_reported_as_unsafe_not_extra(tiny_package):
    (tiny_package / 'a.txt').write_text('x')
    (tiny_package / 'b.json').write_bytes(pickle.dumps([1], protocol=2))
    with _fails('unsafe_file', "'b.json' holds pickled data although named .json; packages "
                'never contain pickles'):
        load_package(tiny_package)


def test_a_listed_but_missing_file_says_the_package_is_incomplete(tiny_package):
    (tiny_package / 'graphs' / 'head_step.onnx').unlink()
    with _fails('missing_file', "'graphs/head_step.onnx' is listed in the manifest but missing "
                f'from {tiny_package}; the package is incomplete (copy it again)'):
        load_package(tiny_package)


def test_a_file_of_another_size_names_both_sizes(tiny_package):
    (tiny_package / 'tokenizer.json').write_text('{}')
    with _fails('hash_mismatch', "'tokenizer.json' has 2 bytes, the manifest says 360; the "
                'file is corrupt or was changed'):
        load_package(tiny_package, verify_hashes=False)
