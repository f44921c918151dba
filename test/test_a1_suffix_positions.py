"""A1's expert over a prompt padded to a fixed length: upstream's deploy and eval pad the
prompt (pad='to_max') to `data.sequence_length`, so the expert's suffix RoPE positions start
there. `suffix_position_start` reproduces that without carrying the padded slots."""

from __future__ import annotations

import torch

from vla_ros.model.config import HeadConfig, VLAConfig
from vla_ros.model.heads.flow_expert import FlowExpertHead


def _head() -> tuple[FlowExpertHead, VLAConfig]:
    cfg = VLAConfig.tiny('a1')
    torch.manual_seed(0)
    return FlowExpertHead(cfg).eval(), cfg


def test_suffix_positions_after_a_padded_prompt_match_the_padded_cache():
    head, cfg = _head()
    g = torch.Generator().manual_seed(1)
    prompt, pad = 7, 5
    kvh, hd = cfg.lm.num_kv_heads, cfg.lm.head_dim

    def kv(n):
        return torch.randn(1, kvh, n, hd, generator=g)

    kvs = [(kv(prompt), kv(prompt)) for _ in range(cfg.lm.num_layers)]
    suffix = torch.randn(1, 1 + cfg.chunk_len, head.width, generator=g)
    mask = torch.ones(1, prompt)
    # Upstream: the cache holds `pad` more slots, masked out, and the suffix follows them.
    padded = [(torch.cat([k, kv(pad)], 2), torch.cat([v, kv(pad)], 2)) for k, v in kvs]
    padded_mask = torch.cat([mask, torch.zeros(1, pad)], 1)
    with torch.no_grad():
        reference = head.run_layers(suffix, padded_mask, padded, 0)
        head.suffix_position_start = prompt + pad
        torch.testing.assert_close(head.run_layers(suffix, mask, kvs, 0), reference,
                                   rtol=1e-5, atol=1e-5)
        head.suffix_position_start = 0  # ours: right after the prompt, another result
        assert not torch.allclose(head.run_layers(suffix, mask, kvs, 0), reference, atol=1e-4)


def test_a_negative_suffix_position_start_is_refused():
    import pytest

    with pytest.raises(ValueError, match='suffix_position_start'):
        HeadConfig(type='flow_expert', suffix_position_start=-1)


def test_the_padded_length_comes_from_config_yaml_or_the_convert_options(tmp_path):
    from vla_ros.export.convert.a1 import sequence_length

    (tmp_path / 'config.yaml').write_text('data:\n  sequence_length: 600\nmodel:\n  d_model: 8\n')
    assert sequence_length(tmp_path, {}) == 600
    assert sequence_length(tmp_path, {'sequence_length': 680}) == 680
    (tmp_path / 'config.yaml').unlink()
    (tmp_path / 'model.yaml').write_text('d_model: 8\n')  # the model section alone
    assert sequence_length(tmp_path, {}) == 0


def test_first_camera_indexing_needs_added_features_and_names_the_field():
    import pytest

    with pytest.raises(ValueError, match='image_index'):
        VLAConfig.tiny('a1', image_index='first')  # features replace the placeholders there
    with pytest.raises(ValueError, match='image_index'):
        VLAConfig.tiny('a1', image_index='mine')
    assert VLAConfig.tiny('a1', image_index='first', image_merge='add').image_index == 'first'
