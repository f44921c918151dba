"""A1's Molmo vision path -> our molmo_clip encoder, image block and camera step.

Upstream (`a1/image_vit.py`, `a1/model.py MolmoVisionBackbone`, `a1/data/model_preprocessor.py`):
a CLIP ViT whose patch embedding is a Linear over (dy, dx, channel)-flattened patches, the
hidden states of `vit_layers` concatenated, `pad_embed` (2, width) added to patches that are
all / partly padding ("pad_and_partial_pad"), 2x2 windows pooled by attention with the window
mean as query ("attention_meanq"), then a SwiGLU projector w2(silu(w1 x) * w3 x). In the
prompt each image is `<im_start>` + rows x (cols `<im_patch>` + `<im_col>`) + `<im_end>`, all
images right after BOS and before the text, and the features are added to the `<im_patch>`
embeddings. Preprocessing ("resize" crop mode): aspect-preserving torch bilinear resize with
antialias into the square input, centred on `pad_value` before the OpenAI-CLIP normalization.

"overlap-and-resize-c2" (the released LIBERO-exit checkpoint's mode): upstream computes a
tiling from max_crops, then overrides it with (1, 1), so the overlap margins cancel and its one
crop is resize_and_pad into the full input size, the very pixels of the global image. Each
image gives two blocks, global first: `<im_start>` rows `<im_end>` `<im_start>` rows
`<im_end>`, both 12 x 12 with `<im_col>` (the same pooling). image_masks: the global image
gets the crop's per-patch fraction (the same geometry); the crop gets upstream's -1 fill, which
pad_and_partial_pad counts as partial padding on every patch. Our encoder runs the ViT once per
camera and pools both blocks; the camera step is the same resize_pad.

Other crop modes (A1 implements no others), ViTs, poolings, projectors and padding embeddings
are refused with their name.
"""

from __future__ import annotations

import torch

from vla_ros.export.convert import ConvertError
from vla_ros.export.convert.keys import KeyMap

UP = 'vision_backbone.'
OURS = 'vision.'
VIT = 'vision.image_vit.'  # transformers' CLIPVisionModel
MARKERS = ('<im_start>', '<im_end>', '<im_patch>', '<im_col>')
CROP_MODES = ('resize', 'overlap-and-resize-c2')
# ViT block parts: upstream name -> transformers' CLIPEncoderLayer name
BLOCK = {'attention.wq': 'self_attn.q_proj', 'attention.wk': 'self_attn.k_proj',
         'attention.wv': 'self_attn.v_proj', 'attention.wo': 'self_attn.out_proj',
         'feed_forward.w1': 'mlp.fc1', 'feed_forward.w2': 'mlp.fc2',
         'attention_norm': 'layer_norm1', 'ffn_norm': 'layer_norm2'}


def _require(ok: bool, field: str, value, supported: str) -> None:
    if not ok:
        raise ConvertError(f'A1 {field} = {value!r}: only {supported} converts')


def check(mc: dict) -> dict:
    """The upstream vision settings, after refusing what our encoder does not compute."""
    vb = mc['vision_backbone']
    crop = mc.get('crop_mode')
    if crop not in CROP_MODES:
        raise ConvertError(f'A1 crop_mode = {crop!r} (max_crops {mc.get("max_crops")}): only '
                           f'{CROP_MODES} convert, the modes A1\'s MultiModalPreprocessor '
                           'implements (it raises NotImplementedError on the others)')
    if crop == 'overlap-and-resize-c2':
        margins = tuple(mc.get('overlap_margins', (4, 4)))
        # Upstream asserts these before cropping; its tiling is fixed at 1 x 1, so margins and
        # max_crops change nothing else (the crop is resized to the full input size).
        _require(len(margins) == 2 and all(int(m) % 2 == 0 for m in margins),
                 'overlap_margins', margins, 'two multiples of the 2x2 pooling')
        _require(int(mc.get('max_crops', 1)) >= 1, 'max_crops', mc.get('max_crops'),
                 'at least 1 (upstream picks a tiling among max_crops before fixing 1 x 1)')
    _require(vb.get('image_model_type', 'openai') == 'openai', 'vision_backbone.'
             'image_model_type', vb.get('image_model_type'), "the OpenAI CLIP ViT ('openai')")
    _require(str(mc.get('image_pooling_2d')).replace('-', '_') == 'attention_meanq',
             'image_pooling_2d', mc.get('image_pooling_2d'), "'attention_meanq'")
    _require((mc.get('image_pooling_h'), mc.get('image_pooling_w')) == (2, 2),
             'image_pooling_h/w', (mc.get('image_pooling_h'), mc.get('image_pooling_w')), '2x2')
    _require(mc.get('image_projector') == 'mlp' and mc.get('activation_type') == 'swiglu',
             'image_projector/activation_type', (mc.get('image_projector'),
                                                 mc.get('activation_type')), "('mlp', 'swiglu')")
    _require(mc.get('image_padding_embed') in (None, 'pad_and_partial_pad'),
             'image_padding_embed', mc.get('image_padding_embed'),
             "None or 'pad_and_partial_pad'")
    _require(vb.get('image_mlp_activations') == 'quick_gelu',
             'vision_backbone.image_mlp_activations', vb.get('image_mlp_activations'),
             "'quick_gelu' (CLIP's)")
    _require(float(vb.get('image_norm_eps', 1e-5)) == 1e-5, 'vision_backbone.image_norm_eps',
             vb.get('image_norm_eps'), '1e-5')
    _require(vb.get('resize_mode', 'default') in ('default', 'torch-bilinear'),
             'vision_backbone.resize_mode', vb.get('resize_mode'), "'default' (torch-bilinear)")
    heads, kv = int(vb['image_num_heads']), int(vb['image_num_key_value_heads'])
    width, head_dim = int(vb['image_emb_dim']), int(vb['image_head_dim'])
    _require(kv == heads and heads * head_dim == width, 'vision_backbone heads/kv heads/'
             'head_dim', (heads, kv, head_dim), f'num_heads x head_dim = width {width}, no GQA')
    size = tuple(vb['image_default_input_size'])
    patch = int(vb['image_patch_size'])
    _require(len(size) == 2 and size[0] == size[1] and size[0] % (2 * patch) == 0,
             'vision_backbone.image_default_input_size', size,
             f'a square whose side is a multiple of 2 x patch ({2 * patch})')
    grid = size[0] // patch
    _require(int(vb['image_num_pos']) == grid * grid + 1, 'vision_backbone.image_num_pos',
             vb['image_num_pos'], f'{grid * grid + 1} (no position interpolation)')
    return vb


def vision_config(mc: dict, tok, cameras: tuple[str, ...], bos: int) -> dict:
    """VLAConfig fields for the vision path: the encoder, cameras, image block tokens."""
    from vla_ros.model.config import VisionConfig

    vb = check(mc)
    ids = {t: tok.token_to_id(t) for t in MARKERS}
    if None in ids.values():
        raise ConvertError(f'tokenizer.json lacks {[t for t, i in ids.items() if i is None]} '
                           '(a1.tokenizer EXTRA_TOKENS)')
    if not cameras:
        raise ConvertError('vla_ros_convert.json "cameras" must name at least one camera')
    n_layers = int(vb['image_num_layers'])
    # Upstream indexes the list of block outputs; transformers' hidden_states start with the
    # embeddings, so a non-negative index moves up by one (negative ones coincide).
    layers = tuple(int(i) if int(i) < 0 else int(i) + 1 for i in mc['vit_layers'])
    if any(not -n_layers <= i <= n_layers for i in layers):
        raise ConvertError(f'A1 vit_layers {mc["vit_layers"]} index past the ViT\'s '
                           f'{n_layers} blocks')
    width = int(vb['image_emb_dim'])
    mlp_hidden = int(mc.get('mlp_hidden_size') or int(mc['mlp_ratio']) * int(mc['d_model']))
    vision = VisionConfig('molmo_clip', image_size=int(vb['image_default_input_size'][0]),
                          patch_size=int(vb['image_patch_size']), hidden_size=width,
                          num_layers=n_layers, num_heads=int(vb['image_num_heads']),
                          intermediate_size=int(vb['image_mlp_dim']), feature_layers=layers,
                          pool_dim=width, projector_hidden=mlp_hidden // 2,
                          pad_embed=mc.get('image_padding_embed') == 'pad_and_partial_pad',
                          crop_mode=mc['crop_mode'])
    start, end = ids['<im_start>'], ids['<im_end>']
    n_blocks = len(cameras) * vision.blocks_per_camera  # each <im_start> ... <im_end>
    blocks = ((bos, start),) + ((end, start),) * (n_blocks - 1) + ((end,),)
    cols = ids['<im_col>'] if mc.get('use_col_tokens', True) else -1
    return dict(vision=vision, cameras=tuple(cameras), image_token_id=ids['<im_patch>'],
                image_col_token_id=cols, image_merge='add', image_index='first',
                prompt_blocks=blocks)


def camera_spec(cfg, mc: dict) -> dict:
    """ExportSpec.camera: the resize-and-pad step (its patch mask feeds pad_embed)."""
    v = cfg.vision
    step = {'op': 'resize_pad', 'size': v.image_size, 'patch': v.patch_size,
            'fill': float(mc.get('pad_value', 0.0)), 'method': 'torch_bilinear'}
    return {'resize': 'bilinear', 'steps': [step]}


def map_vision(km: KeyMap, cfg) -> None:
    v = cfg.vision
    vit = UP + 'image_vit.'
    key = vit + 'patch_embedding.weight'
    w = km.get(key)
    want = (v.hidden_size, v.patch_size * v.patch_size * 3)
    if tuple(w.shape) != want:
        raise ConvertError(f'{key}: upstream gives shape {tuple(w.shape)}, our model needs '
                           f'{want} (a Linear over patch_size^2 x 3 pixels)')
    # Upstream flattens each patch as (dy, dx, channel) (pixels_to_patches); a conv kernel is
    # (out, channel, dy, dx).
    km.put(VIT + 'embeddings.patch_embedding.weight',
           w.view(v.hidden_size, v.patch_size, v.patch_size, 3).permute(0, 3, 1, 2))
    km.source[VIT + 'embeddings.patch_embedding.weight'] = key
    km.take(vit + 'class_embedding', VIT + 'embeddings.class_embedding')
    km.take(vit + 'positional_embedding', VIT + 'embeddings.position_embedding.weight')
    km.take_prefix(vit + 'pre_ln.', VIT + 'pre_layrnorm.')
    for n in range(v.num_layers):
        up, me = f'{vit}transformer.resblocks.{n}.', f'{VIT}encoder.layers.{n}.'
        for a, b in BLOCK.items():
            km.take_prefix(f'{up}{a}.', f'{me}{b}.')
    # transformers' CLIP ends with a post_layernorm that upstream lacks; our encoder reads
    # hidden states, never its output, so it is filled with the identity.
    km.put(VIT + 'post_layernorm.weight', torch.ones(v.hidden_size))
    km.put(VIT + 'post_layernorm.bias', torch.zeros(v.hidden_size))
    km.take_prefix(UP + 'image_pooling_2d.', OURS + 'image_pooling_2d.')
    km.take_prefix(UP + 'image_projector.', OURS + 'image_projector.')
    if v.pad_embed:
        km.take(UP + 'pad_embed', OURS + 'pad_embed')
