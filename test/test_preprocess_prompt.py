"""The prompt's token layout, to the id: Molmo's image rows with their column tokens, left
padding, literal tokens without a repeat, the instruction lowercased (not uppercased) and
tokenized without the tokenizer's own special tokens, the static length and the dtypes."""

import numpy as np
from test_preprocess import _prompt, tokenizer_file  # noqa: F401 (a fixture)
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from vla_ros.runtime.package.manifest import PromptSpec
from vla_ros.runtime.policy.preprocess import PromptBuilder

# The tiny tokenizer: [PAD] 0, [UNK] 1, pick 2, up 3.
MOLMO = ({'kind': 'tokens', 'ids': [9]},
         {'kind': 'image', 'camera': 'scene', 'id': 7, 'count': 4, 'cols': 2, 'col_id': 8},
         {'kind': 'text'})


def _molmo(**kw) -> PromptSpec:
    return PromptSpec(tokenizer_file='tokenizer.json', max_length=3, pad_id=0, layout=MOLMO, **kw)


def test_molmo_image_rows_end_each_in_a_column_token(tokenizer_file):  # noqa: F811
    ids, mask = PromptBuilder(_molmo(), tokenizer_file)('pick up')
    # BOS, two rows of two patches each followed by <im_col>, then the text padded to 3.
    assert ids.tolist() == [[9, 7, 7, 8, 7, 7, 8, 2, 3, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1, 0]]


def test_a_missing_camera_masks_its_column_tokens_too(tokenizer_file):  # noqa: F811
    ids, mask = PromptBuilder(_molmo(), tokenizer_file)('pick up', frozenset({'scene'}))
    assert ids.tolist() == [[9, 7, 7, 8, 7, 7, 8, 2, 3, 0]]  # the ids stay in place
    assert mask.tolist() == [[1, 0, 0, 0, 0, 0, 0, 1, 1, 0]]


def test_a_camera_not_in_the_layout_missing_changes_nothing(tokenizer_file):  # noqa: F811
    b = PromptBuilder(_molmo(), tokenizer_file)
    assert b('pick', frozenset({'wrist'}))[1].tolist() == b('pick')[1].tolist()


def test_the_builders_length_is_the_length_of_what_it_builds(tokenizer_file):  # noqa: F811
    for spec in (_molmo(), _prompt()):
        b = PromptBuilder(spec, tokenizer_file)
        ids, mask = b('pick')
        assert b.length == spec.sequence_length == ids.shape[1] == mask.shape[1]
    assert PromptBuilder(_molmo(), tokenizer_file).length == 10  # 1 + 4 + 2 columns + 3


def test_left_padding_puts_the_padding_before_the_instruction(tokenizer_file):  # noqa: F811
    ids, mask = PromptBuilder(_prompt(padding_side='left'), tokenizer_file)('pick up')
    # tokens [9], two image tokens, two pads, 'pick up', three action tokens
    assert ids.tolist() == [[9, 7, 7, 0, 0, 2, 3, 5, 5, 5]]
    assert mask.tolist() == [[1, 1, 1, 0, 0, 1, 1, 1, 1, 1]]


def test_left_padding_of_a_full_instruction_adds_no_padding(tokenizer_file):  # noqa: F811
    ids, mask = PromptBuilder(_prompt(padding_side='left'), tokenizer_file)('up pick up pick')
    assert ids.tolist() == [[9, 7, 7, 3, 2, 3, 2, 5, 5, 5]]
    assert mask.tolist() == [[1] * 10]


def test_literal_tokens_without_a_repeat_appear_once(tokenizer_file):  # noqa: F811
    layout = ({'kind': 'tokens', 'ids': [4, 6]}, {'kind': 'text'})
    spec = PromptSpec(tokenizer_file='tokenizer.json', max_length=2, layout=layout)
    ids, mask = PromptBuilder(spec, tokenizer_file)('up')
    assert ids.tolist() == [[4, 6, 3, 0]] and mask.tolist() == [[1, 1, 1, 0]]


def test_a_lowercasing_prompt_lowercases_rather_than_uppercases(tokenizer_file):  # noqa: F811
    ids, _ = PromptBuilder(_prompt(lowercase=True), tokenizer_file)('PICK Up')
    assert ids[0, 3:5].tolist() == [2, 3]  # 'pick' and 'up', not two unknown words


def test_ids_are_int64_and_the_mask_float32(tokenizer_file):  # noqa: F811
    ids, mask = PromptBuilder(_molmo(), tokenizer_file)('pick')
    assert ids.dtype == np.int64 and mask.dtype == np.float32


def test_the_tokenizers_own_special_tokens_are_left_out(tmp_path):
    # A tokenizer whose post-processor prepends a BOS (as Llama's does): the layout places
    # BOS itself, so the instruction is encoded without it.
    tok = Tokenizer(models.WordLevel({'[PAD]': 0, '[UNK]': 1, 'pick': 2, 'up': 3, '<s>': 4},
                                     unk_token='[UNK]'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single='<s> $A',
                                                       special_tokens=[('<s>', 4)])
    path = tmp_path / 'tokenizer.json'
    tok.save(str(path))
    assert tok.encode('pick').ids == [4, 2]  # what add_special_tokens=True would give
    spec = PromptSpec(tokenizer_file='tokenizer.json', max_length=3, pad_id=0)
    ids, mask = PromptBuilder(spec, str(path))('pick up')
    assert ids.tolist() == [[2, 3, 0]] and mask.tolist() == [[1, 1, 0]]
