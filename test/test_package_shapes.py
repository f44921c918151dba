"""Tensor shapes of the graphs against the manifest: cameras, state, prompt and actions; each
refusal's whole message."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_package_loader import _fails
from test_package_parse import _tensor

from vla_ros.runtime.package.consistency import check_consistency
from vla_ros.runtime.package.parse import parse_manifest


def _io(manifest: dict, *tensors, side: str = 'inputs') -> None:
    manifest['graphs'][0][side] += [dict(t) for t in tensors]


def test_an_image_input_must_name_a_camera(manifest):
    _io(manifest, _tensor('image.wrist', [1, 3, 16, 16]))
    with _fails('inconsistent', "manifest graphs[head_step].image.wrist: names no camera slot; "
                "slots are ['scene']"):
        parse_manifest(manifest)


def test_an_image_input_matches_its_camera(manifest):
    _io(manifest, _tensor('image.scene', ['batch', 3, 16, 16]),
        _tensor('image_tokens', [1, 7]))  # not an image of a camera: any shape
    _io(manifest, _tensor('image.scene', ['b', 'c', 'h', 'w']), side='outputs')
    parse_manifest(manifest)


@pytest.mark.parametrize('shape,message', [
    ([1, 3, 15, 16], "[1, 3, 15, 16]: dimension -2 is 15, but camera 'scene' height is 16"),
    ([1, 6, 16, 16], "[1, 6, 16, 16]: dimension -3 is 6, but camera 'scene' channels is 3"),
    ([1, 3, 16, 17], "[1, 3, 16, 17]: dimension -1 is 17, but camera 'scene' width is 16"),
])
def test_an_image_of_the_wrong_size_names_the_dimension(manifest, shape, message):
    _io(manifest, _tensor('image.scene', shape))
    with _fails('inconsistent', f'manifest graphs[head_step].image.scene.shape: {message}'):
        parse_manifest(manifest)


@pytest.mark.parametrize('shape,what', [([16], "camera 'scene' height"),
                                        ([16, 16], "camera 'scene' channels")])
def test_an_image_of_too_low_rank_is_refused(manifest, shape, what):
    _io(manifest, _tensor('image.scene', shape))
    with _fails('inconsistent', f'manifest graphs[head_step].image.scene: rank {len(shape)} is '
                f'too small for {what}'):
        parse_manifest(manifest)


def test_the_state_input_matches_the_state_width(manifest):
    _io(manifest, _tensor('state', [1, 3]))
    with _fails('inconsistent', 'manifest graphs[head_step].state.shape: [1, 3]: dimension -1 '
                'is 3, but state.model_dim is 2'):
        parse_manifest(manifest)
    manifest['graphs'][0]['inputs'][-1]['shape'] = [2]
    parse_manifest(manifest)


@pytest.mark.parametrize('name', ['input_ids', 'attention_mask'])
def test_token_inputs_match_the_prompt_length(manifest, name):
    _io(manifest, _tensor(name, [1, 9], 'int64'))
    with _fails('inconsistent', f'manifest graphs[head_step].{name}.shape: [1, 9]: dimension -1 '
                'is 9, but the prompt layout length is 8'):
        parse_manifest(manifest)
    manifest['prompt']['layout'] = [{'kind': 'tokens', 'ids': [1]}, {'kind': 'text'}]
    parse_manifest(manifest)


@pytest.mark.parametrize('name', ['actions', 'noisy_actions', 'velocity'])
def test_action_tensors_match_the_chunk_and_the_action_width(manifest, name):
    manifest['graphs'][0]['inputs'] = []
    manifest['graphs'][0]['outputs'] = [_tensor(name, [1, 4, 3])]
    with _fails('inconsistent', f'manifest graphs[head_step].{name}.shape: [1, 4, 3]: dimension '
                '-1 is 3, but action.model_dim is 2'):
        parse_manifest(manifest)
    manifest['graphs'][0]['outputs'] = [_tensor(name, [1, 5, 2])]
    with _fails('inconsistent', f'manifest graphs[head_step].{name}.shape: [1, 5, 2]: dimension '
                '-2 is 5, but action.chunk_len is 4'):
        parse_manifest(manifest)
    manifest['graphs'][0]['outputs'] = [_tensor(name, [2])]
    with _fails('inconsistent', f'manifest graphs[head_step].{name}: rank 1 is too small for '
                'action.chunk_len'):
        parse_manifest(manifest)


def test_the_consistency_check_reads_only_the_manifest_it_is_given(manifest):
    m = parse_manifest(manifest)
    check_consistency(m)
    with _fails('inconsistent', "manifest flow: head type 'flow_dit' needs flow settings"):
        check_consistency(replace(m, flow=None))
    with _fails('invalid', 'manifest graphs: a package needs at least one graph'):
        check_consistency(replace(m, graphs=()))
