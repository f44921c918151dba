"""Tokenizer files for packages: a word-level tokenizer for our own small models.

Published checkpoints bring their own `tokenizer.json` (Qwen2's BPE), copied into the package
as is; our small models use a word-level vocabulary of the instructions they were trained on,
saved in the same `tokenizers` JSON format so the runtime loads both the same way.
"""

from __future__ import annotations

import re

# Special tokens in the order of the ids VLAConfig assigns by default.
SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[BOS]', '[EOS]', '<image>', '<query>', '<action>',
                  '<proprio>')


def words_of(texts: list[str]) -> list[str]:
    """Sorted distinct lower-case words of the given instructions."""
    return sorted({w for t in texts for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", t.lower())})


def word_tokenizer(words: list[str], vocab_size: int):
    """A `tokenizers.Tokenizer`: special tokens first, then the words; unknown words map to
    [UNK]. Raises ValueError if the words do not fit the model's vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    if len(vocab) > vocab_size:
        raise ValueError(f'{len(vocab)} tokens do not fit a vocabulary of {vocab_size}; '
                         'raise lm.vocab_size or use fewer words')
    tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return tok
