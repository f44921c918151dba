"""A VLA: vision encoder -> projector -> decoder with exit points -> action head.

The forward is split at the same seams the exported graphs use (vision, embed, decoder
segments, head parts), so the torch reference and the ONNX package compute the same thing
step by step. Every exit can produce an action with the shared head (A1's multi-exit design),
which is what lets our own models and fine-tuned ones use early exit.

Prompt layout (one static sequence, so graph shapes are fixed): per family, a list of items
- tokens: literal ids (BOS, EOS, VLA-Adapter's action queries, EdgeVLA's action positions,
  A1's proprio slot and action tokens), text: the instruction padded to `text_len`, image: the
  placeholder tokens of one image block (one per camera; A1's overlap-and-resize-c2: two,
  the global image then its crop), replaced by its visual tokens in the embedding (or, with
  `image_merge='add'`, added to them, as Molmo does). With `image_col_token_id`, each row of
  an image's placeholders ends with that token (Molmo's <im_col>), which keeps its embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vla_ros.model.config import VLAConfig
from vla_ros.model.decoder import Decoder
from vla_ros.model.heads.bridge import BridgeHead
from vla_ros.model.heads.flow_dit import FlowDiTHead
from vla_ros.model.heads.flow_expert import FlowExpertHead
from vla_ros.model.heads.token_heads import NARTokenHead, RegressionHead
from vla_ros.model.vision import build_vision, image_channels
from vla_ros.runtime.policy.flow import euler_integrate


@dataclass(frozen=True)
class Span:
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Layout:
    items: tuple[dict, ...]
    length: int
    images: tuple[Span, ...]  # per image block: cameras in order, each camera's blocks
    text: Span
    queries: Span | None = None  # VLA-Adapter
    actions: Span | None = None  # EdgeVLA / A1 regression
    proprio: int | None = None  # A1 regression
    blocked_keys: tuple[int, int] | None = None  # EdgeVLA: [actions ; EOS] hidden as keys


def build_layout(cfg: VLAConfig) -> Layout:
    n_img = cfg.vision.tokens_per_image
    items: list[dict] = []
    pos = 0
    spans: dict[str, Span] = {}

    def add(item: dict, n: int, key: str | None = None) -> None:
        nonlocal pos
        items.append(item)
        if key:
            spans[key] = Span(pos, pos + n)
        pos += n

    prismatic = cfg.family in ('vla_adapter', 'edgevla')
    if prismatic:
        add({'kind': 'tokens', 'ids': [cfg.bos_id]}, 1)
    blocks = cfg.prompt_blocks
    image_keys = []
    for cam in cfg.cameras:  # each camera's blocks in a row (A1: global image, then crop)
        for b in range(cfg.vision.blocks_per_camera):
            k = len(image_keys)
            if blocks and blocks[k]:
                add({'kind': 'tokens', 'ids': list(blocks[k])}, len(blocks[k]))
            item = {'kind': 'image', 'camera': cam, 'id': cfg.image_token_id, 'count': n_img}
            if cfg.image_col_token_id >= 0:
                item.update(cols=cfg.image_row_len, col_id=cfg.image_col_token_id)
            image_keys.append(f'image:{cam}' + (f':{b}' if b else ''))
            add(item, len(image_run(item)), image_keys[-1])
    if blocks and blocks[-1]:
        add({'kind': 'tokens', 'ids': list(blocks[-1])}, len(blocks[-1]))
    add({'kind': 'text'}, cfg.text_len, 'text')
    n_act = cfg.chunk_len * cfg.action_dim
    proprio = None
    if cfg.family == 'vla_adapter':
        q = cfg.head.num_action_queries
        add({'kind': 'tokens', 'ids': [cfg.query_token_id], 'repeat': q}, q, 'queries')
        add({'kind': 'tokens', 'ids': [cfg.eos_id]}, 1)
    elif cfg.family == 'edgevla':
        add({'kind': 'tokens', 'ids': [cfg.action_token_id], 'repeat': n_act}, n_act, 'actions')
        add({'kind': 'tokens', 'ids': [cfg.eos_id]}, 1)
    elif cfg.head.type == 'mlp_regression':
        proprio = pos
        add({'kind': 'tokens', 'ids': [cfg.proprio_token_id]}, 1)
        add({'kind': 'tokens', 'ids': [cfg.action_token_id], 'repeat': n_act}, n_act, 'actions')
    elif cfg.head.proprio_token:  # A1 flow matching with use_proprio: the slot ends the prompt
        proprio = pos
        add({'kind': 'tokens', 'ids': [cfg.proprio_token_id]}, 1)
    actions = spans.get('actions')
    blocked = (actions.start, actions.end + 1) if cfg.family == 'edgevla' else None
    return Layout(items=tuple(items), length=pos,
                  images=tuple(spans[k] for k in image_keys), text=spans['text'],
                  queries=spans.get('queries'), actions=actions, proprio=proprio,
                  blocked_keys=blocked)


def image_run(item: dict) -> list[int]:
    """The token ids of a layout image item: `count` placeholders, with `col_id` after every
    `cols` of them when the item has row markers (the runtime's PromptBuilder lays it out the
    same way from the manifest)."""
    if 'cols' not in item:
        return [item['id']] * item['count']
    return ([item['id']] * item['cols'] + [item['col_id']]) * (item['count'] // item['cols'])


def image_rows(span: Span, cfg: VLAConfig) -> list[tuple[Span, int]]:
    """(placeholder span, index of its first visual token) per run of one camera's image
    span: the whole span, or one per row when rows end with a marker token."""
    if cfg.image_col_token_id < 0:
        return [(span, 0)]
    cols = cfg.image_row_len
    return [(Span(span.start + r * (cols + 1), span.start + r * (cols + 1) + cols), r * cols)
            for r in range(cfg.vision.tokens_per_image // cols)]


class VLA(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = build_layout(cfg)
        lm_width = cfg.lm.hidden_size
        self.vision = build_vision(cfg.vision, lm_width, cfg.family)
        self.decoder = Decoder(cfg.lm)
        head_type = cfg.head.type
        if head_type == 'flow_dit':
            self.head = FlowDiTHead(cfg)
        elif head_type == 'flow_expert':
            self.head = FlowExpertHead(cfg)
        elif head_type == 'mlp_regression':
            self.head = RegressionHead(cfg)
        elif head_type == 'bridge':
            self.head = BridgeHead(cfg)
            self.action_queries = nn.Embedding(cfg.head.num_action_queries, lm_width)
        else:
            self.head = NARTokenHead(cfg)

    # --- prefix: vision and embedding ------------------------------------------------------

    def encode_images(self, images: list[torch.Tensor],
                      patch_masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """One (B, C, H, W) tensor per camera [and, with `vision.pad_embed`, one (B, grid *
        grid) image fraction per patch] -> (B, cameras * blocks_per_camera * tokens, D), in
        the layout's order of image blocks."""
        if self.vision is None:
            return torch.zeros(1, 0, self.cfg.lm.hidden_size)
        b = images[0].shape[0]
        if self.cfg.vision.pad_embed:  # cameras batched together
            if patch_masks is None:
                raise ValueError('vision.pad_embed: pass one patch mask per camera')
            tokens = self.vision(torch.cat(images, dim=0), torch.cat(patch_masks, dim=0))
        else:
            tokens = self.vision(torch.cat(images, dim=0))
        return torch.cat(tokens.split(b, dim=0), dim=1)

    def embed(self, input_ids: torch.Tensor, vision_tokens: torch.Tensor,
              state: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the placeholder runs replaced by visual tokens, or the tokens
        added to them (`image_merge`), and, per family, action queries or the projected
        state in their slots."""
        lay = self.layout
        h = self.decoder.embed_tokens(input_ids)
        replacements: list[tuple[Span, torch.Tensor]] = []
        n = self.cfg.vision.tokens_per_image
        add = self.cfg.image_merge == 'add'
        per_cam = self.cfg.vision.blocks_per_camera
        last_cam = len(lay.images) // per_cam - 1
        for i, span in enumerate(lay.images):
            src = i
            if self.cfg.image_index == 'first':  # A1: every camera into the first's blocks
                if i >= per_cam:
                    continue  # a later camera's block keeps its bare <im_patch> embeddings
                src = last_cam * per_cam + i  # the last camera's write lands
            for run, first in image_rows(span, self.cfg):
                tokens = vision_tokens[:, src * n + first:src * n + first + run.length]
                if add:
                    tokens = h[:, run.start:run.end] + tokens.to(h.dtype)
                replacements.append((run, tokens))
        b = input_ids.shape[0]
        if lay.queries is not None:
            q = self.action_queries.weight[None].expand(b, -1, -1)
            replacements.append((lay.queries, q))
        if lay.proprio is not None:
            replacements.append((Span(lay.proprio, lay.proprio + 1),
                                 self.head.proprio(state)[:, None, :]))
        pieces, pos = [], 0
        for span, value in sorted(replacements, key=lambda r: r[0].start):
            pieces += [h[:, pos:span.start], value.to(h.dtype)]
            pos = span.end
        pieces.append(h[:, pos:])
        return torch.cat(pieces, dim=1)

    def segment(self, h: torch.Tensor, key_mask: torch.Tensor, start: int, end: int):
        return self.decoder.run_layers(h, key_mask, start, end, self.layout.blocked_keys)

    def feature_positions(self) -> torch.Tensor:
        """VLA-Adapter: positions read per layer: the visual ("task") tokens, then the
        action queries, both shifted left by `head.feature_shift` (upstream's index math)."""
        lay, shift = self.layout, self.cfg.head.feature_shift
        idx = [i - shift for s in lay.images for i in range(s.start, s.end)]
        idx += list(range(lay.queries.start - shift, lay.queries.end - shift))
        return torch.tensor(idx, dtype=torch.long)

    def action_positions(self) -> tuple[int, int]:
        """[start, end) of the hidden states a token head reads."""
        span, shift = self.layout.actions, self.cfg.head.feature_shift
        return span.start - shift, span.end - shift

    def bridge_features(self, outputs: list[torch.Tensor], start: int,
                        positions: torch.Tensor) -> list[torch.Tensor]:
        """The states the bridge blocks read from layers start, start+1, ...: raw layer
        outputs, except that with `head.norm_last_features` the last layer's is final-normed
        (upstream reads `hidden_states[-1]`, which transformers returns after the norm)."""
        last = self.cfg.lm.num_layers - 1
        feats = []
        for i, o in enumerate(outputs):
            if self.cfg.head.norm_last_features and start + i == last:
                o = self.decoder.norm(o)
            feats.append(o[:, positions])
        return feats

    # --- reference forward ----------------------------------------------------------------

    @torch.no_grad()
    def actions_at_exits(self, images: list[torch.Tensor], input_ids: torch.Tensor,
                         key_mask: torch.Tensor, state: torch.Tensor, noise: torch.Tensor | None,
                         num_steps: int, exits: tuple[int, ...] | None = None,
                         warm_start: bool = False,
                         patch_masks: list[torch.Tensor] | None = None
                         ) -> dict[int, torch.Tensor]:
        """The action (model space, normalized) at each exit, computed the long way. With
        warm_start, each exit's flow solve starts from the previous exit's action (A1's
        inter-layer truncated flow matching); otherwise every exit starts from `noise`."""
        exits = exits or self.cfg.exits
        h = self.embed(input_ids, self.encode_images(images, patch_masks), state)
        out: dict[int, torch.Tensor] = {}
        start, x_prev = 0, None
        kvs: list = []
        head = self.head
        bridge_x = proprio = None
        if isinstance(head, BridgeHead):
            bridge_x, proprio = head.embed(state)
        for exit_layer in exits:
            h, outputs, seg_kv = self.segment(h, key_mask, start, exit_layer + 1)
            if isinstance(head, BridgeHead):
                feats = self.bridge_features(outputs, start, self.feature_positions())
                bridge_x = head.run_blocks(bridge_x, proprio, feats, start)
                out[exit_layer] = head.out(bridge_x)
            elif isinstance(head, FlowExpertHead):
                kvs += seg_kv
                x0 = x_prev if (warm_start and x_prev is not None) else noise

                def velocity(x, t, kvs=kvs):
                    tt = torch.full((x.shape[0],), float(t))
                    suffix = head.run_layers(head.embed(x, tt, state), key_mask, kvs, 0)
                    return head.out(suffix)

                out[exit_layer] = euler_integrate(velocity, x0, noise_at=1, num_steps=num_steps)
            elif isinstance(head, FlowDiTHead):
                ck, cv = head.context(self.decoder.norm(h), state)
                x0 = x_prev if (warm_start and x_prev is not None) else noise

                def velocity(x, t, ck=ck, cv=cv):
                    return head.step(x, torch.full((x.shape[0],), float(t)), ck, cv)

                out[exit_layer] = euler_integrate(velocity, x0, noise_at=0, num_steps=num_steps)
            else:
                a0, a1 = self.action_positions()
                act = self.decoder.norm(h)[:, a0:a1]
                if isinstance(head, RegressionHead):
                    out[exit_layer] = head(act)
                else:
                    out[exit_layer] = head.decode(head.logits(act))
            x_prev = out[exit_layer]
            start = exit_layer + 1
        return out

    def fake_obs(self, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random inputs of the right shapes (images, ids with a padded prompt, mask, state)."""
        g = torch.Generator().manual_seed(seed)
        cfg, lay = self.cfg, self.layout
        size = cfg.vision.image_size
        images = [torch.randn(batch, image_channels(cfg.vision), size, size, generator=g)
                  for _ in cfg.cameras]
        ids = torch.full((batch, lay.length), cfg.pad_id, dtype=torch.long)
        mask = torch.ones(batch, lay.length)
        pos = 0
        for item in lay.items:
            if item['kind'] == 'text':
                n_text = cfg.text_len // 2 + 1
                t0 = pos + (cfg.text_len - n_text if cfg.text_padding == 'left' else 0)
                ids[:, t0:t0 + n_text] = torch.randint(8, cfg.lm.vocab_size, (batch, n_text),
                                                       generator=g)
                mask[:, pos:pos + cfg.text_len] = 0
                mask[:, t0:t0 + n_text] = 1
                pos += cfg.text_len
            elif item['kind'] == 'image':
                run = image_run(item)
                ids[:, pos:pos + len(run)] = torch.tensor(run)
                pos += len(run)
            else:
                n = len(item['ids']) * item.get('repeat', 1)
                ids[:, pos:pos + n] = torch.tensor(item['ids'] * item.get('repeat', 1))
                pos += n
        state = torch.randn(batch, cfg.state_dim, generator=g)
        obs = {'images': images, 'input_ids': ids, 'attention_mask': mask, 'state': state}
        if cfg.vision.pad_embed:  # rows of all-padding, part-padding and image patches
            grid = cfg.vision.grid
            rows = torch.ones(grid)
            rows[0], rows[1] = 0.0, 0.5
            obs['patch_masks'] = [rows.repeat_interleave(grid)[None].expand(batch, -1).clone()
                                  for _ in cfg.cameras]
        return obs
