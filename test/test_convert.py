"""The converters' error paths: every upstream tensor mapped or explicitly dropped, every tensor
of ours filled, shapes checked, each failure naming the key (and shapes) with nothing left at
the output; family detection; pickles that are not plain tensors refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from parity import edgevla as edgevla_driver
from parity import vla_adapter as vla_adapter_driver

from vla_ros.export.convert import ConvertError, convert_checkpoint, detect_family
from vla_ros.export.convert.keys import KeyMap, load_pt_state_dict

DATA = Path(__file__).parent / 'data' / 'parity'


@pytest.fixture(scope='module')
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp('published')
    return {'vla_adapter': vla_adapter_driver.arrange(DATA / 'vla_adapter', root / 'va'),
            'edgevla': edgevla_driver.arrange(DATA / 'edgevla', root / 'ev')}


def _edited_edgevla(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    pt = next((dst / 'checkpoints').glob('*.pt'))
    obj = torch.load(pt, weights_only=True)
    edit(obj['model'])
    torch.save(obj, pt)
    return dst


@pytest.mark.parametrize('family', ['vla_adapter', 'edgevla'])
def test_family_is_detected_from_the_published_files(published, family):
    assert detect_family(published[family]) == family


def test_a_directory_of_no_family_is_refused_with_its_listing(tmp_path):
    (tmp_path / 'weights.bin').write_bytes(b'')
    with pytest.raises(ConvertError, match='no family.*weights.bin'):
        detect_family(tmp_path)


def test_missing_upstream_tensor_is_named_and_nothing_is_written(published, tmp_path):
    key = 'layers.0.mlp.up_proj.weight'
    src = _edited_edgevla(published['edgevla'], tmp_path / 'src',
                          lambda m: m['llm_backbone'].pop('llm.model.' + key))
    with pytest.raises(ConvertError, match=key.replace('.', r'\.')):
        convert_checkpoint(src, tmp_path / 'out', 'edgevla', progress=False)
    assert not (tmp_path / 'out').exists()
    assert not list(tmp_path.glob('.out.*'))


def test_unexpected_upstream_tensor_is_named(published, tmp_path):
    src = _edited_edgevla(published['edgevla'], tmp_path / 'src',
                          lambda m: m['projector'].__setitem__('projector.4.weight',
                                                               torch.zeros(2, 2)))
    with pytest.raises(ConvertError, match=r'neither mapped nor on the dropped list.*'
                                           r'projector\.projector\.4\.weight'):
        convert_checkpoint(src, tmp_path / 'out', 'edgevla', progress=False)
    assert not (tmp_path / 'out').exists()


def test_misshaped_tensor_names_the_key_and_both_shapes(published, tmp_path):
    src = _edited_edgevla(published['edgevla'], tmp_path / 'src',
                          lambda m: m['projector'].__setitem__('projector.2.bias',
                                                               torch.zeros(33)))
    with pytest.raises(ConvertError, match=r'vision\.projector\.fc2\.bias: upstream gives shape '
                                           r'\(33,\) our model needs \(32,\)'.replace(
                                               ' our', ', our')):
        convert_checkpoint(src, tmp_path / 'out', 'edgevla', progress=False)
    assert not (tmp_path / 'out').exists()


def test_keymap_fills_every_tensor_of_ours():
    km = KeyMap({'a': torch.zeros(2)})
    km.take('a', 'x')
    with pytest.raises(ConvertError, match="no upstream source.*'y'"):
        km.finish({'x': torch.zeros(2), 'y': torch.zeros(3)})


def test_pt_with_a_non_tensor_object_is_refused(tmp_path):
    path = tmp_path / 'action_head--checkpoint.pt'
    torch.save({'module.model.fc1.weight': torch.zeros(2), 'step': 'final'}, path)
    with pytest.raises(ConvertError, match="'step' is str, not a tensor"):
        load_pt_state_dict(path)


def test_pt_with_code_in_its_pickle_is_refused(tmp_path):
    path = tmp_path / 'proprio_projector--checkpoint.pt'
    torch.save({'fc1.weight': torch.nn.Linear(2, 2)}, path)  # a module, not a state dict
    with pytest.raises(ConvertError, match='not a weights-only state dict'):
        load_pt_state_dict(path)


def test_edgevla_checkpoint_with_a_non_tensor_entry_is_refused(published, tmp_path):
    src = _edited_edgevla(published['edgevla'], tmp_path / 'src',
                          lambda m: m['projector'].__setitem__('note', 3))
    with pytest.raises(ConvertError, match=r"\['note'\] is int, not a tensor"):
        convert_checkpoint(src, tmp_path / 'out', 'edgevla', progress=False)
