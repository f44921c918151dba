"""The torch model families: key layouts that published checkpoints map onto, agreement with
transformers' own forward, flow conventions, and multi-exit training."""

from dataclasses import replace

import pytest
import torch
from families import tiny_configs

from vla_ros.model.config import LMConfig, VLAConfig
from vla_ros.model.decoder import Decoder, hf_config
from vla_ros.model.training import Batch, multi_exit_loss
from vla_ros.model.vla import VLA
from vla_ros.runtime.policy.flow import euler_integrate

CONFIGS = tiny_configs()


def test_decoder_matches_transformers_qwen2():
    from transformers import Qwen2Model

    torch.manual_seed(0)
    cfg = LMConfig(hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                   intermediate_size=64, vocab_size=50)
    ours = Decoder(cfg).eval()
    theirs = Qwen2Model(hf_config(cfg)).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all('rotary' in k for k in missing)
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones(2, 9)
    with torch.no_grad():
        h, _, _ = ours.run_layers(ours.embed_tokens(ids), mask, 0, 3)
        ref = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours.norm(h), ref, atol=1e-5, rtol=1e-5)


def test_internvit_encoder_matches_transformers_internvl_image_features():
    from transformers import InternVLConfig, InternVLModel

    torch.manual_seed(0)
    vla = VLA(CONFIGS['evo1']).eval()
    v = vla.cfg.vision
    hf_cfg = InternVLConfig(
        vision_config=dict(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                           num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
                           image_size=[v.image_size] * 2, patch_size=[v.patch_size] * 2),
        text_config=dict(model_type='qwen2', hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=64),
        downsample_ratio=v.downsample_ratio, vision_feature_layer=-1,
        vision_feature_select_strategy='default')
    hf = InternVLModel(hf_cfg).eval()
    # Our keys are transformers' native InternVL keys under `vision.`.
    state = {k.removeprefix('vision.'): t for k, t in vla.state_dict().items()
             if k.startswith('vision.')}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(('vision_tower',
                                                                       'multi_modal'))]
    x = torch.randn(2, 3, v.image_size, v.image_size)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=x, vision_feature_layer=-1,
                                    vision_feature_select_strategy='default').pooler_output
        ours = vla.vision(x)
    torch.testing.assert_close(ours, ref.reshape(ours.shape), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('family,keys', [
    ('evo1', ['head.transformer_blocks.0.attn.in_proj_weight',
              'head.state_encoder.fc1.linear.weight', 'head.action_encoder.W1.linear.weight',
              'head.time_pos_enc.pe', 'head.seq_pool_proj.weight',
              'head.mlp_head.fc2.linear.weight', 'decoder.layers.0.self_attn.q_proj.bias',
              'vision.multi_modal_projector.linear_1.weight']),
    ('a1', ['head.qwen2.model.layers.0.self_attn.k_proj.weight', 'head.qwen2.model.norm.weight',
            'head.state_proj.weight', 'head.action_in_proj.weight', 'head.action_time_in.weight',
            'head.action_time_out.weight', 'head.action_out.fc2.weight',
            'vision.image_pooling_2d.wq.weight', 'vision.image_projector.w1.weight']),
    ('vla_adapter', ['action_queries.weight', 'head.proprio_projector.fc1.weight',
                     'head.action_head.model.mlp_resnet_blocks.0.k_self.weight',
                     'head.action_head.model.mlp_resnet_blocks.0.gating_factor',
                     'head.action_head.model.fc2.weight', 'vision.projector.fc3.weight',
                     'vision.featurizer.embeddings.register_tokens']),
    ('edgevla', ['head.bin_head.weight', 'vision.fused_featurizer.embeddings'
                 '.patch_embedding.weight']),
])
def test_modules_carry_the_checkpoint_key_names(family, keys):
    state = VLA(CONFIGS[family]).state_dict()
    assert [k for k in keys if k not in state] == []


def test_original_vla_adapter_blocks_share_key_and_value_projections():
    cfg = CONFIGS['vla_adapter']
    state = VLA(replace(cfg, head=replace(cfg.head, pro=False))).state_dict()
    assert 'head.action_head.model.mlp_resnet_blocks.0.k_proj.weight' in state
    assert 'head.action_head.model.mlp_resnet_blocks.0.k_self.weight' not in state


def test_evo1_full_size_has_the_published_shape():
    cfg = VLAConfig.evo1()
    assert (cfg.lm.num_layers, cfg.lm.hidden_size, cfg.head.num_layers) == (14, 896, 8)
    assert cfg.vision.tokens_per_image == 256 and cfg.chunk_len == 50
    assert cfg.action_dim == 24 and len(cfg.cameras) == 3


@pytest.mark.parametrize('field,value,match', [
    ('family', 'openvla', 'family'),
    ('exit_layers', (1, 2), 'exit_layers'),
    ('chunk_len', 0, 'chunk_len'),
])
def test_config_errors_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        replace(VLAConfig.tiny('evo1'), **{field: value})


def test_head_type_must_belong_to_the_family():
    cfg = VLAConfig.tiny('evo1')
    with pytest.raises(ValueError, match="evo1 supports"):
        replace(cfg, head=replace(cfg.head, type='bridge'))


@pytest.mark.parametrize('noise_at', [0, 1])
def test_euler_reaches_the_data_for_a_straight_flow_in_either_convention(noise_at):
    data = torch.tensor([[0.3, -0.7]])
    noise = torch.tensor([[1.0, 1.0]])
    # The straight-line velocity of each convention: a - noise (t: 0 -> 1) or noise - a.
    v = (data - noise) if noise_at == 0 else (noise - data)
    x = euler_integrate(lambda x, t: v, noise, noise_at=noise_at, num_steps=7)
    torch.testing.assert_close(x, data)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_every_exit_yields_an_action_from_the_shared_head(name):
    torch.manual_seed(0)
    model = VLA(CONFIGS[name]).eval()
    obs = model.fake_obs()
    cfg = model.cfg
    noise = torch.randn(1, cfg.chunk_len, cfg.action_dim)
    acts = model.actions_at_exits(obs['images'], obs['input_ids'], obs['attention_mask'],
                                  obs['state'], noise, num_steps=2)
    assert list(acts) == list(cfg.exits)
    for a in acts.values():
        assert a.shape == (1, cfg.chunk_len, cfg.action_dim) and torch.isfinite(a).all()


def _batch(model: VLA, seed: int = 0) -> Batch:
    obs = model.fake_obs(batch=4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    actions = torch.rand(4, cfg.chunk_len, cfg.action_dim, generator=g) * 1.6 - 0.8
    mask = torch.ones(4, cfg.action_dim)
    mask[:, -1] = 0  # a padded dimension
    return Batch(obs['images'], obs['input_ids'], obs['attention_mask'], obs['state'],
                 actions, mask)


def test_all_exits_mode_averages_the_per_exit_losses():
    torch.manual_seed(0)
    model = VLA(CONFIGS['a1_regression'])
    loss, per_exit = multi_exit_loss(model, _batch(model), mode='all')
    assert set(per_exit) == set(model.cfg.exits)
    assert float(loss.detach()) == pytest.approx(sum(per_exit.values()) / len(per_exit), rel=1e-5)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_multi_exit_training_reduces_the_loss_at_every_exit(name):
    torch.manual_seed(0)
    model = VLA(CONFIGS[name])
    batch = _batch(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    before = multi_exit_loss(model, batch, mode='all', gen=torch.Generator().manual_seed(9))[1]
    for _ in range(40):
        loss, _ = multi_exit_loss(model, batch, mode='random', gen=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = multi_exit_loss(model, batch, mode='all', gen=torch.Generator().manual_seed(9))[1]
    for layer in before:
        assert after[layer] < before[layer], (layer, before, after)
