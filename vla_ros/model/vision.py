"""Vision encoders of the seed families, from transformers' vision towers.

- internvit (Evo-1 / InternVL3): `vision_tower` (InternVLVisionModel) -> drop CLS -> pixel
  shuffle (0.5) -> `multi_modal_projector` (LN, Linear, GELU, Linear); keys as transformers'
  native InternVL port (LeRobot's Evo-1 uses the same).
- prismatic (VLA-Adapter, EdgeVLA): `featurizer` (DINOv2 with registers) and
  `fused_featurizer` (SigLIP), second-to-last layer, patch tokens only, channel-concatenated,
  then `projector` (fc1, GELU, fc2[, GELU, fc3]). Each view arrives with 6 channels: the DINOv2-
  and the SigLIP-normalized image. Published Prismatic weights use timm key names; mapping them
  onto these transformers towers is the converter's job (timm itself cannot be installed
  beside the CPU torch build: its torchvision dependency fails to import).
- molmo_clip (A1 / Molmo): `image_vit` (CLIP ViT), two hidden layers concatenated, 2x2
  `image_pooling_2d` attention with the mean of the four patches as query, `image_projector`
  (SwiGLU MLP); optionally Molmo's `pad_embed`, added by each patch's padding fraction (the
  vision graph then takes per-patch image fractions beside the pixels); with A1's
  overlap-and-resize-c2 crop mode, two image blocks per camera from one ViT pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    InternVLVisionConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.internvl.modeling_internvl import InternVLVisionModel

from vla_ros.model.config import VisionConfig


def pixel_shuffle(x: torch.Tensor, scale: float) -> torch.Tensor:
    """InternVL's pixel shuffle: (B, W, H, C) -> (B, W*s, H*s, C/s^2)."""
    b, w, h, c = x.shape
    x = x.reshape(b, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3)
    x = x.reshape(b, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3)


class InternVisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, lm_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_tower = InternVLVisionModel(InternVLVisionConfig(
            hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            image_size=[cfg.image_size] * 2, patch_size=[cfg.patch_size] * 2,
            attention_bias=cfg.qkv_bias))
        width = cfg.hidden_size * int(round(1 / cfg.downsample_ratio)) ** 2
        self.multi_modal_projector = nn.Module()
        self.multi_modal_projector.layer_norm = nn.LayerNorm(width)
        self.multi_modal_projector.linear_1 = nn.Linear(width, lm_width)
        self.multi_modal_projector.linear_2 = nn.Linear(lm_width, lm_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, T, D)
        x = self.vision_tower(pixel_values=pixels).last_hidden_state[:, 1:]
        g = self.cfg.grid
        x = pixel_shuffle(x.reshape(x.shape[0], g, g, -1), self.cfg.downsample_ratio)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        p = self.multi_modal_projector
        return p.linear_2(F.gelu(p.linear_1(p.layer_norm(x))))


class PrismaticEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, lm_width: int, three_layer_projector: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.featurizer = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, image_size=cfg.image_size,
            patch_size=cfg.patch_size, num_register_tokens=cfg.num_register_tokens,
            mlp_ratio=cfg.intermediate_size // cfg.hidden_size))
        self.fused_featurizer = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=cfg.siglip_hidden_size, intermediate_size=cfg.siglip_intermediate_size,
            num_hidden_layers=cfg.siglip_num_layers, num_attention_heads=cfg.siglip_num_heads,
            image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act=cfg.siglip_act))
        width = cfg.hidden_size + cfg.siglip_hidden_size
        inner = cfg.projector_hidden or (4 * width if three_layer_projector else lm_width)
        self.projector = nn.Module()
        self.projector.fc1 = nn.Linear(width, inner)
        self.projector.fc2 = nn.Linear(inner, lm_width)
        self.projector.fc3 = nn.Linear(lm_width, lm_width) if three_layer_projector else None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 6, H, W) -> (N, T, D)
        return self.project(self.features(pixels))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 6, H, W) -> (N, T, D_dino + D_siglip), before the projector."""
        layer = self.cfg.feature_layers[0]
        dino = self.featurizer(pixel_values=pixels[:, :3], output_hidden_states=True)
        prefix = 1 + self.cfg.num_register_tokens  # CLS + registers
        d = dino.hidden_states[layer][:, prefix:]
        s = self.fused_featurizer(pixel_values=pixels[:, 3:6],
                                  output_hidden_states=True).hidden_states[layer]
        return torch.cat([d, s], dim=-1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        p = self.projector
        x = p.fc2(F.gelu(p.fc1(x)))
        return p.fc3(F.gelu(x)) if p.fc3 is not None else x


class MolmoPooling(nn.Module):
    """2x2 attention pooling; the query is the mean of the window ("attention_meanq")."""

    def __init__(self, width: int, num_heads: int, out: int = 0) -> None:
        super().__init__()
        self.num_heads = num_heads
        out = out or width  # Molmo: 2 x 1024 concatenated ViT layers pooled to 1024
        self.wq = nn.Linear(width, out)
        self.wk = nn.Linear(width, out)
        self.wv = nn.Linear(width, out)
        self.wo = nn.Linear(out, out)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:  # (N, 4, C) -> (N, out)
        n, w, _ = windows.shape
        c = self.wo.in_features
        hd = c // self.num_heads
        q = self.wq(windows.mean(dim=1, keepdim=True)).view(n, 1, self.num_heads, hd)
        k = self.wk(windows).view(n, w, self.num_heads, hd)
        v = self.wv(windows).view(n, w, self.num_heads, hd)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2))
        return self.wo(o.transpose(1, 2).reshape(n, c))


class MolmoClipEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, lm_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_vit = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            image_size=cfg.image_size, patch_size=cfg.patch_size))
        width = cfg.hidden_size * len(cfg.feature_layers)
        self.image_pooling_2d = MolmoPooling(width, cfg.num_heads, cfg.pool_dim)
        pooled = cfg.pool_dim or width
        inner = cfg.projector_hidden or lm_width
        self.image_projector = nn.Module()
        self.image_projector.w1 = nn.Linear(pooled, inner, bias=False)
        self.image_projector.w3 = nn.Linear(pooled, inner, bias=False)
        self.image_projector.w2 = nn.Linear(inner, lm_width, bias=False)
        self.pad_embed = nn.Parameter(torch.zeros(2, width)) if cfg.pad_embed else None

    def forward(self, pixels: torch.Tensor, patch_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(N, 3, H, W) [, (N, grid * grid) image fraction per patch] -> (N, blocks * T, D),
        blocks = `blocks_per_camera` image blocks per image (global first, then the crop)."""
        out = self.image_vit(pixel_values=pixels, output_hidden_states=True)
        x = torch.cat([out.hidden_states[i] for i in self.cfg.feature_layers], -1)[:, 1:]
        if self.pad_embed is not None:
            if patch_mask is None:
                raise ValueError('this encoder has a pad_embed: pass each image\'s per-patch '
                                 'image fraction (patch_mask)')
            # Molmo's "pad_and_partial_pad": row 0 where a patch is all padding, row 1 where
            # it is part padding, added before pooling (so the mean query sees it too).
            all_pad = (patch_mask == 0).to(x.dtype)[..., None]
            partial = ((patch_mask > 0) & (patch_mask < 1)).to(x.dtype)[..., None]
            padded = x + self.pad_embed[0] * all_pad + self.pad_embed[1] * partial
        else:
            padded = x
        n, blocks = x.shape[0], self.cfg.blocks_per_camera
        if blocks == 2:
            # overlap-and-resize-c2 with upstream's fixed 1 x 1 tiling: the crop is the global
            # resize again (same size, same pixels), so one ViT pass serves both. Upstream pads
            # the crop's image_masks with -1, which its partial-padding test (< 1 and != 0)
            # counts on every patch: the crop gets pad_embed row 1 everywhere.
            crop = x + self.pad_embed[1] if self.pad_embed is not None else x
            padded = torch.stack([padded, crop], dim=1).flatten(0, 1)  # (N * 2, P, C)
        m, g, c = padded.shape[0], self.cfg.grid, padded.shape[-1]
        x = padded.reshape(m, g // 2, 2, g // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        x = self.image_pooling_2d(x.reshape(-1, 4, c)).reshape(m, (g // 2) ** 2, -1)
        p = self.image_projector
        # Molmo's ImageProjectorMLP with llama_swiglu: w2(silu(w1 x) * w3 x)
        x = p.w2(F.silu(p.w1(x)) * p.w3(x))
        return x.reshape(n, blocks * x.shape[1], x.shape[2])


def build_vision(cfg: VisionConfig, lm_width: int, family: str) -> nn.Module | None:
    if cfg.kind == 'none':  # a text-and-state model (an A1 built without vision_backbone)
        return None
    if cfg.kind == 'internvit':
        return InternVisionEncoder(cfg, lm_width)
    if cfg.kind == 'prismatic':
        return PrismaticEncoder(cfg, lm_width, three_layer_projector=family == 'vla_adapter')
    return MolmoClipEncoder(cfg, lm_width)


def image_channels(cfg: VisionConfig) -> int:
    return 6 if cfg.kind == 'prismatic' else 3
