"""Preset model shapes for `vla-ros export --preset` (random weights; benchmarks of the full
size and of CPU-friendly mid sizes). The `-full` presets have the published checkpoints'
shapes and conventions (reference/seeds.md); converting a published checkpoint gives the
same config with its real weights.
"""

from __future__ import annotations

from dataclasses import replace

from vla_ros.model.config import HeadConfig, LMConfig, VisionConfig, VLAConfig

# DINOv2-L/14-reg4 + SigLIP-so400m at 224 px, second-to-last layer (Prismatic "dinosiglip").
DINOSIGLIP_224 = VisionConfig('prismatic', image_size=224, patch_size=14, hidden_size=1024,
                              num_layers=24, num_heads=16, intermediate_size=4096,
                              siglip_hidden_size=1152, siglip_num_layers=27,
                              siglip_num_heads=16, siglip_intermediate_size=4304,
                              feature_layers=(-2,), siglip_act='gelu')
DINOSIGLIP_MID = VisionConfig('prismatic', image_size=224, patch_size=14, hidden_size=384,
                              num_layers=6, num_heads=6, intermediate_size=1536,
                              siglip_hidden_size=384, siglip_num_layers=6, siglip_num_heads=6,
                              siglip_intermediate_size=1536, feature_layers=(-2,),
                              siglip_act='gelu', projector_hidden=1536)
QWEN_05B = LMConfig(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2,
                    intermediate_size=4864, vocab_size=151936)
LM_MID = LMConfig(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                  intermediate_size=1408, vocab_size=32000)
# VLA-Adapter's conventions (fidelity.md §1): shifted feature spans, normed last state, bf16
# query features; 8 policy heads, 64 action queries, Pro blocks; LIBERO H = 8, A = 7, P = 8.
_BRIDGE = dict(type='bridge', num_heads=8, num_action_queries=64, pro=True, feature_shift=1,
               norm_last_features=True, bf16_features=True)
# EdgeVLA's: 256 logits over OpenVLA's 255 centres, read one position to the left.
_NAR = dict(type='nar_tokens', num_bins=256, bin_scheme='openvla', feature_shift=1)

PRESETS = {
    # Evo-1 as published: InternViT-300M at 448 px, 14 Qwen2.5-0.5B layers, 8-block DiT,
    # H = 50, A = 24, 3 views; the prompt pads to 1024 tokens like Evo-1's.
    'evo1-full': replace(VLAConfig.evo1(), text_len=256, exit_layers=(1, 3, 5, 7, 9, 11, 13)),
    # A mid-size Evo-1 shape (~60 M parameters) that runs in well under a second on a
    # 2-core CPU: the package for CPU benchmarks.
    'evo1-mid': VLAConfig(
        family='evo1', lm=LM_MID,
        vision=VisionConfig('internvit', image_size=224, patch_size=14, hidden_size=384,
                            num_layers=6, num_heads=6, intermediate_size=1536),
        head=HeadConfig(type='flow_dit', num_layers=4, num_heads=8, intermediate_size=2048,
                        state_hidden=512),
        cameras=('scene', 'wrist'), state_dim=8, action_dim=8, chunk_len=20, text_len=64,
        exit_layers=(1, 3, 5, 7)),
    # A few-hundred-thousand-parameter Evo-1 with Evo-1's chunk (H = 20 here) and 8-wide
    # actions: a flow head fast enough to sample thousands of chunks on a CPU (vla-ros
    # bench queue --flow-package).
    'evo1-small': VLAConfig.tiny('evo1', state_dim=8, action_dim=8, chunk_len=20),
    # A mid-size A1 shape (~100 M parameters): Molmo-style CLIP vision, a bidirectional
    # 12-layer decoder, and the flow expert that reads each layer's keys and values, so
    # both the backbone and the expert get cheaper at earlier exits.
    'a1-mid': VLAConfig(
        family='a1',
        lm=LMConfig(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4,
                    intermediate_size=2048, vocab_size=32000, causal=False),
        vision=VisionConfig('molmo_clip', image_size=224, patch_size=14, hidden_size=256,
                            num_layers=4, num_heads=4, intermediate_size=1024,
                            feature_layers=(-2, -3)),
        head=HeadConfig(type='flow_expert', hidden_size=512, num_heads=8,
                        intermediate_size=1024),
        cameras=('scene', 'wrist'), state_dim=8, action_dim=8, chunk_len=10, text_len=32,
        exit_layers=(1, 3, 5, 7, 9, 11)),
    # VLA-Adapter(-Pro) as published for LIBERO: Qwen2.5-0.5B, two 224 px views.
    'vla_adapter-full': VLAConfig(
        family='vla_adapter', lm=QWEN_05B, vision=DINOSIGLIP_224,
        head=HeadConfig(hidden_size=896, **_BRIDGE), cameras=('scene', 'wrist'),
        state_dim=8, action_dim=7, chunk_len=8, text_len=64, text_padding='left',
        exit_layers=(5, 11, 17, 23)),
    'vla_adapter-mid': VLAConfig(
        family='vla_adapter', lm=LM_MID, vision=DINOSIGLIP_MID,
        head=HeadConfig(hidden_size=512, **_BRIDGE), cameras=('scene', 'wrist'),
        state_dim=8, action_dim=7, chunk_len=8, text_len=48, text_padding='left',
        exit_layers=(1, 3, 5, 7)),
    # EdgeVLA as published: Qwen2-0.5B (vocabulary + <|pad|>, rounded up to 64), one view,
    # one 7-D action per forward.
    'edgevla-full': VLAConfig(
        family='edgevla', lm=replace(QWEN_05B, vocab_size=151680), vision=DINOSIGLIP_224,
        head=HeadConfig(**_NAR), cameras=('scene',), state_dim=7, action_dim=7, chunk_len=1,
        text_len=48, text_padding='left', exit_layers=(5, 11, 17, 23)),
    'edgevla-mid': VLAConfig(
        family='edgevla', lm=LM_MID, vision=DINOSIGLIP_MID, head=HeadConfig(**_NAR),
        cameras=('scene',), state_dim=7, action_dim=7, chunk_len=1, text_len=48,
        text_padding='left', exit_layers=(1, 3, 5, 7)),
}
