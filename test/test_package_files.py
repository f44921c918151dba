"""Package files: hashes, graph paths that must stay inside the package, the manifest written
atomically beside itself, update_manifest, the path and pickle rules at their edges."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import manifest_dict
from onnx import TensorProto, helper, save
from test_package_loader import ESCAPE, _fails, _umask

from vla_ros.runtime.errors import PackageError
from vla_ros.runtime.package.files import (
    check_file_safe,
    check_relative_path,
    scan_files,
    sha256_file,
)
from vla_ros.runtime.package.loader import (
    load_package,
    update_manifest,
    write_manifest,
)
from vla_ros.runtime.package.manifest import FileEntry, ThresholdSet
from vla_ros.runtime.package.parse import parse_manifest


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


def test_changed_content_of_the_same_size_fails_the_hash(tiny_package):
    _flip_a_byte(tiny_package / 'tokenizer.json')
    with _fails('hash_mismatch', "'tokenizer.json' does not match its sha256 in the manifest; "
                'the file is corrupt or was changed after export'):
        load_package(tiny_package)


def test_the_quick_check_hashes_nothing_and_reads_no_graph(tiny_package):
    _flip_a_byte(tiny_package / 'tokenizer.json')
    assert load_package(tiny_package, verify_hashes=False).manifest.name == 'tiny'


def _write_graph(root: Path, rel: str, domain: str = '', data: str | None = None) -> None:
    x = helper.make_tensor_value_info('noisy_actions', TensorProto.FLOAT, [1, 4, 2])
    y = helper.make_tensor_value_info('velocity', TensorProto.FLOAT, [1, 4, 2])
    inits = []
    if data:
        w = helper.make_tensor('w', TensorProto.FLOAT, [1], [1.0])
        w.data_location = TensorProto.EXTERNAL
        e = w.external_data.add()
        e.key, e.value = 'location', data
        inits.append(w)
    graph = helper.make_graph([helper.make_node('Neg', ['noisy_actions'], ['velocity'],
                                                domain=domain)], 'g', [x], [y],
                              initializer=inits)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 20)]), root / rel)


def _with_variants(variants: dict) -> dict:
    d = manifest_dict()
    d['graphs'][0]['variants'] = variants
    return d


def test_every_variant_of_a_graph_is_scanned(tiny_package):
    _write_graph(tiny_package, 'graphs/head_step.fp16.onnx', domain='com.custom')
    write_manifest(tiny_package, parse_manifest(_with_variants({
        'fp32': {'file': 'graphs/head_step.onnx'},
        'fp16': {'file': 'graphs/head_step.fp16.onnx'}})))
    with _fails('unsafe_file', "graph 'head_step' (graphs/head_step.fp16.onnx) uses the custom "
                "operator domain 'com.custom'; a package may use only the standard ONNX "
                "domains ['', 'ai.onnx', 'ai.onnx.ml'] (custom operators need native code "
                'registered at load); re-export without custom operators'):
        load_package(tiny_package)


def test_a_graph_reads_the_external_data_listed_for_it(tiny_package):
    _write_graph(tiny_package, 'graphs/head_step.onnx', data='head_step.data')
    (tiny_package / 'graphs' / 'head_step.data').write_bytes(b'\0' * 4)
    write_manifest(tiny_package, parse_manifest(_with_variants({'fp32': {
        'file': 'graphs/head_step.onnx', 'data_files': ['graphs/head_step.data']}})))
    pkg = load_package(tiny_package)
    assert pkg.manifest.graphs[0].variants['fp32'].data_files == ('graphs/head_step.data',)


def test_a_truncated_graph_is_refused_as_invalid(tiny_package):
    path = tiny_package / 'graphs' / 'head_step.onnx'
    path.write_bytes(path.read_bytes()[:-5])
    write_manifest(tiny_package, parse_manifest(manifest_dict()))
    with pytest.raises(PackageError, match=r"^graph 'head_step' \(graphs/head_step.onnx\): "
                       'not a valid ONNX model: ') as info:
        load_package(tiny_package)
    assert info.value.kind == 'invalid'


# write_manifest


def test_writing_hashes_every_file_under_the_package(tiny_package):
    (tiny_package / 'README.md').write_text('tiny\n')
    pkg = write_manifest(tiny_package, parse_manifest(manifest_dict()))
    expected = {}
    for rel in ('README.md', 'graphs/head_step.onnx', 'tokenizer.json'):
        data = (tiny_package / rel).read_bytes()
        expected[rel] = FileEntry(hashlib.sha256(data).hexdigest(), len(data))
    assert pkg.manifest.files == expected
    assert load_package(tiny_package).manifest == pkg.manifest
    assert pkg.root == tiny_package


def test_the_manifest_is_written_in_schema_order_one_space_indented(tiny_package):
    m = load_package(tiny_package).manifest
    text = (tiny_package / 'manifest.json').read_text()
    assert text == json.dumps(m.to_dict(), indent=1) + '\n'
    assert list(json.loads(text))[:3] == ['name', 'family', 'head']


def test_the_manifest_is_readable_by_everyone_the_umask_allows(tiny_package):
    with _umask(0o022):
        write_manifest(tiny_package, parse_manifest(manifest_dict()))
        assert os.umask(0o022) == 0o022  # the process umask is left as it was
    assert (tiny_package / 'manifest.json').stat().st_mode & 0o7777 == 0o644
    with _umask(0o027):
        write_manifest(tiny_package, parse_manifest(manifest_dict()))
    assert (tiny_package / 'manifest.json').stat().st_mode & 0o7777 == 0o640


def test_the_manifest_is_written_beside_itself_not_in_the_temp_folder(tiny_package, tmp_path,
                                                                      monkeypatch):
    # A temporary file elsewhere could sit on another file system, where the rename fails.
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'no-such-folder'))
    assert write_manifest(tiny_package, parse_manifest(manifest_dict())).manifest.name == 'tiny'


def test_the_manifest_goes_through_a_hidden_temporary_file(tiny_package):
    seen: list[list[str]] = []

    class Listing(dict):
        """Provenance that lists the package folder each time it is serialized."""

        def items(self):
            seen.append(sorted(os.listdir(tiny_package)))
            return super().items()

    m = load_package(tiny_package).manifest
    update_manifest(load_package(tiny_package), replace(m, provenance=Listing(by='test')))
    during = set(seen[-1]) - {'graphs', 'manifest.json', 'tokenizer.json'}
    assert len(during) == 1
    assert re.fullmatch(r'\.manifest-.+\.tmp', during.pop())
    assert sorted(os.listdir(tiny_package)) == ['graphs', 'manifest.json', 'tokenizer.json']


def test_a_failed_write_leaves_no_temporary_file(tiny_package):
    pkg = load_package(tiny_package)
    (tiny_package / 'manifest.json').unlink()
    (tiny_package / 'manifest.json').mkdir()  # the rename onto it fails
    with pytest.raises(IsADirectoryError):
        update_manifest(pkg, pkg.manifest)
    assert sorted(os.listdir(tiny_package)) == ['graphs', 'manifest.json', 'tokenizer.json']


def test_the_writer_refuses_an_unsafe_file_in_the_package(tiny_package):
    (tiny_package / 'weights.bin').write_bytes(b'\0' * 8)
    with _fails('unsafe_file', "'weights.bin': .bin files may hold pickled code and are never "
                'loaded; convert the weights with `vla-ros export`'):
        write_manifest(tiny_package, parse_manifest(manifest_dict()))
    assert 'weights.bin' not in (tiny_package / 'manifest.json').read_text()


# update_manifest


def _sets() -> tuple[ThresholdSet, ...]:
    return (ThresholdSet(name='fast', metric='cosine', values=(0.25,),
                         expected_compute_fraction=0.5, calibration={'samples': 3}),)


def test_updating_writes_new_threshold_sets_and_keeps_the_files(tiny_package):
    pkg = load_package(tiny_package)
    before = {rel: (tiny_package / rel).stat().st_mtime_ns for rel in pkg.manifest.files}
    new = pkg.manifest.with_threshold_sets(_sets(), 'fast')
    out = update_manifest(pkg, replace(new, files={}))
    assert out.root == tiny_package
    assert out.manifest.files == pkg.manifest.files
    assert out.manifest.threshold_set() == _sets()[0]
    assert load_package(tiny_package).manifest == out.manifest
    assert {rel: (tiny_package / rel).stat().st_mtime_ns for rel in pkg.manifest.files} == before


def test_updating_refuses_a_manifest_the_loader_would_reject(tiny_package):
    pkg = load_package(tiny_package)
    text = (tiny_package / 'manifest.json').read_text()
    bad = pkg.manifest.with_threshold_sets(_sets(), 'slow')
    with _fails('inconsistent', "manifest exits.default_threshold_set: 'slow' is not among the "
                "threshold sets ['fast']"):
        update_manifest(pkg, bad)
    assert (tiny_package / 'manifest.json').read_text() == text


def test_an_updated_manifest_is_written_like_a_new_one(tiny_package):
    pkg = load_package(tiny_package)
    with _umask(0o022):
        out = update_manifest(pkg, pkg.manifest.with_threshold_sets(_sets(), None))
    text = (tiny_package / 'manifest.json').read_text()
    assert text == json.dumps(out.manifest.to_dict(), indent=1) + '\n'
    assert (tiny_package / 'manifest.json').stat().st_mode & 0o7777 == 0o644
    assert out.manifest.threshold_set() is None


# files.py


def test_a_file_is_hashed_across_read_chunks(tmp_path):
    data = bytes(range(256)) * (3 * 4096 + 7)  # past three 1 MiB chunks
    (tmp_path / 'big.data').write_bytes(data)
    assert sha256_file(tmp_path / 'big.data') == hashlib.sha256(data).hexdigest()
    (tmp_path / 'empty.data').write_bytes(b'')
    assert sha256_file(tmp_path / 'empty.data') == hashlib.sha256(b'').hexdigest()


@pytest.mark.parametrize('rel', ['graphs/g.onnx', 'a..b.onnx', '.hidden.json', 'a/~b.txt',
                                 'dir/sub/x.data'])
def test_plain_relative_paths_are_allowed(rel):
    check_relative_path(rel, 'where')


@pytest.mark.parametrize('rel', ['', '.', '/abs.onnx', 'a\\b.onnx', '~/x.onnx', '~x.onnx',
                                 '../x.onnx', 'a/../../x.onnx', 'a/..', './x.onnx', 'a//b.onnx',
                                 'a/./b.onnx', 'a/'])
def test_paths_that_could_leave_the_package_are_refused(rel):
    with _fails('path_escape', f'where: path {rel!r}{ESCAPE}'):
        check_relative_path(rel, 'where')


def test_a_file_is_checked_with_its_path_named_files(tmp_path):
    with _fails('path_escape', f"files: path '../x.onnx'{ESCAPE}"):
        check_file_safe(tmp_path, '../x.onnx')


def test_a_symlink_inside_the_package_is_allowed(tmp_path):
    (tmp_path / 'a.txt').write_text('x')
    os.symlink(tmp_path / 'a.txt', tmp_path / 'b.txt')
    assert check_file_safe(tmp_path, 'b.txt') == tmp_path / 'b.txt'


def test_a_symlink_out_of_the_package_says_to_copy_the_file(tmp_path):
    root = tmp_path / 'pkg'
    root.mkdir()
    (tmp_path / 'x.txt').write_text('x')
    os.symlink(tmp_path / 'x.txt', root / 'x.txt')
    with _fails('path_escape', f"'x.txt' resolves to {tmp_path / 'x.txt'}, outside the package "
                f'{root} (a symlink?); copy the file into the package instead'):
        check_file_safe(root, 'x.txt')


def test_a_symlink_to_the_package_itself_is_outside_it(tmp_path):
    os.symlink(tmp_path, tmp_path / 'self.txt')
    with pytest.raises(PackageError, match='outside the package'):
        check_file_safe(tmp_path, 'self.txt')


@pytest.mark.parametrize('rel', ['w.pt', 'w.PTH', 'sub/w.pkl', 'w.pickle', 'w.ckpt', 'w.bin',
                                 'w.joblib', 'w.npy', 'w.npz'])
def test_pickle_suffixes_are_refused_whatever_the_case(tmp_path, rel):
    suffix = Path(rel).suffix.lower()
    with _fails('unsafe_file', f'{rel!r}: {suffix} files may hold pickled code and are never '
                'loaded; convert the weights with `vla-ros export`'):
        check_file_safe(tmp_path, rel)


@pytest.mark.parametrize('rel,suffix', [('run.sh', '.sh'), ('LICENSE', '(none)')])
def test_other_suffixes_are_refused_with_the_allowed_list(tmp_path, rel, suffix):
    with _fails('unsafe_file', f'{rel!r}: file type {suffix} is not allowed in a package '
                '(allowed: .onnx, .data, .json, .safetensors, .txt, .md, .model)'):
        check_file_safe(tmp_path, rel)


@pytest.mark.parametrize('rel', ['g.ONNX', 'w.data', 'c.json', 'w.safetensors', 'n.txt',
                                 'r.md', 't.model'])
def test_allowed_suffixes_pass_whatever_the_case(tmp_path, rel):
    (tmp_path / rel).write_bytes(b'\x80\x01 not a pickle header')
    assert check_file_safe(tmp_path, rel) == tmp_path / rel


def test_a_listed_file_not_yet_present_passes_the_content_check(tmp_path):
    assert check_file_safe(tmp_path, 'later.onnx') == tmp_path / 'later.onnx'


@pytest.mark.parametrize('data', [pickle.dumps({'w': 1}, protocol=p) for p in (2, 3, 4, 5)]
                         + [b'\x80\x02', b'\x80\x05'])  # the PROTO opcode alone is enough
def test_pickles_of_protocol_2_on_are_recognized_by_content(tmp_path, data):
    (tmp_path / 'w.data').write_bytes(data)
    with _fails('unsafe_file', "'w.data' holds pickled data although named .data; packages "
                'never contain pickles'):
        check_file_safe(tmp_path, 'w.data')


@pytest.mark.parametrize('head', [b'\x80\x01abc', b'\x80\x06abc', b'\x80', b'', b'\x81\x04'])
def test_other_leading_bytes_are_not_taken_for_a_pickle(tmp_path, head):
    (tmp_path / 'w.data').write_bytes(head)
    check_file_safe(tmp_path, 'w.data')


def test_a_zip_holding_a_pickle_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / 'w.data', 'w') as z:
        z.writestr('archive/data.txt', 'x')
        z.writestr('archive/data.pkl', pickle.dumps(1))
    with pytest.raises(PackageError, match='holds pickled data'):
        check_file_safe(tmp_path, 'w.data')


def test_a_zip_without_a_pickle_is_allowed(tmp_path):
    with zipfile.ZipFile(tmp_path / 'w.data', 'w') as z:
        z.writestr('data.txt', 'x')
    check_file_safe(tmp_path, 'w.data')


def test_a_broken_zip_header_is_not_a_pickle(tmp_path):
    (tmp_path / 'w.data').write_bytes(b'PK\x03\x04 broken')
    check_file_safe(tmp_path, 'w.data')


def test_the_scan_lists_files_and_symlinked_folders_but_not_the_manifest(tmp_path):
    (tmp_path / 'manifest.json').write_text('{}')
    (tmp_path / 'b.txt').write_text('x')
    (tmp_path / 'sub' / 'deep').mkdir(parents=True)
    (tmp_path / 'sub' / 'deep' / 'a.onnx').write_text('x')
    (tmp_path / 'sub' / 'manifest.json').write_text('{}')
    (tmp_path / 'elsewhere').mkdir()
    (tmp_path / 'elsewhere' / 'hidden.txt').write_text('x')
    os.symlink(tmp_path / 'elsewhere', tmp_path / 'sub' / 'link')
    assert scan_files(tmp_path) == ['b.txt', 'elsewhere/hidden.txt', 'sub/deep/a.onnx',
                                    'sub/link', 'sub/manifest.json']
