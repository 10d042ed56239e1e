"""siglip-min: SigLIP in one file, numerically identical to Hugging Face transformers.

SigLIP is a two-tower image-text model (a ViT and a text transformer) trained with a pairwise sigmoid loss
instead of CLIP's softmax. This file holds the configs, every layer, the loss, checkpoint I/O and the
command line. Read it top to bottom: it follows the model diagram.

References
  [1] Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, arXiv:2303.15343.
  [2] google-research/big_vision: big_vision/models/vit.py (ViT, MAPHead), models/proj/image_text/two_towers.py,
      trainers/proj/image_text/siglip.py (the loss).
  [3] huggingface/transformers: models/siglip/modeling_siglip.py (SiglipModel), the oracle our tests compare to.

Shapes: B batch, N image tokens (patches), L text tokens, D width, H heads, Dh = D / H, P projection size.
"""
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hub import resolve_model_dir

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


# ----------------------------------------------------------------------------------------------------------------
# Configs: defaults are google/siglip-base-patch16-224. Field names are transformers' so config.json maps 1:1.

@dataclass
class VisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    def __post_init__(self):
        check_config(self, "vision_config")
        # image_size need not be a multiple of patch_size: so400m-patch14-384 has 384 = 27 * 14 + 6, and its
        # 'valid' convolution ignores the last 6 pixel rows and columns (big_vision and transformers alike).
        if self.image_size < self.patch_size:
            raise ValueError(f"vision_config.image_size={self.image_size} is smaller than "
                             f"vision_config.patch_size={self.patch_size}")


@dataclass
class TextConfig:
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
        check_config(self, "text_config")
        if self.projection_size is None:
            self.projection_size = self.hidden_size


@dataclass
class SiglipConfig:
    text_config: TextConfig = field(default_factory=TextConfig)
    vision_config: VisionConfig = field(default_factory=VisionConfig)

    def __post_init__(self):
        if self.text_config.projection_size != self.vision_config.hidden_size:
            raise ValueError(f"text_config.projection_size={self.text_config.projection_size} must equal "
                             f"vision_config.hidden_size={self.vision_config.hidden_size}: the two embeddings are "
                             f"compared by dot product")

    @classmethod
    def from_hf(cls, config):
        """From a transformers SiglipConfig dict (config.json). Keys we do not use are ignored."""
        if config.get("model_type", "siglip") != "siglip":
            raise ValueError(f"model_type {config['model_type']!r} is not SigLIP ('siglip')")
        return cls(text_config=known_fields(TextConfig, config.get("text_config") or {}),
                   vision_config=known_fields(VisionConfig, config.get("vision_config") or {}))

    def to_hf(self):
        """The config.json that transformers.SiglipModel reads."""
        return {"architectures": ["SiglipModel"], "model_type": "siglip",
                "text_config": asdict(self.text_config), "vision_config": asdict(self.vision_config)}


def known_fields(config_class, values):
    """Build `config_class` from the keys of `values` it knows."""
    names = {f.name for f in fields(config_class)}
    return config_class(**{k: v for k, v in values.items() if k in names})


def check_config(config, where):
    """Fail on the config values this implementation cannot honour, naming the field."""
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) <= 0:
            raise ValueError(f"{where}.{name} must be a positive int, got {getattr(config, name)!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"{where}.hidden_size={config.hidden_size} is not divisible by "
                         f"{where}.num_attention_heads={config.num_attention_heads}")
    if config.hidden_act != "gelu_pytorch_tanh":
        raise ValueError(f"{where}.hidden_act={config.hidden_act!r}: SigLIP uses 'gelu_pytorch_tanh'")
    for name in ("image_size", "patch_size"):
        if hasattr(config, name) and not (isinstance(getattr(config, name), int) and getattr(config, name) > 0):
            raise ValueError(f"{where}.{name} must be a positive int (square images), got {getattr(config, name)!r}")


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
    """fc1 -> GELU (tanh approximation) -> fc2 (transformers SiglipMLP)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):  # x (B, T, D)
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (B, T, D)


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(ln1(x)), then x + mlp(ln2(x)) (transformers SiglipEncoderLayer)."""

    def __init__(self, config, attn_implementation):
        super().__init__()
        D = config.hidden_size
        self.ln1 = layer_norm(D, config.layer_norm_eps)
        self.attn = Attention(D, config.num_attention_heads, attn_implementation)
        self.ln2 = layer_norm(D, config.layer_norm_eps)
        self.mlp = MLP(D, config.intermediate_size)

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
            raise ValueError(f"pixel_values of {tuple(pixel_values.shape[-2:])} give a {rows}x{cols} patch grid, "
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
        self.mlp = MLP(D, config.intermediate_size)

    def forward(self, x):  # x (B, N, D)
        w_q, w_k, w_v = self.in_proj.weight.chunk(3)  # 3 x (D, D)
        b_q, b_k, b_v = self.in_proj.bias.chunk(3)  # 3 x (D,)
        probe = self.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
        q = split_heads(F.linear(probe, w_q, b_q), self.num_heads)  # (B, H, 1, Dh)
        k = split_heads(F.linear(x, w_k, b_k), self.num_heads)  # (B, H, N, Dh)
        v = split_heads(F.linear(x, w_v, b_v), self.num_heads)  # (B, H, N, Dh)
        y = self.out_proj(merge_heads(attend(q, k, v, None, self.attn_implementation)))  # (B, 1, D)
        y = y + self.mlp(self.norm(y))  # (B, 1, D)
        return y[:, 0]  # (B, D)


class VisionTower(nn.Module):
    """Embeddings -> blocks -> post LayerNorm -> MAP head (transformers SiglipVisionModel)."""

    def __init__(self, config, attn_implementation):
        super().__init__()
        self.embed = VisionEmbeddings(config)
        self.blocks = encoder_blocks(config, attn_implementation)
        self.norm = layer_norm(config.hidden_size, config.layer_norm_eps)
        self.head = MAPHead(config, attn_implementation)

    def tokens(self, pixel_values, interpolate_pos_encoding=False):
        """Every token after the final LayerNorm: (B, N, D), transformers' last_hidden_state."""
        check_pixel_values(pixel_values, self.embed.patch.in_channels)
        x = self.embed(pixel_values, interpolate_pos_encoding)  # (B, N, D)
        for block in self.blocks:
            x = block(x)  # (B, N, D)
        return self.norm(x)  # (B, N, D)

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        return self.head(self.tokens(pixel_values, interpolate_pos_encoding))  # (B, D)


def check_pixel_values(pixel_values, channels):
    if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
        shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values).__name__
        raise ValueError(f"pixel_values must be a tensor (B, {channels}, H, W), got {shape}")


# ----------------------------------------------------------------------------------------------------------------
# Text tower: bidirectional transformer, pooled at the last position ([1] §4; transformers SiglipTextModel).

class TextEmbeddings(nn.Module):
    """Token + learned position embeddings."""

    def __init__(self, config):
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos = nn.Parameter(torch.zeros(config.max_position_embeddings, config.hidden_size))  # (Lmax, D)

    def forward(self, input_ids):  # input_ids (B, L)
        return self.token(input_ids) + self.pos[: input_ids.shape[1]]  # (B, L, D)


class TextTower(nn.Module):
    """Embeddings -> blocks -> final LayerNorm -> token L-1 -> Linear head to P."""

    def __init__(self, config, attn_implementation):
        super().__init__()
        self.embed = TextEmbeddings(config)
        self.blocks = encoder_blocks(config, attn_implementation)
        self.norm = layer_norm(config.hidden_size, config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)

    def forward(self, input_ids, attention_mask=None):  # input_ids (B, L)
        keep = key_mask(input_ids, attention_mask, self.embed.pos.shape[0], self.embed.token.num_embeddings)
        x = self.embed(input_ids)  # (B, L, D)
        for block in self.blocks:
            x = block(x, keep)  # (B, L, D)
        x = self.norm(x)  # (B, L, D)
        # SigLIP pools the last position, which is padding for short texts: it was trained that way ([1] §4).
        return self.head(x[:, -1])  # (B, P)


def key_mask(input_ids, attention_mask, max_length, vocab_size):
    """Check the text inputs; turn attention_mask (B, L) of 1/0 into keys to keep (B, 1, 1, L), or None.

    SigLIP was trained without a padding mask; with one, padded keys are masked for every query, as in
    transformers' create_bidirectional_mask (nothing masks the queries, so padded positions still get outputs).
    """
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        shape = tuple(input_ids.shape) if hasattr(input_ids, "shape") else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor (B, L), got {shape} "
                         f"{getattr(input_ids, 'dtype', '')}".rstrip())
    if input_ids.shape[1] > max_length:
        raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, max_position_embeddings is {max_length}")
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}), got {input_ids.min()}..{input_ids.max()}")
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L)


# ----------------------------------------------------------------------------------------------------------------
# The two-tower model and the sigmoid loss ([1] §3).

@dataclass
class SiglipOutput:
    logits_per_image: torch.Tensor  # (B_img, B_txt)
    logits_per_text: torch.Tensor  # (B_txt, B_img)
    image_embeds: torch.Tensor  # (B_img, D), L2-normalised
    text_embeds: torch.Tensor  # (B_txt, P), L2-normalised
    loss: torch.Tensor = None


def l2_normalize(x):
    return x / x.norm(dim=-1, keepdim=True)  # (B, D)


def sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias):
    """-sum log sigmoid(z_ij * logit_ij) / B over all B*B pairs, z = +1 on the diagonal, -1 elsewhere ([1] §3).

    Inputs are L2-normalised embeddings of matching pairs (row i of each is pair i); `logit_scale` is the
    stored log temperature. Same value as transformers SiglipModel(return_loss=True).
    """
    check_pairs(image_embeds, text_embeds)
    return pairwise_loss_sum(image_embeds, text_embeds, logit_scale, logit_bias, positives=True) / image_embeds.shape[0]


def chunked_sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, num_chunks):
    """sigmoid_loss block by block, as the multi-device scheme of [1] §3.1, never building the B x B matrix.

    Split the batch into `num_chunks` "devices", each holding its own images and texts (sizes may differ by one
    when num_chunks does not divide B). Step 0: every device scores its own block, which holds its positives.
    Steps 1..num_chunks-1: the texts move one device along the ring and each device scores a negatives-only block.
    Peak memory is one (B/num_chunks)^2 block instead of B^2.
    """
    check_pairs(image_embeds, text_embeds)
    if not 1 <= num_chunks <= image_embeds.shape[0]:
        raise ValueError(f"num_chunks={num_chunks} must lie in [1, batch size {image_embeds.shape[0]}]")
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
    logits = text_embeds @ image_embeds.T * logit_scale.exp() + logit_bias  # (B_txt, B_img)
    z = -torch.ones_like(logits)  # (B_txt, B_img): every pair a negative...
    if positives:
        z = z + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)  # ...but the diagonal
    return -F.logsigmoid(z * logits).sum()  # ()


def check_pairs(image_embeds, text_embeds):
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise ValueError(f"the loss needs matching pairs (B, D): image_embeds {tuple(image_embeds.shape)} vs "
                         f"text_embeds {tuple(text_embeds.shape)}")


class SigLIP(nn.Module):
    """Vision tower + text tower + learned logit scale and bias (transformers SiglipModel)."""

    def __init__(self, config=None, attn_implementation="sdpa"):
        super().__init__()
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation={attn_implementation!r}, expected one of {ATTN_IMPLEMENTATIONS}")
        self.config = config or SiglipConfig()
        self.vision = VisionTower(self.config.vision_config, attn_implementation)
        self.text = TextTower(self.config.text_config, attn_implementation)
        # From-scratch init of [1] §3: t' = log 10, b = -10. (transformers initialises both to 0.)
        self.logit_scale = nn.Parameter(torch.tensor([math.log(10.0)]))  # (1,)
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))  # (1,)

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False):
        return self.vision(pixel_values, interpolate_pos_encoding)  # (B, D), not normalised

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text(input_ids, attention_mask)  # (B, P), not normalised

    def forward(self, input_ids, pixel_values, attention_mask=None, interpolate_pos_encoding=False,
                return_loss=False):
        image_embeds = l2_normalize(self.vision(pixel_values, interpolate_pos_encoding))  # (B_img, D)
        text_embeds = l2_normalize(self.text(input_ids, attention_mask))  # (B_txt, D)
        logits_per_text = text_embeds @ image_embeds.T * self.logit_scale.exp() + self.logit_bias  # (B_txt, B_img)
        loss = sigmoid_loss(image_embeds, text_embeds, self.logit_scale, self.logit_bias) if return_loss else None
        return SiglipOutput(logits_per_text.T, logits_per_text, image_embeds, text_embeds, loss)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa"):
        """Load a transformers SiglipModel checkpoint (folder or cached Hub id) straight to device and dtype."""
        folder = resolve_model_dir(path_or_repo_id)
        config = SiglipConfig.from_hf(read_config(folder))
        with torch.device("meta"):  # no memory, no init: every tensor comes from the file
            model = cls(config, attn_implementation)
        return load_weights(model, folder, hf_names(model), device, dtype)

    def save_pretrained(self, folder):
        """config.json + model.safetensors in transformers' layout and names."""
        write_checkpoint(self, folder, self.config.to_hf(), hf_names(self))


class SigLIPClassifier(nn.Module):
    """Vision tower, mean over its output tokens, Linear to the classes (transformers SiglipForImageClassification)."""

    def __init__(self, config, id2label, attn_implementation="sdpa"):
        super().__init__()
        self.config, self.id2label = config, {int(k): v for k, v in id2label.items()}
        self.vision = VisionTower(config.vision_config, attn_implementation)
        self.classifier = nn.Linear(config.vision_config.hidden_size, len(self.id2label))

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        tokens = self.vision.tokens(pixel_values, interpolate_pos_encoding)  # (B, N, D)
        return self.classifier(tokens.mean(dim=1))  # (B, num_labels)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, device="cpu", dtype=torch.float32, attn_implementation="sdpa"):
        folder = resolve_model_dir(path_or_repo_id)
        hf_config = read_config(folder)
        id2label = hf_config.get("id2label") or {i: f"LABEL_{i}" for i in range(hf_config.get("num_labels", 2))}
        with torch.device("meta"):
            model = cls(SiglipConfig.from_hf(hf_config), id2label, attn_implementation)
        return load_weights(model, folder, hf_names(model), device, dtype)

    def save_pretrained(self, folder):
        config = {**self.config.to_hf(), "architectures": ["SiglipForImageClassification"],
                  "id2label": {str(i): name for i, name in self.id2label.items()},
                  "label2id": {name: i for i, name in self.id2label.items()}}
        write_checkpoint(self, folder, config, hf_names(self))


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
    "embed.token.weight": "embeddings.token_embedding.weight",
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


def hf_names(model):
    """Our parameter name -> transformers name, for every parameter `model` has (SigLIP or SigLIPClassifier)."""
    cfg = model.config
    mapping = {**TOP_NAMES,
               **tower_names("vision", "vision_model", VISION_NAMES, cfg.vision_config.num_hidden_layers),
               **tower_names("text", "text_model", TEXT_NAMES, cfg.text_config.num_hidden_layers)}
    ours = [name for name, _ in model.named_parameters()]
    unmapped = [name for name in ours if name not in mapping]
    assert not unmapped, f"name map is missing {unmapped}"  # a bug here, never the user's checkpoint
    return {name: mapping[name] for name in ours}


def read_config(folder):
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json in the model folder")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def weight_files(folder):
    """The safetensors files of a checkpoint: model.safetensors, or the shards its index names."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e!r})") from None
        return sorted({folder / f for f in weight_map.values()})
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json "
                            f"(only safetensors checkpoints are read)")


def read_tensors(files, wanted, device, dtype):
    """{transformers name: tensor on device in dtype} for the names in `wanted`, plus every name the files hold."""
    from safetensors import SafetensorError, safe_open

    tensors, present = {}, set()
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard named in the index is missing")
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                for name in f.keys():
                    present.add(name)
                    if name in wanted:  # one tensor at a time: never two full copies of the model
                        tensors[name] = f.get_tensor(name).to(dtype)
        except SafetensorError as e:
            raise ValueError(f"{path}: unreadable safetensors file ({e})") from None
    return tensors, present


def load_weights(model, folder, names, device, dtype):
    """Fill `model` (built on the meta device) from `folder`; one error lists every missing, extra, misshaped key."""
    files = weight_files(folder)
    expected = {theirs: ours for ours, theirs in names.items()}
    tensors, present = read_tensors(files, expected, device, dtype)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    # transformers drops the non-persistent position_ids buffers; older conversions may still hold them.
    unexpected = sorted(n for n in present - set(expected) if not n.endswith("embeddings.position_ids"))
    problems = [f"missing: {n}" for n in sorted(set(expected) - present)]
    problems += [f"unexpected: {n}" for n in unexpected]
    problems += [f"shape: {n} is {tuple(t.shape)} in the file, the config wants {shapes[expected[n]]}"
                 for n, t in tensors.items() if tuple(t.shape) != shapes[expected[n]]]
    if problems:
        raise ValueError(f"{folder}: checkpoint does not fit the config ({len(problems)} problems):\n  "
                         + "\n  ".join(problems))
    model.load_state_dict({expected[n]: t for n, t in tensors.items()}, strict=True, assign=True)
    return model.eval()


def write_checkpoint(model, folder, config, names):
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = next(model.parameters()).dtype
    (folder / "config.json").write_text(json.dumps({**config, "dtype": str(dtype).removeprefix("torch.")}, indent=2))
    tensors = {names[n]: p.detach().contiguous().cpu() for n, p in model.named_parameters()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
