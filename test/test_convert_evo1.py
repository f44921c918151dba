"""The Evo-1 converter's vision mapping, on a checkpoint built in the upstream key layout
(InternViT + mlp1 of InternVL's remote code; the parity case carries no vision weights)."""

from pathlib import Path

import torch
from parity import evo1 as driver
from safetensors.torch import load_file

from vla_ros.export.checkpoint import load_checkpoint
from vla_ros.export.convert import convert_checkpoint

CASE = Path(__file__).parent / 'data' / 'parity' / 'evo1'
VIT = driver.VIT


def test_internvit_qkv_is_split_with_its_bias_and_mlp1_lands_in_the_projector(tmp_path):
    src = driver.arrange(CASE, tmp_path / 'published')
    convert_checkpoint(src, tmp_path / 'ckpt', 'evo1', progress=False)
    up = load_file(str(src / 'model.safetensors'))
    model, spec, _ = load_checkpoint(tmp_path / 'ckpt')
    sd = model.state_dict()
    tower = 'vision.vision_tower.encoder.layer.0.attention.'
    for kind in ('weight', 'bias'):
        q, k, v = up[f'{VIT}encoder.layers.0.attn.qkv.{kind}'].chunk(3)
        assert torch.equal(sd[tower + f'q_proj.{kind}'], q)
        assert torch.equal(sd[tower + f'k_proj.{kind}'], k)
        assert torch.equal(sd[tower + f'v_proj.{kind}'], v)
    assert torch.equal(sd['vision.vision_tower.encoder.layer.0.lambda_1'],
                       up[VIT + 'encoder.layers.0.ls1'])
    assert torch.equal(sd['vision.multi_modal_projector.linear_2.weight'],
                       up['embedder.model.mlp1.3.weight'])
    assert model.cfg.vision.qkv_bias and model.cfg.head.relu_mlps
    assert spec.flow_steps == 50 and spec.camera['channel_order'] == 'bgr'
    images = [torch.zeros(1, 3, 56, 56) for _ in model.cfg.cameras]
    assert model.encode_images(images).shape == (1, 12, 32)  # 4 tokens per view, LM width
