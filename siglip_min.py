"""siglip-min: the SigLIP model in one file, numerically identical to Hugging Face transformers.

SigLIP is a two-tower image-text model (a ViT and a text transformer) trained with a pairwise sigmoid loss
instead of CLIP's softmax. This file holds the model and only the model: configs, every layer, the towers (SigLIP 2
NaFlex as a variant of the vision embeddings), the two-tower model, the single towers and the image classifier, the
paper's from-scratch initialisation, the losses, checkpoint I/O through name maps (transformers, big_vision .npz,
open_clip) with one from_pretrained for every kind, and the small embedding / zero-shot helpers. Read it top to
bottom: it follows the diagram. Tokenization is in tokenizer.py, image preprocessing in preprocess.py, the command
line in cli.py.

References
  [1] Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, arXiv:2303.15343.
  [2] google-research/big_vision: big_vision/models/vit.py (ViT, MAPHead), models/proj/image_text/two_towers.py,
      trainers/proj/image_text/siglip.py (the loss).
  [3] huggingface/transformers: models/siglip/modeling_siglip.py (SiglipModel), models/siglip2/modeling_siglip2.py
      (Siglip2Model, NaFlex), the oracles our tests compare to.
  [4] Li et al., "Scaling Language-Image Pre-training via Masking" (FLIP), CVPR 2023: patch dropout.
  [5] Tschannen et al., "SigLIP 2: Multilingual Vision-Language Encoders with Improved Semantic Understanding,
      Localization, and Dense Features", arXiv:2502.14786, 2025: NaFlex.

Shapes: B batch, N image tokens (patches), L text tokens, D width, H heads, Dh = D / H, P projection size.
"""
import json
import math
import re
import string
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hub import InputError, check_not_lfs_pointer, read_json, resolve_model_dir

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# config.json's hidden_act -> F.gelu's `approximate`. SigLIP (big_vision) uses the tanh approximation; open_clip and
# timm run their SigLIP 1 releases with the exact erf GELU ("gelu" in transformers), 5e-4 to 9e-4 away on features.
GELU_APPROXIMATIONS = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}


# ----------------------------------------------------------------------------------------------------------------
# Configs: defaults are google/siglip-base-patch16-224. Field names are transformers' so config.json maps 1:1.

@dataclass
class SiglipVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    vision_use_head: bool = True  # False in the towers VLMs take (PaliGemma, Idefics3): no MAP head, no pooled output
    num_patches: int = None  # SigLIP 2 NaFlex: its learned position grid has num_patches = g * g entries; None else

    def __post_init__(self):
        check_config(self, "vision_config")
        if self.num_patches is not None and math.isqrt(self.num_patches) ** 2 != self.num_patches:
            raise InputError(f"vision_config.num_patches={self.num_patches} is not a square (the position grid is g x g)")
        # image_size need not be a multiple of patch_size: so400m-patch14-384 has 384 = 27 * 14 + 6, and its
        # 'valid' convolution ignores the last 6 pixel rows and columns (big_vision and transformers alike).
        if self.image_size < self.patch_size:
            raise InputError(f"vision_config.image_size={self.image_size} is smaller than "
                             f"vision_config.patch_size={self.patch_size}")


@dataclass
class SiglipTextConfig:
    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    projection_size: int = None  # None: same as hidden_size, as in transformers
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    def __post_init__(self):
        if self.projection_size is None:
            self.projection_size = self.hidden_size
        check_config(self, "text_config")


@dataclass
class SiglipConfig:
    """Both towers' configs, and two entries of config.json that are not architecture:

    prompt_template  the zero-shot prompt the checkpoint was trained with ("siglip_min": {"template": ...} in
                     config.json, which transformers ignores); None for Google's checkpoints
    id2label         the classes of an image classifier (transformers' id2label), else None
    """
    text_config: SiglipTextConfig = field(default_factory=SiglipTextConfig)
    vision_config: SiglipVisionConfig = field(default_factory=SiglipVisionConfig)
    prompt_template: str = None
    id2label: dict = None

    @classmethod
    def from_pretrained(cls, path_or_repo_id):
        """The config.json of a folder or a cached Hub id; errors name the file."""
        path = Path(resolve_model_dir(path_or_repo_id)) / "config.json"
        try:
            return cls.from_hf(read_json(path))
        except InputError as e:
            raise InputError(f"{path}: {e}") from None

    @classmethod
    def from_hf(cls, config):
        """From a transformers SiglipConfig or Siglip2Config dict (config.json). Keys we do not use are ignored."""
        model_type = config.get("model_type", "siglip")
        if model_type not in ("siglip", "siglip2"):
            raise InputError(f"model_type {model_type!r} is not two-tower SigLIP ('siglip', or 'siglip2' for NaFlex)")
        extra = json_object(config, "siglip_min")
        template = extra.get("template")
        if template is not None and not isinstance(template, str):
            raise InputError(f"siglip_min.template must be a string, got {template!r}")
        id2label = json_object(config, "id2label")
        if not all(str(k).isdigit() for k in id2label):
            raise InputError(f"id2label keys must be class numbers, got {sorted(id2label)}")
        vision = json_object(config, "vision_config")
        if model_type == "siglip2":  # NaFlex; transformers' Siglip2VisionConfig defaults num_patches to 256
            vision = {"num_patches": NAFLEX_NUM_PATCHES, **vision}
        return cls(text_config=known_fields(SiglipTextConfig, json_object(config, "text_config")),
                   vision_config=known_fields(SiglipVisionConfig, vision),
                   prompt_template=template, id2label={int(k): v for k, v in id2label.items()} or None)

    def to_hf(self, architecture="SiglipModel", dtype=torch.float32):
        """The config.json that transformers reads for `architecture` ("SiglipModel", ...) saved in `dtype`; for
        NaFlex, its Siglip2 class ("Siglip2Model", ...) and model_type."""
        naflex = self.vision_config.num_patches is not None
        config = {"architectures": [hf_architecture(architecture, naflex)], "model_type": "siglip2" if naflex else "siglip",
                  "text_config": asdict(self.text_config), "vision_config": vision_config_json(self.vision_config),
                  "dtype": str(dtype).removeprefix("torch.")}
        if self.prompt_template is not None:
            config["siglip_min"] = {"template": self.prompt_template}
        if self.id2label is not None:
            config["id2label"] = {str(i): name for i, name in self.id2label.items()}
            config["label2id"] = {name: i for i, name in self.id2label.items()}
        return config


NAFLEX_NUM_PATCHES = 256  # transformers' Siglip2VisionConfig default


def hf_architecture(architecture, naflex):
    """transformers' class for `architecture` ("SiglipModel", ...): its Siglip2 twin for NaFlex."""
    return architecture.replace("Siglip", "Siglip2", 1) if naflex else architecture


def vision_config_json(config):
    """The vision config's fields as transformers has them: no num_patches for fixed resolution, no image_size for
    NaFlex (Siglip2VisionConfig has none: images come at their own size)."""
    values = asdict(config)
    del values["image_size" if config.num_patches is not None else "num_patches"]
    return values


def json_object(config, key):
    """config[key] as a dict: {} when absent or null, InputError naming the key when it is not an object."""
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise InputError(f"{key} must be a JSON object, got {type(value).__name__} {value!r}"[:200])
    return value


def known_fields(config_class, values):
    """Build `config_class` from the keys of `values` it knows."""
    names = {f.name for f in fields(config_class)}
    return config_class(**{k: v for k, v in values.items() if k in names})


def check_config(config, where):
    """Fail on the config values this implementation cannot honour, naming the field: every int field a positive
    int, every float a positive number, the width divisible by the heads, SigLIP's GELU."""
    for f in fields(config):
        value, is_int = getattr(config, f.name), isinstance(getattr(config, f.name), int)
        if value is None and f.default is None:
            continue  # an optional field left out
        if f.type is int and not (is_int and not isinstance(value, bool) and value > 0):
            raise InputError(f"{where}.{f.name} must be a positive int, got {value!r}")
        if f.type is bool and not isinstance(value, bool):
            raise InputError(f"{where}.{f.name} must be true or false, got {value!r}")
        if f.type is float and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                    and 0 < value < math.inf):
            raise InputError(f"{where}.{f.name} must be a positive number, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise InputError(f"{where}.hidden_size={config.hidden_size} is not divisible by "
                         f"{where}.num_attention_heads={config.num_attention_heads}")
    if config.hidden_act not in GELU_APPROXIMATIONS:
        raise InputError(f"{where}.hidden_act={config.hidden_act!r}: SigLIP uses 'gelu_pytorch_tanh' (or 'gelu', "
                         f"the exact GELU that open_clip/timm's SigLIP releases run)")


# ----------------------------------------------------------------------------------------------------------------
# Building blocks shared by both towers: a pre-norm transformer encoder (transformers SiglipEncoderLayer).

def layer_norm(dim, eps):
    """LayerNorm with SigLIP's eps (1e-6; torch's default 1e-5 would change every output)."""
    return nn.LayerNorm(dim, eps=eps)


def split_heads(x, num_heads):
    """(B, T, D) -> (B, H, T, Dh)."""
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, H, T, Dh)


def merge_heads(x):
    """(B, H, T, Dh) -> (B, T, D)."""
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, D)


def attend(q, k, v, keep=None, attn_implementation="sdpa"):
    """softmax(q k^T / sqrt(Dh)) v per head. `keep` (B, 1, 1, Tk) bool masks keys out where False.

    "eager" writes the math out (softmax in float32, as transformers' eager_attention_forward);
    "sdpa" calls torch's fused kernel on the same inputs. Both are the same function of q, k, v.
    """
    if attn_implementation == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=q.shape[-1] ** -0.5)  # (B, H, Tq, Dh)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, Tq, Tk)
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)  # (B, H, Tq, Tk)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)  # (B, H, Tq, Tk)
    return probs @ v  # (B, H, Tq, Dh)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (transformers SiglipAttention)."""

    def __init__(self, dim, num_heads, attn_implementation):
        super().__init__()
        self.num_heads, self.attn_implementation = num_heads, attn_implementation
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, keep=None):  # x (B, T, D)
        q = split_heads(self.q(x), self.num_heads)  # (B, H, T, Dh)
        k = split_heads(self.k(x), self.num_heads)  # (B, H, T, Dh)
        v = split_heads(self.v(x), self.num_heads)  # (B, H, T, Dh)
        y = attend(q, k, v, keep, self.attn_implementation)  # (B, H, T, Dh)
        return self.o(merge_heads(y))  # (B, T, D)


class MLP(nn.Module):
    """fc1 -> GELU (the tanh approximation, unless config.hidden_act says exact) -> fc2 (transformers SiglipMLP)."""

    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.approximate = GELU_APPROXIMATIONS[config.hidden_act]

    def forward(self, x):  # x (B, T, D)
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(ln1(x)), then x + mlp(ln2(x)) (transformers SiglipEncoderLayer)."""

    def __init__(self, config, attn_implementation):
        super().__init__()
        D = config.hidden_size
        self.ln1 = layer_norm(D, config.layer_norm_eps)
        self.attn = Attention(D, config.num_attention_heads, attn_implementation)
        self.ln2 = layer_norm(D, config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, keep=None):  # x (B, T, D)
        x = x + self.attn(self.ln1(x), keep)  # (B, T, D)
        return x + self.mlp(self.ln2(x))  # (B, T, D)


def encoder_blocks(config, attn_implementation):
    return nn.ModuleList(Block(config, attn_implementation) for _ in range(config.num_hidden_layers))


# ----------------------------------------------------------------------------------------------------------------
# Vision tower: ViT without CLS token, pooled by a multihead-attention probe ([1] §4, big_vision vit.py).

class VisionEmbeddings(nn.Module):
    """Conv patchify + learned positions 0..N-1 (transformers SiglipVisionEmbeddings)."""

    def __init__(self, config):
        super().__init__()
        self.grid = config.image_size // config.patch_size
        self.patch = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.pos = nn.Parameter(torch.zeros(self.grid * self.grid, config.hidden_size))  # (N, D)

    def forward(self, pixel_values, interpolate_pos_encoding=False):  # pixel_values (B, C, H, W)
        x = self.patch(pixel_values.to(self.patch.weight.dtype))  # (B, D, H/p, W/p)
        rows, cols = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), row-major over the patch grid
        if interpolate_pos_encoding:
            return x + self.resized_positions(rows, cols)  # (B, N, D)
        if (rows, cols) != (self.grid, self.grid):
            raise InputError(f"pixel_values of {tuple(pixel_values.shape[-2:])} give a {rows}x{cols} patch grid, "
                             f"the model's is {self.grid}x{self.grid}; pass interpolate_pos_encoding=True "
                             f"for other image sizes")
        return x + self.pos  # (B, N, D)

    def resized_positions(self, rows, cols):
        """The position grid resized bicubic (align_corners=False) to rows x cols, as transformers does."""
        if rows == cols == self.grid:
            return self.pos  # (N, D)
        D = self.pos.shape[-1]
        grid = self.pos.reshape(1, self.grid, self.grid, D).permute(0, 3, 1, 2)  # (1, D, g, g)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)  # (1, D, rows, cols)
        return grid.permute(0, 2, 3, 1).reshape(rows * cols, D)  # (N', D)


class NaFlexEmbeddings(nn.Module):
    """SigLIP 2 NaFlex: patches at the image's own aspect ratio (transformers Siglip2VisionEmbeddings).

    The image comes cut into patches already, flattened (p, p, C) and padded to N (preprocess.py), so the patch
    embedding is a Linear, the conv's weights laid out that way. The learned g x g position grid is resized to each
    image's rows x cols patch grid, bilinear with antialiasing (align_corners=False), as transformers and big_vision
    do; padded positions take position 0's, as transformers gives them. They are masked out of every attention.
    """

    def __init__(self, config):
        super().__init__()
        patch_pixels = config.num_channels * config.patch_size * config.patch_size
        self.grid = math.isqrt(config.num_patches)
        self.patch = nn.Linear(patch_pixels, config.hidden_size)
        self.pos = nn.Parameter(torch.zeros(config.num_patches, config.hidden_size))  # (g * g, D)

    def forward(self, pixel_values, spatial_shapes):  # pixel_values (B, N, C*p*p), spatial_shapes (B, 2)
        x = self.patch(pixel_values.to(self.patch.weight.dtype))  # (B, N, D)
        return x + self.resized_positions(spatial_shapes, x.shape[1]).to(x.dtype)  # (B, N, D)

    def resized_positions(self, spatial_shapes, length):
        """(B, length, D): each image's rows x cols resized grid, row-major, then position 0's for the padding.

        In float32 whatever the model's dtype, as transformers computes it: CPU has no antialiased resize in half
        precision ("upsample_bilinear2d_aa" is not implemented for 'Half' on torch 2.x).
        """
        D = self.pos.shape[-1]
        grid = self.pos.float().reshape(1, self.grid, self.grid, D).permute(0, 3, 1, 2)  # (1, D, g, g)
        images = []
        for rows, cols in spatial_shapes.tolist():
            if not 0 < rows * cols <= length or rows < 1:
                raise InputError(f"spatial_shapes ({rows}, {cols}) does not fit the {length} patches of pixel_values")
            resized = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False,
                                    antialias=True)  # (1, D, rows, cols)
            resized = resized.reshape(D, rows * cols).T  # (rows * cols, D)
            images.append(torch.cat([resized, resized[:1].expand(length - rows * cols, D)]))  # (length, D)
        return torch.stack(images)  # (B, length, D)


class MAPHead(nn.Module):
    """Multihead attention pooling: a learned probe attends over all tokens, then a residual MLP.

    big_vision MAPHead; transformers SiglipMultiheadAttentionPoolingHead, whose nn.MultiheadAttention keeps
    q|k|v packed in one (3D, D) `in_proj`. There is no residual around the attention.
    """

    def __init__(self, config, attn_implementation):
        super().__init__()
        D = config.hidden_size
        self.num_heads, self.attn_implementation = config.num_attention_heads, attn_implementation
        self.probe = nn.Parameter(torch.zeros(1, 1, D))  # (1, 1, D)
        self.in_proj = nn.Linear(D, 3 * D)  # packed q|k|v
        self.out_proj = nn.Linear(D, D)
        self.norm = layer_norm(D, config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, keep=None):  # x (B, N, D), keep (B, 1, 1, N) or None: NaFlex's padding mask
        w_q, w_k, w_v = self.in_proj.weight.chunk(3)  # 3 x (D, D)
        b_q, b_k, b_v = self.in_proj.bias.chunk(3)  # 3 x (D,)
        probe = self.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
        q = split_heads(F.linear(probe, w_q, b_q), self.num_heads)  # (B, H, 1, Dh)
        k = split_heads(F.linear(x, w_k, b_k), self.num_heads)  # (B, H, N, Dh)
        v = split_heads(F.linear(x, w_v, b_v), self.num_heads)  # (B, H, N, Dh)
        y = self.out_proj(merge_heads(attend(q, k, v, keep, self.attn_implementation)))  # (B, 1, D)
        y = y + self.mlp(self.norm(y))  # (B, 1, D)
        return y[:, 0]  # (B, D)


class VisionTower(nn.Module):
    """Embeddings -> blocks -> post LayerNorm -> MAP head (transformers SiglipVisionModel, Siglip2VisionModel).

    Without config.vision_use_head (the towers inside VLMs) there is no MAP head and no pooled output. With
    config.num_patches (SigLIP 2 NaFlex) the embeddings are NaFlexEmbeddings, and pixel_attention_mask (B, N) masks
    the padded patches as keys in every block and in the MAP head; a padded patch still gets outputs, unused.
    """

    def __init__(self, config, attn_implementation):
        super().__init__()
        self.embed = NaFlexEmbeddings(config) if config.num_patches is not None else VisionEmbeddings(config)
        self.blocks = encoder_blocks(config, attn_implementation)
        self.norm = layer_norm(config.hidden_size, config.layer_norm_eps)
        self.head = MAPHead(config, attn_implementation) if config.vision_use_head else None

    def hidden_states(self, pixel_values, interpolate_pos_encoding=False, kept_patches=None,
                      pixel_attention_mask=None, spatial_shapes=None):
        """Yields the embeddings, then each block's output, (B, N, D) each: transformers' hidden_states, one by one.

        kept_patches (B, K), training only: the indices of the patches each image keeps, the others are left out
        before the blocks (patch dropout, [4] §3); the MAP head then pools the K that are left.
        """
        keep = self.check_inputs(pixel_values, interpolate_pos_encoding, kept_patches, pixel_attention_mask,
                                 spatial_shapes)  # (B, 1, 1, N) or None
        if keep is not None:
            x = self.embed(pixel_values, spatial_shapes)  # (B, N, D)
        else:
            x = self.embed(pixel_values, interpolate_pos_encoding)  # (B, N, D)
        if kept_patches is not None:
            x = x.gather(1, kept_patches[:, :, None].expand(-1, -1, x.shape[-1]))  # (B, K, D)
        yield x
        for block in self.blocks:
            x = block(x, keep)  # (B, N, D)
            yield x

    def last_hidden_state(self, pixel_values, interpolate_pos_encoding=False, kept_patches=None,
                          pixel_attention_mask=None, spatial_shapes=None):
        """Every token after the final LayerNorm: (B, N, D), transformers' last_hidden_state."""
        for x in self.hidden_states(pixel_values, interpolate_pos_encoding, kept_patches, pixel_attention_mask,
                                    spatial_shapes):
            pass  # keeps only the latest: no list of every layer's output in memory
        return self.norm(x)  # (B, N, D)

    def forward(self, pixel_values, interpolate_pos_encoding=False, kept_patches=None, pixel_attention_mask=None,
                spatial_shapes=None):
        if self.head is None:
            raise InputError("this vision tower has no MAP head (vision_use_head is false), so no pooled image "
                             "features; take the tokens: SiglipVisionModel(...)(pixel_values)")
        tokens = self.last_hidden_state(pixel_values, interpolate_pos_encoding, kept_patches, pixel_attention_mask,
                                        spatial_shapes)  # (B, N, D)
        keep = None if pixel_attention_mask is None else pixel_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, N)
        return self.head(tokens, keep)  # (B, D)

    def check_inputs(self, pixel_values, interpolate_pos_encoding, kept_patches, pixel_attention_mask,
                     spatial_shapes):
        """The shapes of the inputs this tower takes (not their values); NaFlex's padding mask as the keys to keep
        (B, 1, 1, N), None for a fixed-resolution tower."""
        if not isinstance(interpolate_pos_encoding, bool):
            given = type(interpolate_pos_encoding).__name__
            raise InputError(f"interpolate_pos_encoding must be True or False, got a {given}; NaFlex inputs go by "
                             f"keyword (pixel_attention_mask=..., spatial_shapes=...)")
        if not isinstance(self.embed, NaFlexEmbeddings):
            if pixel_attention_mask is not None or spatial_shapes is not None:
                raise InputError("pixel_attention_mask and spatial_shapes are for NaFlex models (model_type siglip2); "
                                 "this one takes whole images, pixel_values (B, C, H, W)")
            check_pixel_values(pixel_values, self.embed.patch.in_channels)
            return None
        if interpolate_pos_encoding or kept_patches is not None:
            raise InputError("interpolate_pos_encoding and kept_patches are for fixed-resolution models; NaFlex "
                             "resizes its positions to every image")
        return naflex_keys_to_keep(pixel_values, pixel_attention_mask, spatial_shapes, self.embed.patch.in_features)


def naflex_keys_to_keep(pixel_values, pixel_attention_mask, spatial_shapes, patch_pixels):
    """NaFlex inputs checked by shape: pixel_values (B, N, C*p*p), pixel_attention_mask (B, N) of 1/0, spatial_shapes
    (B, 2) of (rows, cols); the mask as keys to keep (B, 1, 1, N), as transformers' create_bidirectional_mask."""
    if not torch.is_tensor(pixel_values) or pixel_values.dim() != 3 or pixel_values.shape[-1] != patch_pixels:
        shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values).__name__
        raise InputError(f"NaFlex pixel_values must be a tensor (B, N, {patch_pixels}): patches as "
                         f"preprocess.Siglip2ImageProcessor cuts them; got {shape}")
    B, N = pixel_values.shape[:2]
    if pixel_attention_mask is None or spatial_shapes is None:
        raise InputError("a NaFlex model needs pixel_attention_mask (B, N) and spatial_shapes (B, 2) with "
                         "pixel_values, as preprocess.Siglip2ImageProcessor returns them")
    if tuple(pixel_attention_mask.shape) != (B, N) or tuple(spatial_shapes.shape) != (B, 2):
        raise InputError(f"pixel_values {tuple(pixel_values.shape)} wants pixel_attention_mask ({B}, {N}) and "
                         f"spatial_shapes ({B}, 2), got {tuple(pixel_attention_mask.shape)} and "
                         f"{tuple(spatial_shapes.shape)}")
    return pixel_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, N)


def check_pixel_values(pixel_values, channels):
    """The shape of pixel_values, checked once per call; the values are not looked at."""
    if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
        shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values).__name__
        raise InputError(f"pixel_values must be a tensor (B, {channels}, H, W), got {shape}")


# ----------------------------------------------------------------------------------------------------------------
# Text tower: bidirectional transformer, pooled at the last position ([1] §4; transformers SiglipTextModel).

class TextEmbeddings(nn.Module):
    """Token + learned position embeddings."""

    def __init__(self, config):
        super().__init__()
        # Plain tables, not nn.Embedding: its random init would run (and be thrown away) on every load.
        self.token = nn.Parameter(torch.zeros(config.vocab_size, config.hidden_size))  # (V, D)
        self.pos = nn.Parameter(torch.zeros(config.max_position_embeddings, config.hidden_size))  # (Lmax, D)

    def forward(self, input_ids):  # input_ids (B, L)
        # A quantized table (see quantize) dequantizes the rows looked up.
        tokens = self.token[input_ids] if isinstance(self.token, QuantizedTable) else F.embedding(input_ids, self.token)
        return tokens + self.pos[: input_ids.shape[1]]  # (B, L, D)


class TextTower(nn.Module):
    """Embeddings -> blocks -> final LayerNorm -> token L-1 -> Linear head to P."""

    def __init__(self, config, attn_implementation):
        super().__init__()
        self.embed = TextEmbeddings(config)
        self.blocks = encoder_blocks(config, attn_implementation)
        self.norm = layer_norm(config.hidden_size, config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)

    def last_hidden_state(self, input_ids, attention_mask=None):  # input_ids (B, L)
        """Every token after the final LayerNorm: (B, L, D), transformers' last_hidden_state."""
        keep = keys_to_keep(input_ids, attention_mask, self.embed.pos.shape[0])  # (B, 1, 1, L) or None
        x = self.embed(input_ids)  # (B, L, D)
        for block in self.blocks:
            x = block(x, keep)  # (B, L, D)
        return self.norm(x)  # (B, L, D)

    def forward(self, input_ids, attention_mask=None):  # input_ids (B, L)
        # SigLIP pools the last position, which is padding for short texts: it was trained that way ([1] §4).
        return self.head(self.last_hidden_state(input_ids, attention_mask)[:, -1])  # (B, P)


def keys_to_keep(input_ids, attention_mask, max_length):
    """attention_mask (B, L) of 1/0 as the keys to keep (B, 1, 1, L), or None; checks the shapes, not the values.

    The ids' range is not checked here: that would read the tensor on every call (a wait for the GPU, a break for
    torch.compile). embed_texts checks it once; an id outside the vocabulary fails in F.embedding.
    SigLIP was trained without a padding mask; with one, padded keys are masked for every query, as in
    transformers' create_bidirectional_mask (nothing masks the queries, so padded positions still get outputs).
    """
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        shape = tuple(input_ids.shape) if hasattr(input_ids, "shape") else type(input_ids).__name__
        raise InputError(f"input_ids must be an integer tensor (B, L), got {shape} "
                         f"{getattr(input_ids, 'dtype', '')}".rstrip())
    if input_ids.shape[1] > max_length:
        raise InputError(f"input_ids has {input_ids.shape[1]} tokens, max_position_embeddings is {max_length}")
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise InputError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                         f"{tuple(input_ids.shape)}")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)


# ----------------------------------------------------------------------------------------------------------------
# The outputs, the logits and the sigmoid loss ([1] §3).

@dataclass
class SiglipOutput:
    logits_per_image: torch.Tensor  # (B_img, B_txt)
    logits_per_text: torch.Tensor  # (B_txt, B_img)
    image_embeds: torch.Tensor  # (B_img, D), L2-normalised
    text_embeds: torch.Tensor  # (B_txt, P), L2-normalised
    loss: torch.Tensor = None


def l2_normalize(x):
    return x / x.norm(dim=-1, keepdim=True)  # (B, D)


def pair_logits(image_embeds, text_embeds, logit_scale, logit_bias):
    """Scaled, shifted cosine similarities (B_txt, B_img): t' = logit_scale is stored as a log, so t = exp(t')."""
    return text_embeds @ image_embeds.T * logit_scale.exp() + logit_bias  # (B_txt, B_img)


def sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias):
    """-sum log sigmoid(z_ij * logit_ij) / B over all B*B pairs, z = +1 on the diagonal, -1 elsewhere ([1] §3).

    Inputs are L2-normalised embeddings of matching pairs (row i of each is pair i); `logit_scale` is the
    stored log temperature. Same value as transformers SiglipModel(return_loss=True).
    """
    check_pairs(image_embeds, text_embeds)
    return pairwise_loss_sum(image_embeds, text_embeds, logit_scale, logit_bias, positives=True) / image_embeds.shape[0]


def chunked_sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, num_chunks):
    """sigmoid_loss block by block, as the multi-device scheme of [1] §3.3 ("efficient chunked implementation"),
    never building the B x B matrix.

    Split the batch into `num_chunks` "devices", each holding its own images and texts (sizes may differ by one
    when num_chunks does not divide B). Step 0: every device scores its own block, which holds its positives.
    Steps 1..num_chunks-1: the texts move one device along the ring and each device scores a negatives-only block.
    Peak memory is one (B/num_chunks)^2 block instead of B^2.
    """
    check_pairs(image_embeds, text_embeds)
    if not 1 <= num_chunks <= image_embeds.shape[0]:
        raise InputError(f"num_chunks={num_chunks} must lie in [1, batch size {image_embeds.shape[0]}]")
    images, texts = image_embeds.tensor_split(num_chunks), text_embeds.tensor_split(num_chunks)
    total = 0.0
    for step in range(num_chunks):
        for device, device_images in enumerate(images):
            visiting_texts = texts[(device + step) % num_chunks]
            total = total + pairwise_loss_sum(device_images, visiting_texts, logit_scale, logit_bias, positives=step == 0)
    return total / image_embeds.shape[0]


def pairwise_loss_sum(image_embeds, text_embeds, logit_scale, logit_bias, positives):
    """-sum log sigmoid(z * logits) over one block; z = +1 on its diagonal if it holds the positives, else -1.

    logsigmoid(x) = -softplus(-x) is computed stably by torch for any x, so |logits| of 1e4 stay finite.
    """
    logits = pair_logits(image_embeds, text_embeds, logit_scale, logit_bias)  # (B_txt, B_img)
    z = -torch.ones_like(logits)  # (B_txt, B_img): every pair a negative...
    if positives:
        z = z + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)  # ...but the diagonal
    return -F.logsigmoid(z * logits).sum()  # ()


def distributed_sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, group=None):
    """This process's share of sigmoid_loss over the batch that the processes of `group` hold together ([1] §3.3).

    Each rank passes its own rows (n_r, D) of L2-normalised pairs. Step 0 scores its own block, which holds its
    positives; at steps 1..W-1 every rank hands the texts it holds to the rank below (rank r - 1) and takes those of
    the rank above, and scores its images against them, negatives only. No rank ever holds more than its own images,
    one rank's texts and one (n_r, n_s) block. Returns this rank's images' terms against all B texts, divided by the
    global B: the shares of all ranks sum to sigmoid_loss of the whole batch. Its backward sends each received
    text's gradient back along the ring to the rank that owns the text (RingPass), so after backward each rank's
    text embeddings carry the gradient of the whole loss, as its image embeddings do; logit_scale's and
    logit_bias's gradients are this share's, to be summed over ranks. Shares may differ in size (B need not divide
    by W); an empty share or a different D on some rank is refused, naming every rank's (n, D).
    """
    check_pairs(image_embeds, text_embeds)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    shapes = torch.tensor(image_embeds.shape)  # (2,): n, D
    every = [torch.zeros_like(shapes) for _ in range(world)]
    dist.all_gather(every, shapes, group=group)
    sizes = [tuple(s.tolist()) for s in every]
    if any(n == 0 for n, _ in sizes) or len({d for _, d in sizes}) != 1:
        raise InputError(f"every rank needs pairs of the same width: (n, D) by rank {sizes}")
    below, above = ring_peer(group, (rank - 1) % world), ring_peer(group, (rank + 1) % world)
    loss = pairwise_loss_sum(image_embeds, text_embeds, logit_scale, logit_bias, positives=True)
    texts = text_embeds  # (n_r, D): at step s, the texts of rank (r + s) % W
    for step in range(1, world):
        texts = RingPass.apply(texts, below, above, sizes[(rank + step) % world][0], group)  # (n_s, D)
        loss = loss + pairwise_loss_sum(image_embeds, texts, logit_scale, logit_bias, positives=False)
    return loss / sum(n for n, _ in sizes)


def ring_peer(group, rank_in_group):
    """The global rank torch.distributed's point-to-point calls take for a rank of `group`."""
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)


def exchange(outgoing, to, incoming, source, group):
    """Send `outgoing` to rank `to` and fill `incoming` from rank `source`, both at once (no rank waits on another
    that is itself sending)."""
    requests = dist.batch_isend_irecv([dist.P2POp(dist.isend, outgoing.contiguous(), to, group),
                                       dist.P2POp(dist.irecv, incoming, source, group)])
    for request in requests:
        request.wait()


class RingPass(torch.autograd.Function):
    """Forward: send x (n, D) to the rank below, return the (rows, D) received from the rank above. Backward: the
    gradient of what was received goes back up to its sender, and the gradient of what was sent comes up from the
    rank below, so each tensor's gradient ends where the tensor came from."""

    @staticmethod
    def forward(ctx, x, below, above, rows, group):
        ctx.below, ctx.above, ctx.group, ctx.sent_shape = below, above, group, x.shape
        received = x.new_empty(rows, x.shape[1])  # (rows, D)
        exchange(x, below, received, above, group)
        return received

    @staticmethod
    def backward(ctx, grad_received):
        grad_sent = grad_received.new_empty(ctx.sent_shape)  # (n, D)
        exchange(grad_received, ctx.above, grad_sent, ctx.below, ctx.group)
        return grad_sent, None, None, None, None


def softmax_loss(image_embeds, text_embeds, logit_scale):
    """CLIP's contrastive loss, for comparison ([1] §2; transformers CLIPModel's image_text_contrastive_loss): each image classifies its text among
    the batch's texts, and each text its image, by a softmax over t * cosine (no bias); the two cross-entropies are
    averaged. Unlike the sigmoid loss, every term needs the whole row or column of the B x B matrix."""
    check_pairs(image_embeds, text_embeds)
    logits = text_embeds @ image_embeds.T * logit_scale.exp()  # (B_txt, B_img)
    matches = torch.arange(logits.shape[0], device=logits.device)  # (B,): text i goes with image i
    return (F.cross_entropy(logits, matches) + F.cross_entropy(logits.T, matches)) / 2  # ()


def check_pairs(image_embeds, text_embeds):
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise InputError(f"the loss needs matching pairs (B, D): image_embeds {tuple(image_embeds.shape)} vs "
                         f"text_embeds {tuple(text_embeds.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# From-scratch initialisation, by module type ([2] vit.py and two_towers.py; [1] §3 for the scale and bias).

def sincos_2d(grid, width, temperature=10000.0):
    """(grid * grid, width) 2-D sine-cosine position embeddings, rows then columns (big_vision posemb_sincos_2d)."""
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                          indexing="ij")  # (g, g) each
    omega = 1.0 / temperature ** (torch.arange(width // 4) / max(1, width // 4 - 1))  # (D/4,)
    x, y = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega  # (N, D/4)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # (N, D)


@torch.no_grad()
def init_from_scratch(module):
    """Initialise the parameters `module` holds itself (not its children's), after big_vision [2].

    Xavier-uniform matrices (patch kernel and token table included), zero biases, LayerNorms at 1 and 0, N(0, 1/D)
    text positions and probe. The learned image positions start as 2-D sine-cosines (big_vision's "sincos2d"), so
    where a patch lies is plain from the first step. Models call this for each module in `self.modules()` order, so
    the random draws come in parameter order.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))  # conv: (D, C * p * p)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, TextEmbeddings):
        nn.init.xavier_uniform_(module.token)
        nn.init.normal_(module.pos, std=module.pos.shape[-1] ** -0.5)
    elif isinstance(module, VisionEmbeddings):
        # Drawn and then replaced: the draw keeps every later one, and so train.py's shipped model, as they were.
        nn.init.normal_(module.pos, std=module.pos.shape[-1] ** -0.5)
        module.pos.copy_(sincos_2d(module.grid, module.pos.shape[-1]))
    elif isinstance(module, NaFlexEmbeddings):
        nn.init.normal_(module.pos, std=module.pos.shape[-1] ** -0.5)
    elif isinstance(module, MAPHead):
        nn.init.normal_(module.probe, std=module.probe.shape[-1] ** -0.5)


# ----------------------------------------------------------------------------------------------------------------
# The two-tower model and the image classifier.

class SiglipModel(nn.Module):
    """Vision tower + text tower + learned logit scale and bias (transformers SiglipModel).

    SiglipModel(config) starts as the paper trains from scratch; from_pretrained fills it from a checkpoint.
    """

    def __init__(self, config=None, attn_implementation="sdpa"):
        super().__init__()
        check_attn_implementation(attn_implementation)
        self.config = config or SiglipConfig()
        if not self.config.vision_config.vision_use_head:
            raise InputError("vision_config.vision_use_head is false: the two-tower model pools images with the MAP "
                             "head; load the vision tower alone (SiglipVisionModel) for its tokens")
        text, vision = self.config.text_config, self.config.vision_config
        if text.projection_size != vision.hidden_size:  # (a classifier's unused text config need not fit)
            raise InputError(f"text_config.projection_size={text.projection_size} must equal "
                             f"vision_config.hidden_size={vision.hidden_size}: the two embeddings are compared by "
                             f"dot product")
        self.vision = VisionTower(self.config.vision_config, attn_implementation)
        self.text = TextTower(self.config.text_config, attn_implementation)
        # From-scratch init of [1] §3: t' = log 10, b = -10. (transformers initialises both to 0.)
        self.logit_scale = nn.Parameter(torch.tensor([math.log(10.0)]))  # (1,)
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))  # (1,)
        for module in self.modules():
            init_from_scratch(module)

    def get_image_features(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None,
                           interpolate_pos_encoding=False):
        """(B, D), not normalised. NaFlex models take the patches with pixel_attention_mask and spatial_shapes."""
        return self.vision(pixel_values, interpolate_pos_encoding, None, pixel_attention_mask, spatial_shapes)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text(input_ids, attention_mask)  # (B, P), not normalised

    def forward(self, input_ids, pixel_values, attention_mask=None, interpolate_pos_encoding=False,
                return_loss=False, pixel_attention_mask=None, spatial_shapes=None):
        image_features = self.get_image_features(pixel_values, pixel_attention_mask, spatial_shapes,
                                                 interpolate_pos_encoding)  # (B_img, D)
        image_embeds = l2_normalize(image_features)  # (B_img, D)
        text_embeds = l2_normalize(self.text(input_ids, attention_mask))  # (B_txt, D)
        logits_per_text = self.logits_per_text(image_embeds, text_embeds)  # (B_txt, B_img)
        loss = sigmoid_loss(image_embeds, text_embeds, self.logit_scale, self.logit_bias) if return_loss else None
        return SiglipOutput(logits_per_text.T, logits_per_text, image_embeds, text_embeds, loss)

    def logits_per_text(self, image_embeds, text_embeds):
        """Scaled, shifted cosine similarities (B_txt, B_img); sigmoid of one is P(text matches image)."""
        return pair_logits(image_embeds, text_embeds, self.logit_scale, self.logit_bias)  # (B_txt, B_img)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa"):
        """Load a transformers SiglipModel checkpoint (folder or cached Hub id) straight to device and dtype."""
        return load_pretrained(cls, path_or_repo_id, device, dtype, attn_implementation)

    def save_pretrained(self, folder):
        """config.json + model.safetensors in transformers' layout and names."""
        write_checkpoint(self, folder, "SiglipModel")


class SiglipClassifier(nn.Module):
    """Vision tower, mean over its output tokens, Linear to the classes (transformers SiglipForImageClassification).

    config.id2label names the classes; without it, transformers' default of two, LABEL_0 and LABEL_1.
    """

    def __init__(self, config, attn_implementation="sdpa"):
        super().__init__()
        check_attn_implementation(attn_implementation)
        self.config = config
        self.id2label = config.id2label or {0: "LABEL_0", 1: "LABEL_1"}
        self.vision = VisionTower(config.vision_config, attn_implementation)
        self.classifier = nn.Linear(config.vision_config.hidden_size, len(self.id2label))
        for module in self.modules():
            init_from_scratch(module)

    def forward(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None, interpolate_pos_encoding=False):
        tokens = self.vision.last_hidden_state(pixel_values, interpolate_pos_encoding, None, pixel_attention_mask,
                                               spatial_shapes)  # (B, N, D)
        if pixel_attention_mask is None:
            return self.classifier(tokens.mean(dim=1))  # (B, num_labels)
        real = pixel_attention_mask[..., None].to(tokens.dtype)  # (B, N, 1): NaFlex averages the real patches only
        return self.classifier((tokens * real).sum(dim=1) / real.sum(dim=1))  # (B, num_labels)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa"):
        return load_pretrained(cls, path_or_repo_id, device, dtype, attn_implementation)

    def save_pretrained(self, folder):
        write_checkpoint(self, folder, "SiglipForImageClassification")


class SiglipVisionModel(nn.Module):
    """The vision tower alone (transformers SiglipVisionModel): what VLMs take from SigLIP, often without its head.

    Calling it gives the tokens (last_hidden_state); get_image_features gives the MAP head's pooled features.
    """

    def __init__(self, config=None, attn_implementation="sdpa"):
        super().__init__()
        check_attn_implementation(attn_implementation)
        self.config = config or SiglipVisionConfig()
        self.vision = VisionTower(self.config, attn_implementation)
        for module in self.modules():
            init_from_scratch(module)

    def forward(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None, interpolate_pos_encoding=False,
                output_hidden_states=False):
        """last_hidden_state (B, N, D); with output_hidden_states, also transformers' hidden_states: the embeddings
        and every block's output before the final LayerNorm, num_hidden_layers + 1 tensors (B, N, D). VLMs often
        take hidden_states[-2], the second to last block's output."""
        inputs = (pixel_values, interpolate_pos_encoding, None, pixel_attention_mask, spatial_shapes)
        if not output_hidden_states:
            return self.vision.last_hidden_state(*inputs)  # (B, N, D)
        hidden_states = tuple(self.vision.hidden_states(*inputs))  # L + 1 x (B, N, D)
        return self.vision.norm(hidden_states[-1]), hidden_states  # (B, N, D), L + 1 x (B, N, D)

    def get_image_features(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None,
                           interpolate_pos_encoding=False):
        """(B, D), transformers' pooler_output."""
        return self.vision(pixel_values, interpolate_pos_encoding, None, pixel_attention_mask, spatial_shapes)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa"):
        """Its own folder, or the vision tower of a two-tower folder (only that tower's tensors are read)."""
        return load_pretrained(cls, path_or_repo_id, device, dtype, attn_implementation)

    def save_pretrained(self, folder):
        write_checkpoint(self, folder, "SiglipVisionModel")


class SiglipTextModel(nn.Module):
    """The text tower alone (transformers SiglipTextModel).

    Calling it gives the tokens (last_hidden_state); get_text_features gives the head's output at the last position.
    """

    def __init__(self, config=None, attn_implementation="sdpa"):
        super().__init__()
        check_attn_implementation(attn_implementation)
        self.config = config or SiglipTextConfig()
        self.text = TextTower(self.config, attn_implementation)
        for module in self.modules():
            init_from_scratch(module)

    def forward(self, input_ids, attention_mask=None):
        return self.text.last_hidden_state(input_ids, attention_mask)  # (B, L, D)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text(input_ids, attention_mask)  # (B, P), transformers' pooler_output

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa"):
        """Its own folder, or the text tower of a two-tower folder (only that tower's tensors are read)."""
        return load_pretrained(cls, path_or_repo_id, device, dtype, attn_implementation)

    def save_pretrained(self, folder):
        write_checkpoint(self, folder, "SiglipTextModel")


def check_attn_implementation(attn_implementation):
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise InputError(f"attn_implementation={attn_implementation!r}, expected one of {ATTN_IMPLEMENTATIONS}")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint I/O: the one place that knows both our names and transformers'.

BLOCK_NAMES = {  # our module in blocks.{i} -> transformers module in encoder.layers.{i}
    "ln1": "layer_norm1", "attn.q": "self_attn.q_proj", "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj", "attn.o": "self_attn.out_proj",
    "ln2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
VISION_NAMES = {  # our parameter under vision. -> transformers parameter under vision_model.
    "embed.patch.weight": "embeddings.patch_embedding.weight",
    "embed.patch.bias": "embeddings.patch_embedding.bias",
    "embed.pos": "embeddings.position_embedding.weight",
    "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias",
    "head.probe": "head.probe",
    "head.in_proj.weight": "head.attention.in_proj_weight", "head.in_proj.bias": "head.attention.in_proj_bias",
    "head.out_proj.weight": "head.attention.out_proj.weight", "head.out_proj.bias": "head.attention.out_proj.bias",
    "head.norm.weight": "head.layernorm.weight", "head.norm.bias": "head.layernorm.bias",
    "head.mlp.fc1.weight": "head.mlp.fc1.weight", "head.mlp.fc1.bias": "head.mlp.fc1.bias",
    "head.mlp.fc2.weight": "head.mlp.fc2.weight", "head.mlp.fc2.bias": "head.mlp.fc2.bias",
}
TEXT_NAMES = {  # our parameter under text. -> transformers parameter under text_model.
    "embed.token": "embeddings.token_embedding.weight",
    "embed.pos": "embeddings.position_embedding.weight",
    "norm.weight": "final_layer_norm.weight", "norm.bias": "final_layer_norm.bias",
    "head.weight": "head.weight", "head.bias": "head.bias",
}
TOP_NAMES = {"logit_scale": "logit_scale", "logit_bias": "logit_bias",
             "classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"}


def tower_names(ours, theirs, names, num_layers):
    """Our -> transformers parameter names for one tower, its encoder blocks included."""
    mapping = {f"{ours}.{k}": f"{theirs}.{v}" for k, v in names.items()}
    for i in range(num_layers):
        for k, v in BLOCK_NAMES.items():
            for p in ("weight", "bias"):
                mapping[f"{ours}.blocks.{i}.{k}.{p}"] = f"{theirs}.encoder.layers.{i}.{v}.{p}"
    return mapping


def hf_name_map(model):
    """{our parameter name: transformers name} for every parameter `model` has, any of the four models."""
    mapping = dict(TOP_NAMES)
    for ours, theirs, names in (("vision", "vision_model", VISION_NAMES), ("text", "text_model", TEXT_NAMES)):
        if hasattr(model, ours):
            mapping.update(tower_names(ours, theirs, names, len(getattr(model, ours).blocks)))
    ours = [name for name, _ in model.named_parameters()]
    unmapped = [name for name in ours if name not in mapping]
    assert not unmapped, f"name map is missing {unmapped}"  # a bug here, never the user's checkpoint
    return {**{name: mapping[name] for name in ours}, **quantized_names(model, mapping)}


def quantized_names(model, mapping):
    """{our buffer: file name} for a quantized model's codes and scales: the weight's file name + ".codes" /
    ".scales" (a linear at path M held M.weight; the token table is text.embed.token itself)."""
    names = {}
    for path, module in model.named_modules():
        if isinstance(module, (QuantizedTable, DynamicInt8Linear)):
            weight = mapping[f"{path}.weight" if f"{path}.weight" in mapping else path]
            names.update({f"{path}.codes": f"{weight}.codes", f"{path}.scales": f"{weight}.scales"})
    return names


def single_tower_prefix(model):
    """"vision_model." or "text_model." for a single tower, the prefix transformers 5.x leaves out when it saves
    one alone (two-tower files, and single towers saved by transformers 4.x, have it); None for the others."""
    return {SiglipVisionModel: "vision_model.", SiglipTextModel: "text_model."}.get(type(model))


def read_config(folder):
    """(the config, config.json's "architectures", its quantization or None) of a transformers folder, read once. The
    config by its model_type: SiglipConfig ("siglip"), SiglipVisionConfig ("siglip_vision_model") or SiglipTextConfig
    ("siglip_text_model"); the quantization as save_pretrained wrote it for a quantized model (read_quantization)."""
    path = Path(folder) / "config.json"
    values = read_json(path)
    try:
        return config_of(values), values.get("architectures") or [], read_quantization(values)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def config_of(values):
    """The config of config.json's `values`, by their model_type."""
    model_type = values.get("model_type", "siglip")
    if model_type == "siglip_vision_model":
        return known_fields(SiglipVisionConfig, values)
    if model_type == "siglip2_vision_model":
        return known_fields(SiglipVisionConfig, {"num_patches": NAFLEX_NUM_PATCHES, **values})
    if model_type in ("siglip_text_model", "siglip2_text_model"):
        return known_fields(SiglipTextConfig, values)
    if model_type not in ("siglip", "siglip2"):
        raise InputError(f"model_type {model_type!r}: {OTHER_KINDS.get(model_type, 'not SigLIP')}; siglip-min "
                         f"reads model_type siglip and siglip2, and their _vision_model and _text_model")
    return SiglipConfig.from_hf(values)


def read_quantization(values):
    """{"bits", "group_size"} of a config.json save_pretrained wrote from a quantized model ("siglip_min":
    {"quantization": ...}), else None."""
    quantization = json_object(values, "siglip_min").get("quantization")
    if quantization is not None and (not isinstance(quantization, dict) or set(quantization) != {"bits", "group_size"}):
        raise InputError(f"siglip_min.quantization must be {{\"bits\": 8 or 4, \"group_size\": int or null}}, got "
                         f"{quantization!r}")
    return quantization


OTHER_KINDS = {  # what a refused config.json holds, said in one line
    "clip": "a CLIP checkpoint (class-token pooling, softmax loss), not SigLIP",
}


def is_classifier(architectures):
    """Whether config.json's architectures name an image classifier (Siglip- or Siglip2ForImageClassification)."""
    return any(name.endswith("ForImageClassification") for name in architectures)


def tower_configs(model):
    """(vision config, text config) of a model of any of the four kinds, None for a tower it has not."""
    config = model.config
    vision = config.vision_config if isinstance(config, SiglipConfig) else config
    text = config.text_config if isinstance(config, SiglipConfig) else config
    return (vision if hasattr(model, "vision") else None), (text if hasattr(model, "text") else None)


def config_for(model_class, config, architectures=()):
    """The config `model_class` is built from: its own kind, or its tower's part of a two-tower config.
    `architectures` (config.json's) tells an image classifier's folder, which has no text tower, from a two-tower one."""
    if isinstance(config, SiglipConfig) and model_class is SiglipVisionModel:
        return config.vision_config
    classifier = is_classifier(architectures)
    if isinstance(config, SiglipConfig) and classifier != (model_class is SiglipClassifier):
        raise InputError(f"the checkpoint holds a {'SiglipForImageClassification' if classifier else 'SiglipModel'}, "
                         f"{model_class.__name__} cannot be built from it; siglip_min.from_pretrained builds the "
                         f"model a checkpoint holds")
    if isinstance(config, SiglipConfig) and model_class is SiglipTextModel:
        return config.text_config
    wanted = {SiglipVisionModel: SiglipVisionConfig, SiglipTextModel: SiglipTextConfig}.get(model_class, SiglipConfig)
    if not isinstance(config, wanted):
        raise InputError(f"the checkpoint holds a {type(config).__name__.removesuffix('Config')} model, "
                         f"{model_class.__name__} cannot be built from it; siglip_min.from_pretrained builds the "
                         f"model a checkpoint holds")
    return config


def check_dtype(dtype):
    if dtype not in DTYPES.values():
        raise InputError(f"dtype {dtype}: expected one of torch.{', torch.'.join(DTYPES)}")


def load_pretrained(model_class, path_or_repo_id, device, dtype, attn_implementation, checkpoint_config=None):
    """A `model_class` built on the meta device (no memory, no init), then filled from a transformers folder.
    checkpoint_config: read_config's (config, architectures, quantization), when the caller has read it already."""
    device = check_device(device)
    check_dtype(dtype)
    folder = resolve_model_dir(path_or_repo_id)
    config, architectures, quantization = checkpoint_config or read_config(folder)
    config = config_for(model_class, config, architectures)
    with torch.device("meta"):
        model = model_class(config, attn_implementation)
        if quantization:
            quantize(model, **quantization)  # empty codes and scales of the right shapes, for the file's to fill
    return load_weights(model, folder, device, dtype)


def check_device(device):
    """torch.device(device), refusing one that is not a device name or is not on this machine, naming it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r}: not a device name (cpu, cuda, cuda:N, mps)") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPUs "
                         f"(torch {torch.__version__})")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r}: Apple's MPS is not available on this machine")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r}: siglip-min runs on cpu, cuda or mps")
    return parsed


def pickles_found(folder):
    """"; found pytorch_model.bin, ..." naming the pickled weights a folder holds instead, or ""."""
    names = sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    return f"; found {', '.join(names)}: pickles, which siglip-min does not load (unpickling can run code)" \
        if names else ""


def weight_shards(folder):
    """{safetensors file: the names it holds, None for all}: model.safetensors alone, or the shards its index names."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return {single: None}
    if not index.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                                f"(only safetensors checkpoints are read){pickles_found(folder)}")
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise InputError(f"{index}: not a safetensors index (\"weight_map\" must map tensor names to file names)")
    shards = {}
    for name, file in weight_map.items():
        shards.setdefault(folder / file, set()).add(name)
    return shards


def read_tensors(shards, wanted, device, dtype):
    """{transformers name: tensor on device in dtype} for the names in `wanted` (all when None), plus every name
    the files hold.

    Each tensor is read from the shard the index names; a shard that lacks a tensor the index gives it, or holds one
    it does not, is an index that disagrees with the files, and is refused.
    """
    tensors, present = {}, set()
    for path, names in shards.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard named in the index is missing")
        check_not_lfs_pointer(path)
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                held = set(f.keys())
                if names is not None and names != held:
                    first = sorted((names - held) | (held - names))[0]
                    raise InputError(f"{path}: the index and the shard disagree, e.g. on {first} (the index puts it "
                                     f"{'here' if first in names else 'in another shard'})")
                for name in sorted(held):
                    present.add(name)
                    if wanted is None or name in wanted:  # one tensor at a time: never two full copies of the model
                        tensor = f.get_tensor(name)  # integer tensors stay as they are, for value_problems to name
                        tensors[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        except SafetensorError as e:
            raise InputError(f"{path}: unreadable safetensors file ({e})") from None
    return tensors, present


def value_problems(name, tensor):
    """Why a weight cannot be used as it is: not floating point, or NaN / infinite values (also after the cast)."""
    if not tensor.is_floating_point():
        return [f"not floating point: {name} is {str(tensor.dtype).removeprefix('torch.')}"]
    if tensor.numel() == 0 or torch.isfinite(torch.stack(torch.aminmax(tensor))).all():
        return []  # one pass, no tensor-sized mask: NaN and infinities show in the extremes
    bad = (~torch.isfinite(tensor)).sum().item()
    return [f"not finite: {name} has {bad} NaN or infinite values in {str(tensor.dtype).removeprefix('torch.')}"]


def load_weights(model, folder, device, dtype):
    """Fill `model` (built on the meta device) from `folder`'s safetensors files.

    A single tower reads only its own tensors, from its own folder (names with or without its prefix) or from a
    two-tower one (the other tower's tensors are left unread).
    """
    expected = {theirs: ours for ours, theirs in hf_name_map(model).items()}
    prefix = single_tower_prefix(model)
    bare = {theirs.removeprefix(prefix): ours for theirs, ours in expected.items()} if prefix else {}
    tensors, present = read_tensors(weight_shards(folder), expected.keys() | bare.keys(), device, dtype)
    owned = present
    if prefix and any(name.startswith(prefix) for name in present):
        owned = {name for name in present if name.startswith(prefix)}  # the rest is the other tower's
    elif prefix:
        expected = bare
    # transformers drops the non-persistent position_ids buffers; older conversions may still hold them.
    problems = [f"missing: {n}" for n in sorted(set(expected) - present)]
    problems += [f"unexpected: {n}" for n in sorted(owned - set(expected)) if not n.endswith("embeddings.position_ids")]
    tensors = {expected[n]: t for n, t in tensors.items() if n in expected}
    return assign_weights(model, tensors, {ours: theirs for theirs, ours in expected.items()}, problems, folder)


def assign_weights(model, tensors, sources, problems, where):
    """Fill `model` (on the meta device) with `tensors` {our name: tensor}, or one InputError listing every problem:
    the `problems` found by the reader (missing, unexpected) and each misshaped, non-floating or non-finite tensor,
    named as its file names it (`sources`: {our name: file name})."""
    wanted = model.state_dict()  # parameters, and a quantized model's codes and scales
    problems = problems + [f"shape: {sources[n]} is {tuple(t.shape)}, the config wants {tuple(wanted[n].shape)}"
                           for n, t in tensors.items() if t.shape != wanted[n].shape]
    problems += [f"dtype: {sources[n]} is {str(t.dtype).removeprefix('torch.')}, quantized codes are "
                 f"{str(wanted[n].dtype).removeprefix('torch.')}" for n, t in tensors.items()
                 if not wanted[n].is_floating_point() and t.dtype != wanted[n].dtype]
    problems += [problem for n, t in tensors.items() if wanted[n].is_floating_point()
                 for problem in value_problems(sources[n], t)]
    if problems:
        raise InputError(f"{where}: checkpoint does not fit the config ({len(problems)} problems):\n  "
                         + "\n  ".join(problems))
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def config_to_hf(config, architecture, dtype):
    """config.json for `architecture`: a two-tower config's to_hf, or a single tower's fields at the top level."""
    if isinstance(config, SiglipConfig):
        return config.to_hf(architecture, dtype)
    if isinstance(config, SiglipTextConfig):
        return {"architectures": [architecture], "model_type": "siglip_text_model", **asdict(config),
                "dtype": str(dtype).removeprefix("torch.")}
    naflex = config.num_patches is not None
    return {"architectures": [hf_architecture(architecture, naflex)],
            "model_type": "siglip2_vision_model" if naflex else "siglip_vision_model", **vision_config_json(config),
            "dtype": str(dtype).removeprefix("torch.")}


def write_checkpoint(model, folder, architecture):
    """config.json and model.safetensors of `model` in transformers' layout and names, in the model's dtype."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config_to_hf(model.config, architecture, next(model.parameters()).dtype)
    quantization = getattr(model, "quantization", None)
    if quantization:  # transformers does not read these folders: its own quantized formats are others
        quantization = {"bits": quantization["bits"], "group_size": quantization["group_size"]}
        config["siglip_min"] = {**config.get("siglip_min", {}), "quantization": quantization}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    prefix = single_tower_prefix(model) or ""  # a single tower is saved without it, as transformers 5.x does
    tensors = {theirs.removeprefix(prefix): attrgetter(ours)(model).detach().contiguous().cpu()
               for ours, theirs in hf_name_map(model).items()}  # (int8 activations' codes live in fbgemm's packing)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------------------------
# big_vision .npz ([2]): Google's released SigLIP checkpoints, as big_vision's save_checkpoint wrote them: flat
# "/"-joined names, "params/" first or not, one "encoderblock_{i}" per layer or (scan=True) one "encoderblock" whose
# arrays stack the layers on axis 0. Kernels are (in, out); attention kernels keep the heads apart.

def same(x):  # the layouts below turn a file's tensors into ours; this one keeps it as it is
    return x


def bv_dense(kernel):  # (in, out) -> (out, in)
    return kernel.T


def bv_heads_in(kernel):  # query/key/value (D, H, Dh) -> (H * Dh, D)
    return kernel.reshape(kernel.shape[0], -1).T


def bv_heads_out(kernel):  # out (H, Dh, D) -> (D, H * Dh)
    return kernel.reshape(-1, kernel.shape[-1]).T


def bv_flat(bias):  # (H, Dh) -> (H * Dh,)
    return bias.reshape(-1)


def bv_conv(kernel):  # (p, p, C, D), HWIO -> (D, C, p, p)
    return kernel.permute(3, 2, 0, 1)


def unbatched(x):  # (1, N, D) -> (N, D)
    return x[0]


def bv_packed(q, k, v):  # three (D, H, Dh) kernels or (H, Dh) biases -> one (3D, D) or (3D,), q|k|v
    return torch.cat([bv_heads_in(x) if x.dim() == 3 else bv_flat(x) for x in (q, k, v)])


BV_ATTENTION = "MultiHeadDotProductAttention_0"
BV_BLOCK = {  # our parameter in blocks.{i} -> (big_vision names in encoderblock_{i}, layout)
    "ln1.weight": ("LayerNorm_0/scale", same), "ln1.bias": ("LayerNorm_0/bias", same),
    **{f"attn.{ours}.{p}": (f"{BV_ATTENTION}/{theirs}/{p.replace('weight', 'kernel')}", layout)
       for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"))
       for p, layout in (("weight", bv_heads_in), ("bias", bv_flat))},
    "attn.o.weight": (f"{BV_ATTENTION}/out/kernel", bv_heads_out), "attn.o.bias": (f"{BV_ATTENTION}/out/bias", same),
    "ln2.weight": ("LayerNorm_1/scale", same), "ln2.bias": ("LayerNorm_1/bias", same),
    "mlp.fc1.weight": ("MlpBlock_0/Dense_0/kernel", bv_dense), "mlp.fc1.bias": ("MlpBlock_0/Dense_0/bias", same),
    "mlp.fc2.weight": ("MlpBlock_0/Dense_1/kernel", bv_dense), "mlp.fc2.bias": ("MlpBlock_0/Dense_1/bias", same),
}
BV_MAP_HEAD = "img/MAPHead_0"
BV_VISION = {  # our parameter under vision. -> (big_vision names, layout)
    "embed.patch.weight": ("img/embedding/kernel", bv_conv), "embed.patch.bias": ("img/embedding/bias", same),
    "embed.pos": ("img/pos_embedding", unbatched),
    "norm.weight": ("img/Transformer/encoder_norm/scale", same),
    "norm.bias": ("img/Transformer/encoder_norm/bias", same),
    "head.probe": (f"{BV_MAP_HEAD}/probe", same),
    "head.in_proj.weight": (tuple(f"{BV_MAP_HEAD}/{BV_ATTENTION}/{x}/kernel" for x in ("query", "key", "value")),
                            bv_packed),
    "head.in_proj.bias": (tuple(f"{BV_MAP_HEAD}/{BV_ATTENTION}/{x}/bias" for x in ("query", "key", "value")),
                          bv_packed),
    "head.out_proj.weight": (f"{BV_MAP_HEAD}/{BV_ATTENTION}/out/kernel", bv_heads_out),
    "head.out_proj.bias": (f"{BV_MAP_HEAD}/{BV_ATTENTION}/out/bias", same),
    "head.norm.weight": (f"{BV_MAP_HEAD}/LayerNorm_0/scale", same),
    "head.norm.bias": (f"{BV_MAP_HEAD}/LayerNorm_0/bias", same),
    "head.mlp.fc1.weight": (f"{BV_MAP_HEAD}/MlpBlock_0/Dense_0/kernel", bv_dense),
    "head.mlp.fc1.bias": (f"{BV_MAP_HEAD}/MlpBlock_0/Dense_0/bias", same),
    "head.mlp.fc2.weight": (f"{BV_MAP_HEAD}/MlpBlock_0/Dense_1/kernel", bv_dense),
    "head.mlp.fc2.bias": (f"{BV_MAP_HEAD}/MlpBlock_0/Dense_1/bias", same),
}
BV_TEXT = {  # our parameter under text. -> (big_vision names, layout)
    "embed.token": ("txt/Embed_0/embedding", same), "embed.pos": ("txt/pos_embedding", unbatched),
    "norm.weight": ("txt/Encoder_0/encoder_norm/scale", same),
    "norm.bias": ("txt/Encoder_0/encoder_norm/bias", same),
    "head.weight": ("txt/head/kernel", bv_dense), "head.bias": ("txt/head/bias", same),
}
BV_TOP = {"logit_scale": ("t", same), "logit_bias": ("b", same)}  # t' (log of the scale) and b, both (1,)
BV_TOWERS = (("vision", "img/Transformer/encoderblock_{i}/", BV_BLOCK, BV_VISION),
             ("text", "txt/Encoder_0/encoderblock_{i}/", BV_BLOCK, BV_TEXT))


def converted_name_map(model, top, towers):
    """{our parameter name: (their names, layout)} for every parameter `model` has, from one format's tables: `top`,
    and for each tower (our tower, their block prefix with {i}, their block names, their other names)."""
    mapping = dict(top)
    for ours, block_prefix, block_names, names in towers:
        if hasattr(model, ours):
            mapping.update({f"{ours}.{k}": v for k, v in names.items()})
            for i in range(len(getattr(model, ours).blocks)):
                mapping.update({f"{ours}.blocks.{i}.{k}": (block_prefix.format(i=i) + theirs, layout)
                                for k, (theirs, layout) in block_names.items()})
    as_tuple = {ours: ((names,) if isinstance(names, str) else names, layout)
                for ours, (names, layout) in mapping.items()}
    return {name: as_tuple[name] for name, _ in model.named_parameters()}


def read_big_vision(path):
    """{name: float array} of a big_vision .npz: "params/" dropped, scanned layers split into encoderblock_{i}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    check_not_lfs_pointer(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name.removeprefix("params/"): npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a big_vision .npz checkpoint numpy can read without pickle ({e})") from None
    for name in [n for n in arrays if "/encoderblock/" in n]:
        stacked = arrays.pop(name)  # (num_layers, ...): scan=True stacks the layers
        for i, layer in enumerate(stacked):
            arrays[name.replace("/encoderblock/", f"/encoderblock_{i}/")] = layer
    odd = [f"{n} ({a.dtype})" for n, a in arrays.items() if a.dtype.kind != "f"]
    if odd:
        raise InputError(f"{path}: arrays that are not floating point: {', '.join(odd[:3])}")
    return arrays


def big_vision_config(arrays, image_size, where):
    """The config the arrays' shapes give: SiglipConfig when both towers ("img/", "txt/") are there, else the one
    tower's."""
    vision = big_vision_vision_config(arrays, image_size, where) if any(n.startswith("img/") for n in arrays) else None
    text = big_vision_text_config(arrays, where) if any(n.startswith("txt/") for n in arrays) else None
    if vision and text:
        return SiglipConfig(text_config=text, vision_config=vision)
    if not (vision or text):
        raise InputError(f"{where}: neither an image tower (img/...) nor a text tower (txt/...)")
    return vision or text


def bv_shape(arrays, name, where):
    if name not in arrays:
        raise InputError(f"{where}: no {name} array (is this a SigLIP checkpoint?)")
    return arrays[name].shape


def big_vision_vision_config(arrays, image_size, where):
    """The image tower's config from its shapes. They cannot tell the nominal image size when it is not patch x grid
    (so400m/14 at 384 = 27 x 14 + 6), so `image_size` may give it; by default the resolution in the file name that
    gives this grid (release names carry it: webli_en_so400m_384_58765454.npz), else patch x grid."""
    if "img/head/kernel" in arrays:
        raise InputError(f"{where}: img/head is a projection after the image tower, which SigLIP has not")
    patch, _, channels, width = bv_shape(arrays, "img/embedding/kernel", where)
    positions = bv_shape(arrays, "img/pos_embedding", where)[1]
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise InputError(f"{where}: img/pos_embedding holds {positions} positions, not a square grid")
    block = "img/Transformer/encoderblock_0"
    return SiglipVisionConfig(
        hidden_size=width, intermediate_size=bv_shape(arrays, f"{block}/MlpBlock_0/Dense_0/kernel", where)[1],
        num_hidden_layers=count_layers(arrays, "img/Transformer/encoderblock_"),
        num_attention_heads=bv_shape(arrays, f"{block}/{BV_ATTENTION}/query/kernel", where)[1],
        num_channels=channels, image_size=image_size or nominal_image_size(where, patch, grid), patch_size=patch,
        vision_use_head=f"{BV_MAP_HEAD}/probe" in arrays)


def big_vision_text_config(arrays, where):
    vocab, width = bv_shape(arrays, "txt/Embed_0/embedding", where)
    block = "txt/Encoder_0/encoderblock_0"
    return SiglipTextConfig(
        vocab_size=vocab, hidden_size=width,
        intermediate_size=bv_shape(arrays, f"{block}/MlpBlock_0/Dense_0/kernel", where)[1],
        num_hidden_layers=count_layers(arrays, "txt/Encoder_0/encoderblock_"),
        num_attention_heads=bv_shape(arrays, f"{block}/{BV_ATTENTION}/query/kernel", where)[1],
        max_position_embeddings=bv_shape(arrays, "txt/pos_embedding", where)[1],
        projection_size=bv_shape(arrays, "txt/head/kernel", where)[1])


def nominal_image_size(path, patch, grid):
    """A resolution in the file name that gives grid x grid patches, else patch x grid."""
    for number in re.findall(r"\d+", Path(path).stem):
        if int(number) // patch == grid:
            return int(number)
    return patch * grid


def load_big_vision(path, device, dtype, attn_implementation, image_size=None):
    """The model a big_vision .npz holds: two towers, or the one it has. Config from the shapes."""
    arrays = read_big_vision(path)
    config = big_vision_config(arrays, image_size, path)
    model_class = {SiglipVisionConfig: SiglipVisionModel, SiglipTextConfig: SiglipTextModel}.get(type(config),
                                                                                                  SiglipModel)
    with torch.device("meta"):
        model = model_class(config, attn_implementation)
    return assign_converted(model, converted_name_map(model, BV_TOP, BV_TOWERS), arrays, device, dtype, path)


def assign_converted(model, mapping, arrays, device, dtype, where):
    """Fill `model` through a name map {our name: (their names, layout)} from `arrays` {their name: array or tensor},
    converting each to our layout, device and dtype; every missing, unused or misshaped one named in one error."""
    used = {name for names, _ in mapping.values() for name in names}
    problems = [f"missing: {name}" for name in sorted(used - arrays.keys())]
    problems += [f"unexpected: {name}" for name in sorted(arrays.keys() - used)]
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    tensors, sources = {}, {}
    for ours, (names, layout) in mapping.items():
        if any(name not in arrays for name in names):
            continue
        sources[ours] = " + ".join(names)
        parts = [torch.as_tensor(arrays[name]) for name in names]
        try:
            tensor = layout(*parts)
        except (RuntimeError, IndexError):
            tensor = None
        if tensor is None or tuple(tensor.shape) != shapes[ours]:
            problems.append(f"shape: {sources[ours]} {[tuple(p.shape) for p in parts]} does not give {ours} "
                            f"{shapes[ours]}")
            continue
        tensors[ours] = tensor.to(device=device, dtype=dtype).contiguous()
    return assign_weights(model, tensors, sources, problems, where)


# ----------------------------------------------------------------------------------------------------------------
# open_clip / timm (hf-hub:timm/ViT-B-16-SigLIP and kin): open_clip_config.json + open_clip_model.safetensors. The
# image tower is a timm VisionTransformer ("visual.trunk.") with q|k|v fused in one `qkv` and a MAP head
# (`attn_pool`) whose query and key|value projections are separate; the text tower keeps torch's packed `in_proj`.

def fused_q(qkv):  # q|k|v rows (3D, ...) -> q (D, ...)
    return qkv.chunk(3)[0]


def fused_k(qkv):  # (3D, ...) -> k (D, ...)
    return qkv.chunk(3)[1]


def fused_v(qkv):  # (3D, ...) -> v (D, ...)
    return qkv.chunk(3)[2]


FUSED = (("q", fused_q), ("k", fused_k), ("v", fused_v))


def joined(*parts):  # the MAP head's q (D, ...) and kv (2D, ...) -> in_proj (3D, ...)
    return torch.cat(parts)


def one_element(x):  # open_clip's 0-d logit_scale / logit_bias -> (1,)
    return x.reshape(1)


OC_TIMM_BLOCK = {  # our parameter in blocks.{i} -> (timm name in visual.trunk.blocks.{i}, layout)
    "ln1.weight": ("norm1.weight", same), "ln1.bias": ("norm1.bias", same),
    **{f"attn.{x}.{p}": (f"attn.qkv.{p}", layout) for x, layout in FUSED for p in ("weight", "bias")},
    "attn.o.weight": ("attn.proj.weight", same), "attn.o.bias": ("attn.proj.bias", same),
    "ln2.weight": ("norm2.weight", same), "ln2.bias": ("norm2.bias", same),
    **{f"mlp.{x}.{p}": (f"mlp.{x}.{p}", same) for x in ("fc1", "fc2") for p in ("weight", "bias")},
}
OC_TEXT_BLOCK = {  # our parameter in blocks.{i} -> (open_clip name in text.transformer.resblocks.{i}, layout)
    "ln1.weight": ("ln_1.weight", same), "ln1.bias": ("ln_1.bias", same),
    **{f"attn.{x}.{p}": (f"attn.in_proj_{p}", layout) for x, layout in FUSED for p in ("weight", "bias")},
    "attn.o.weight": ("attn.out_proj.weight", same), "attn.o.bias": ("attn.out_proj.bias", same),
    "ln2.weight": ("ln_2.weight", same), "ln2.bias": ("ln_2.bias", same),
    **{f"mlp.{ours}.{p}": (f"mlp.{theirs}.{p}", same) for ours, theirs in (("fc1", "c_fc"), ("fc2", "c_proj"))
       for p in ("weight", "bias")},
}
OC_VISION = {  # our parameter under vision. -> (open_clip names, layout)
    "embed.patch.weight": ("visual.trunk.patch_embed.proj.weight", same),
    "embed.patch.bias": ("visual.trunk.patch_embed.proj.bias", same),
    "embed.pos": ("visual.trunk.pos_embed", unbatched),
    "norm.weight": ("visual.trunk.norm.weight", same), "norm.bias": ("visual.trunk.norm.bias", same),
    "head.probe": ("visual.trunk.attn_pool.latent", same),
    **{f"head.in_proj.{p}": ((f"visual.trunk.attn_pool.q.{p}", f"visual.trunk.attn_pool.kv.{p}"), joined)
       for p in ("weight", "bias")},
    **{f"head.{ours}.{p}": (f"visual.trunk.attn_pool.{theirs}.{p}", same) for p in ("weight", "bias")
       for ours, theirs in (("out_proj", "proj"), ("norm", "norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))},
}
OC_TEXT = {  # our parameter under text. -> (open_clip names, layout)
    "embed.token": ("text.token_embedding.weight", same), "embed.pos": ("text.positional_embedding", same),
    "norm.weight": ("text.ln_final.weight", same), "norm.bias": ("text.ln_final.bias", same),
    "head.weight": ("text.text_projection.weight", same), "head.bias": ("text.text_projection.bias", same),
}
OC_TOP = {"logit_scale": ("logit_scale", one_element), "logit_bias": ("logit_bias", one_element)}
OC_TOWERS = (("vision", "visual.trunk.blocks.{i}.", OC_TIMM_BLOCK, OC_VISION),
             ("text", "text.transformer.resblocks.{i}.", OC_TEXT_BLOCK, OC_TEXT))

# timm's SigLIP trunks (timm/models/vision_transformer.py, timm 1.0): the heads and GELU their names stand for.
# open_clip_config.json names the trunk and gives neither. (timm before 1.0 ran every MAP head's MLP with exact GELU.)
TIMM_TRUNKS = {
    **{f"vit_base_patch16_siglip_{r}": (12, "gelu") for r in (224, 256, 384, 512)},
    "vit_base_patch32_siglip_256": (12, "gelu_pytorch_tanh"),
    **{f"vit_large_patch16_siglip_{r}": (16, "gelu") for r in (256, 384)},
    "vit_large_patch16_siglip_512": (16, "gelu_pytorch_tanh"),
    **{f"vit_so400m_patch14_siglip_{r}": (16, "gelu") for r in (224, 378, 384)},
    **{f"vit_so400m_patch16_siglip_{r}": (16, "gelu_pytorch_tanh") for r in (256, 384, 512)},
    **{f"vit_giantopt_patch16_siglip_{r}": (16, "gelu_pytorch_tanh") for r in (256, 384)},
}
TIMM_GELUS = {None: "gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}  # timm's act_layer -> hidden_act


def open_clip_config(model_cfg, shapes, where):
    """SiglipConfig from open_clip_config.json's model_cfg and the tensors' shapes, refusing what is not SigLIP."""
    vision_cfg, text_cfg = json_object(model_cfg, "vision_cfg"), json_object(model_cfg, "text_cfg")
    trunk = vision_cfg.get("timm_model_name")
    wanted = {"vision_cfg.timm_pool": (vision_cfg.get("timm_pool"), "map"),
              "vision_cfg.timm_proj": (vision_cfg.get("timm_proj"), "none"),
              "text_cfg.pool_type": (text_cfg.get("pool_type"), "last"),
              "text_cfg.no_causal_mask": (text_cfg.get("no_causal_mask"), True),
              "text_cfg.proj_bias": (text_cfg.get("proj_bias"), True)}
    if trunk is None or any(value != want for value, want in wanted.values()):
        found = ", ".join(f"{k}={v!r}" for k, (v, want) in wanted.items() if v != want) or "no timm_model_name"
        raise InputError(f"{where}: not an open_clip SigLIP (a timm trunk with timm_pool 'map', timm_proj 'none'; "
                         f"text pool_type 'last', no_causal_mask, proj_bias): {found}")
    kwargs = json_object(vision_cfg, "timm_model_kwargs")  # what timm is given beyond the name, when it is
    heads, act = TIMM_TRUNKS.get(trunk, (kwargs.get("num_heads"), TIMM_GELUS.get(kwargs.get("act_layer"))))
    if heads is None or act is None:
        raise InputError(f"{where}: timm trunk {trunk!r} is not one of timm's SigLIP entries, so its heads and GELU "
                         f"are unknown; give them in vision_cfg.timm_model_kwargs (num_heads, act_layer 'gelu' or "
                         f"'gelu_tanh')")
    width, channels, patch, _ = shapes["visual.trunk.patch_embed.proj.weight"]
    grid = math.isqrt(shapes["visual.trunk.pos_embed"][1])
    image_size = vision_cfg.get("image_size", patch * grid)
    image_size = image_size[0] if isinstance(image_size, list) else image_size
    vision = SiglipVisionConfig(
        hidden_size=width, intermediate_size=shapes["visual.trunk.blocks.0.mlp.fc1.weight"][0],
        num_hidden_layers=count_layers(shapes, "visual.trunk.blocks."), num_attention_heads=heads,
        num_channels=channels, image_size=image_size, patch_size=patch, hidden_act=act)
    vocab, text_width = shapes["text.token_embedding.weight"]
    text_act = "gelu_pytorch_tanh" if json_object(text_cfg, "act_kwargs").get("approximate") == "tanh" else "gelu"
    text = SiglipTextConfig(
        vocab_size=vocab, hidden_size=text_width,
        intermediate_size=shapes["text.transformer.resblocks.0.mlp.c_fc.weight"][0],
        num_hidden_layers=count_layers(shapes, "text.transformer.resblocks."), num_attention_heads=text_cfg.get("heads"),
        max_position_embeddings=shapes["text.positional_embedding"][0],
        projection_size=shapes["text.text_projection.weight"][0], hidden_act=text_act,
        # open_clip's LayerNorm default is torch's 1e-5; its SigLIP configs set 1e-6
        layer_norm_eps=json_object(text_cfg, "norm_kwargs").get("eps", 1e-5))
    return SiglipConfig(text_config=text, vision_config=vision)


def count_layers(names, prefix):
    """How many layers the names hold: the distinct numbers right after `prefix` ("visual.trunk.blocks.")."""
    return len({re.match(r"\d*", name[len(prefix):]).group() for name in names if name.startswith(prefix)})


def load_open_clip(folder, device, dtype, attn_implementation):
    """The two-tower model of an open_clip folder, each tower with the GELU it was made with."""
    folder = Path(folder)
    weights = folder / "open_clip_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no open_clip_model.safetensors (only safetensors checkpoints are "
                                f"read){pickles_found(folder)}")
    config_path = folder / "open_clip_config.json"
    model_cfg = json_object(read_json(config_path), "model_cfg")
    tensors, present = read_tensors({weights: None}, None, device, dtype)
    try:
        config = open_clip_config(model_cfg, {name: tuple(t.shape) for name, t in tensors.items()}, config_path)
    except KeyError as e:
        raise InputError(f"{weights}: no {e.args[0]} tensor (is this an open_clip SigLIP?)") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{config_path}: {e}") from None
    with torch.device("meta"):
        model = SiglipModel(config, attn_implementation)
    return assign_converted(model, converted_name_map(model, OC_TOP, OC_TOWERS), tensors, device, dtype, weights)


# ----------------------------------------------------------------------------------------------------------------
# Quantization: weights stored as 8-bit or 4-bit integers and a scale per output channel or per group, dequantized
# where they are used. What the transformers SigLIP page does with bitsandbytes' 4-bit weights, in plain tensors.

QUANTIZED_BITS = (8, 4)


def quantize_groups(weight, bits, group_size):
    """Symmetric round-to-nearest: (codes int8 (O, I), scales (O, I / group_size)) with weight ~ codes * scale.

    Each run of group_size input features of a row shares a scale, max |w| / (2^(bits-1) - 1), so that run's
    largest weight lands on +-127 (8-bit) or +-7 (4-bit) and zero stays exactly zero; group_size None: one scale per
    row (per output channel). An all-zero group gets scale 1 and codes 0.
    """
    rows, columns = weight.shape
    groups = weight.float().reshape(rows, -1, group_size or columns)  # (O, G, g)
    qmax = 2 ** (bits - 1) - 1
    scales = groups.abs().amax(dim=-1) / qmax  # (O, G)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # (O, G)
    codes = (groups / scales[..., None]).round().clamp(-qmax, qmax).to(torch.int8)  # (O, G, g)
    return codes.reshape(rows, columns), scales.to(weight.dtype)


def dequantize_groups(codes, scales):
    """codes (O, I) times each group's scale (O, G): the weight (O, I) in the scales' dtype."""
    rows, columns = codes.shape
    groups = codes.reshape(rows, scales.shape[1], -1).to(scales.dtype)  # (O, G, g)
    return (groups * scales[..., None]).reshape(rows, columns)  # (O, I)


def pack_int4(codes):
    """int8 codes in [-7, 7] (O, I), I even -> uint8 (O, I / 2): column 2j in the low 4 bits, 2j + 1 in the high 4,
    each stored as code + 8."""
    unsigned = (codes + 8).to(torch.uint8)  # (O, I), 1..15
    return unsigned[:, 0::2] | (unsigned[:, 1::2] << 4)  # (O, I / 2)


def unpack_int4(packed):
    """uint8 (O, I / 2) -> int8 codes (O, I): pack_int4 undone."""
    low, high = (packed & 15).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8  # (O, I / 2) each
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)  # (O, I)


class QuantizedTable(nn.Module):
    """A weight matrix (O, I) held as integer codes and scales: `codes` int8 (O, I) for 8 bits, uint8 (O, I / 2) for
    4 bits (two codes a byte, pack_int4), `scales` (O, G) in the model's dtype. `.weight` dequantizes it whole;
    `[ids]` dequantizes the rows asked for (the token table, whose rows are looked up, not multiplied)."""

    def __init__(self, weight, bits, group_size):
        super().__init__()
        self.bits, self.group_size, self.shape = bits, group_size, tuple(weight.shape)
        codes, scales = quantize_groups(weight, bits, group_size)  # (O, I), (O, G)
        self.register_buffer("codes", pack_int4(codes) if bits == 4 else codes)
        self.register_buffer("scales", scales)

    def integer_codes(self):
        return unpack_int4(self.codes) if self.bits == 4 else self.codes  # (O, I) int8

    @property
    def weight(self):
        return dequantize_groups(self.integer_codes(), self.scales)  # (O, I)

    def __getitem__(self, ids):  # ids (B, L)
        codes = self.codes[ids]  # (B, L, I) or (B, L, I / 2)
        codes = unpack_int4(codes.flatten(0, -2)).view(*ids.shape, -1) if self.bits == 4 else codes  # (B, L, I)
        scales = self.scales[ids]  # (B, L, G)
        groups = codes.unflatten(-1, (scales.shape[-1], -1)).to(scales.dtype)  # (B, L, G, g)
        return (groups * scales[..., None]).flatten(-2)  # (B, L, I)


class QuantizedLinear(QuantizedTable):
    """nn.Linear with a quantized weight: y = x W^T + b, W dequantized for each call (weight-only quantization: the
    arithmetic stays in the activations' dtype; what shrinks is the memory and the file)."""

    def __init__(self, linear, bits, group_size):
        super().__init__(linear.weight.detach(), bits, group_size)
        self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x):  # x (..., I)
        return F.linear(x, self.weight.to(x.dtype), self.bias)  # (..., O)


class DynamicInt8Linear(nn.Module):
    """int8 weights (one scale per output channel) times int8 activations: each sample's input is quantized on each
    call (by its min and max) and multiplied in integers by fbgemm, torch's CPU int8 kernel, with the weight
    packed once for it. reduce_range: 7-bit activations, so that AVX2's 16-bit pairwise sums cannot saturate.

    fbgemm's ops are reached through torch.ops.quantized, the kernels behind the deprecated
    torch.ao.quantization.quantize_dynamic; its successor, torchao's Int8DynamicActivationInt8WeightConfig, runs
    torch._int_mm, which measured 40x slower than float32 here (x86 with AVX2, no VNNI). CPU only."""

    def __init__(self, quantized):
        super().__init__()
        if quantized.bits != 8 or quantized.group_size is not None:
            raise InputError("dynamic_activations needs 8-bit weights with one scale per output channel")
        self.bits, self.group_size, self.shape = 8, None, quantized.shape
        self.register_buffer("scales", quantized.scales)  # (O, 1)
        self.bias = quantized.bias
        zero_points = torch.zeros(self.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch deprecates quantized tensors; fbgemm's prepack still takes only them
            warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
            qweight = torch._make_per_channel_quantized_tensor(quantized.codes, self.scales[:, 0].double(),
                                                               zero_points, 0)
            self.packed = torch.ops.quantized.linear_prepack(qweight, self.bias.float())  # the one copy of the codes

    @property
    def codes(self):
        return torch.ops.quantized.linear_unpack(self.packed)[0].int_repr()  # (O, I) int8, for saving

    @property
    def weight(self):
        return dequantize_groups(self.codes, self.scales)  # (O, I)

    def forward(self, x):  # x (B, T, I) or (T, I), float32
        if x.dim() == 2:
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)  # (T, O)
        # One activation range per sample: an image's features never depend on the others in its batch (per batch,
        # one bright image would coarsen the rest: cosine to float32 down to 0.9988 instead of 0.9997). Each
        # sample's output goes straight into place: no list of B outputs beside the stacked copy.
        out = x.new_empty(*x.shape[:-1], self.shape[0])  # (B, T, O)
        for sample, row in zip(x, out):
            row.copy_(torch.ops.quantized.linear_dynamic(sample, self.packed, True))  # (T, O)
        return out  # (B, T, O)


def quantize(model, bits=8, group_size=None, dynamic_activations=False):
    """`model` (any of the four kinds) with every nn.Linear, and the text tower's token table, quantized in place.

    bits=8: symmetric, one scale per output channel (group_size None) or per group. bits=4: per group of group_size
    input features (default 64), two codes a byte. dynamic_activations=True (8-bit, CPU, float32): the linears
    multiply in int8 (DynamicInt8Linear), the fast path on a CPU. The patch embedding (a convolution), LayerNorms,
    biases, positions and logit scale and bias stay as they are. save_pretrained then writes the codes and scales
    (README: "Quantized models"), and from_pretrained reads them back.
    """
    if bits not in QUANTIZED_BITS:
        raise InputError(f"bits={bits!r}: siglip-min quantizes to {' or '.join(map(str, QUANTIZED_BITS))} bits")
    group_size = 64 if bits == 4 and group_size is None else group_size
    if group_size is not None and (not isinstance(group_size, int) or isinstance(group_size, bool)
                                   or group_size < 2 or group_size % 2):
        raise InputError(f"group_size={group_size!r}: expected an even int of at least 2, or None for one scale per row")
    if dynamic_activations and (bits != 8 or group_size is not None):
        raise InputError("dynamic_activations=True multiplies in int8: it needs bits=8 and group_size=None")
    if dynamic_activations and device_of(model).type != "cpu":
        raise InputError(f"dynamic_activations=True runs fbgemm, a CPU kernel; the model is on {device_of(model)}")
    if getattr(model, "quantization", None):
        return requantize(model, bits, group_size, dynamic_activations)
    check_groups(model, group_size)

    def quantized(linear):
        weights_only = QuantizedLinear(linear, bits, group_size)
        return DynamicInt8Linear(weights_only) if dynamic_activations else weights_only

    replace_linears(model, nn.Linear, quantized)
    if hasattr(model, "text"):
        embed = model.text.embed
        table = QuantizedTable(embed.token.detach(), bits, group_size)
        del embed.token  # a parameter's name takes a module only once the parameter is gone
        embed.token = table
    model.quantization = {"bits": bits, "group_size": group_size, "dynamic_activations": dynamic_activations}
    return model


def requantize(model, bits, group_size, dynamic_activations):
    """An 8-bit per-channel model (from_pretrained of a quantized folder) given int8 activations; nothing else: a
    quantized model is not quantized again."""
    wanted = {"bits": bits, "group_size": group_size, "dynamic_activations": dynamic_activations}
    if model.quantization == wanted:
        return model
    if not (dynamic_activations and model.quantization == {**wanted, "dynamic_activations": False}):
        raise InputError(f"the model is already quantized ({model.quantization}); load the float checkpoint to "
                         f"quantize it otherwise")
    replace_linears(model, QuantizedLinear, DynamicInt8Linear)
    model.quantization = wanted
    return model


def replace_linears(model, kind, replacement):
    """Every submodule of type `kind` replaced by replacement(it), in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is kind:
                setattr(parent, name, replacement(child))


def check_groups(model, group_size):
    """InputError naming the first weight whose input width group_size does not divide."""
    widths = {name: module.in_features for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    if hasattr(model, "text"):
        widths["text.embed.token"] = model.text.embed.token.shape[1]
    for name, width in widths.items():
        if group_size is not None and width % group_size:
            raise InputError(f"group_size={group_size} does not divide {name}'s {width} input features")


# ----------------------------------------------------------------------------------------------------------------
# One entry point for every kind.

def from_pretrained(path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa", image_size=None):
    """The model a checkpoint holds: SiglipModel, SiglipVisionModel, SiglipTextModel or SiglipClassifier.

    path_or_repo_id: a transformers folder (model_type siglip, siglip_vision_model or siglip_text_model), a Hub id
    in the local cache ("hf-hub:" prefix allowed), a big_vision .npz file, or an open_clip folder
    (open_clip_config.json + open_clip_model.safetensors). image_size: for a .npz only (see big_vision_config).
    """
    device = check_device(device)
    check_dtype(dtype)
    folder = checkpoint_location(path_or_repo_id)
    if folder.suffix == ".npz":
        return load_big_vision(folder, device, dtype, attn_implementation, image_size)
    if image_size is not None:
        raise InputError("image_size is for big_vision .npz files; a folder's config gives its own")
    if (folder / "open_clip_config.json").is_file():
        return load_open_clip(folder, device, dtype, attn_implementation)
    if not (folder / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise InputError(f"{folder}: no config.json (nor open_clip_config.json), so not a checkpoint siglip-min reads; "
                         f"it holds {found}{pickles_found(folder)}")
    config, architectures, quantization = read_config(folder)
    model_class = {SiglipVisionConfig: SiglipVisionModel, SiglipTextConfig: SiglipTextModel}.get(type(config))
    if model_class is None:
        model_class = SiglipClassifier if is_classifier(architectures) else SiglipModel
    return load_pretrained(model_class, folder, device, dtype, attn_implementation,
                           (config, architectures, quantization))


def checkpoint_location(path_or_repo_id):
    """The .npz file, or the folder (a Hub id looked up in the local cache, "hf-hub:" dropped), of a checkpoint."""
    if str(path_or_repo_id).endswith(".npz"):
        return Path(path_or_repo_id)
    return Path(resolve_model_dir(str(path_or_repo_id).removeprefix("hf-hub:")))


# ----------------------------------------------------------------------------------------------------------------
# Embeddings and zero-shot logits ([1] §5): the Python API that cli.py, train.py and the notebooks call.

DEFAULT_TEMPLATE = "This is a photo of {}."  # transformers' zero-shot-image-classification pipeline default


def embed_images(model, processor, images):
    """L2-normalised image embeddings (B, D) in the model's dtype and device; images as `processor` takes them."""
    inputs = processor(images)  # pixel_values, or NaFlex's (pixel_values, pixel_attention_mask, spatial_shapes)
    return embed_pixels(model, *inputs) if isinstance(inputs, tuple) else embed_pixels(model, inputs)  # (B, D)


def embed_pixels(model, pixel_values, pixel_attention_mask=None, spatial_shapes=None):
    """L2-normalised image embeddings (B, D) of NumPy pixel_values (B, 3, H, W), or of NaFlex's three arrays."""
    device = device_of(model)
    tensors = [None if a is None else torch.from_numpy(a).to(device)
               for a in (pixel_values, pixel_attention_mask, spatial_shapes)]
    with torch.no_grad():
        features = model.get_image_features(*tensors)  # (B, D)
    return l2_normalize(features)  # (B, D)


def embed_texts(model, tokenizer, texts, mask_padding=False):
    """L2-normalised text embeddings (B, D); texts padded to max length, as SigLIP was trained.

    SigLIP was trained without a padding mask. mask_padding=True passes the tokenizer's attention mask, as
    transformers 5.x does whenever its tokenizer output goes to the model (its pipeline included): other numbers.
    """
    ids, mask = tokenizer(texts, return_attention_mask=True)  # (B, L), (B, L)
    check_token_ids(ids, model.text.embed.token.shape[0])
    device = device_of(model)
    with torch.no_grad():
        features = model.get_text_features(torch.from_numpy(ids).to(device),
                                           torch.from_numpy(mask).to(device) if mask_padding else None)  # (B, D)
    return l2_normalize(features)  # (B, D)


def device_of(model):
    return next(model.parameters()).device


def check_token_ids(ids, vocab_size):
    """NumPy ids (B, L) must lie in [0, vocab_size): a tokenizer from another checkpoint gives ids the model lacks."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise InputError(f"input_ids must lie in [0, {vocab_size}), got {ids.min()}..{ids.max()}: is the tokenizer "
                         f"this checkpoint's?")


def batches(items, batch_size):
    return [items[i: i + batch_size] for i in range(0, len(items), batch_size)]


def zero_shot_ranking(model, tokenizer, processor, images, labels, template=DEFAULT_TEMPLATE, batch_size=32,
                      softmax=False, mask_padding=False):
    """For each image, [(label, score), ...] best first, scored as transformers' zero-shot pipeline does for SigLIP.

    The score is sigmoid(logit): each label is its own yes/no question, so scores do not sum to 1 ([1] §3).
    softmax=True gives the softmax over the labels instead (the same ranking, CLIP-style numbers).
    mask_padding: see embed_texts; True reproduces transformers 5.x's pipeline, False SigLIP as trained.
    """
    logits = zero_shot_logits(model, tokenizer, processor, images, labels, template, batch_size, mask_padding)
    return ranked_labels(labels, logits.softmax(dim=-1) if softmax else logits.sigmoid())


def zero_shot_logits(model, tokenizer, processor, images, labels, template=DEFAULT_TEMPLATE, batch_size=32,
                     mask_padding=False):
    """logits_per_image (B_img, C) in float32 for the prompts `template.format(label)`."""
    text_embeds = prompt_embeds(model, tokenizer, labels, template, batch_size, mask_padding)  # (C, D)
    with torch.no_grad():
        logits = [model.logits_per_text(embed_images(model, processor, chunk), text_embeds).T  # (b, C)
                  for chunk in batches(list(images), batch_size)]
    return torch.cat(logits).float()  # (B, C)


def prompt_embeds(model, tokenizer, labels, template=DEFAULT_TEMPLATE, batch_size=32, mask_padding=False):
    """L2-normalised text embeddings (C, D) of `template.format(label)` for each label, which must not be blank."""
    check_template(template)
    if not labels:
        raise InputError("no labels to classify against")
    blank = [i for i, label in enumerate(labels) if not label.strip()]
    if blank:
        raise InputError(f"label {blank[0]} is blank: every label is its own yes/no question and needs words")
    prompts = [template.format(label) for label in labels]
    return torch.cat([embed_texts(model, tokenizer, chunk, mask_padding) for chunk in batches(prompts, batch_size)])


def check_template(template):
    """A prompt template holds exactly one replacement field, `{}`, as string.Formatter parses it: "{{}}" holds none
    (literal braces), "{} {x}" and "{}{}" two, "{0:>9}" a format spec."""
    try:
        replacements = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                        if name is not None]
    except ValueError as e:
        raise InputError(f"template {template!r}: {e}") from None
    if replacements != [("", "", None)]:
        raise InputError(f"template {template!r} must hold exactly one '{{}}' for the label, and nothing else in "
                         f"braces (write {{{{ and }}}} for literal ones)")


def ranked_labels(labels, scores):
    """[(label, score), ...] best first for each row of scores (B, C)."""
    return [sorted(zip(labels, row.tolist()), key=lambda pair: -pair[1]) for row in scores]


if __name__ == "__main__":  # the command line lives in cli.py; `python siglip_min.py classify ...` still works
    raise SystemExit(__import__("cli").main())
