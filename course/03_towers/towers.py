"""Assignment 3: the MAP head and the two towers, and real weights loaded through a name map you write.

Fill in every `raise NotImplementedError()`; the comment above each says what the piece does. The classes keep the
parameter names of siglip_min.py, so the grader loads siglip_min's weights (random ones, and the trained
checkpoints/siglip-tiny-shapes/) into them. Check your work with `python course/grade.py 03_towers FOLDER --public`.

What assignment 2 built you may take from siglip_min: `Block(config, "sdpa")` is the pre-norm encoder block,
`split_heads`, `merge_heads` and `attend(q, k, v)` the multi-head attention pieces.

References
  [1] Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, arXiv:2303.15343: §4 (the towers).
  [2] Lee et al., "Set Transformer", ICML 2019, §3.2: pooling by multihead attention (PMA), the MAP head's origin.
  [3] transformers models/siglip/modeling_siglip.py: SiglipMultiheadAttentionPoolingHead, SiglipVisionEmbeddings,
      SiglipVisionTransformer, SiglipTextEmbeddings, SiglipTextTransformer, and the checkpoint names of SiglipModel.

Shapes: B batch, N image patches, L text tokens, D width, H heads, Dh = D / H, I MLP width, P projection size.
"""
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from siglip_min import Block, SiglipConfig, SiglipModel, attend, merge_heads, split_heads


class MLP(nn.Module):
    """fc1 (D -> I), tanh GELU, fc2 (I -> D): assignment 2's MLP, given (transformers SiglipMLP)."""

    def __init__(self, dim, intermediate):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, intermediate), nn.Linear(intermediate, dim)

    def forward(self, x):  # x (B, T, D)
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (B, T, D)


def encoder_blocks(config):
    """config.num_hidden_layers encoder blocks (siglip_min.Block, assignment 2's EncoderLayer), given."""
    return nn.ModuleList(Block(config, "sdpa") for _ in range(config.num_hidden_layers))


# map_head -------------------------------------------------------------------------------------------------------

class MAPHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over all N tokens, then a residual MLP ([1] §4, [2]).

    transformers SiglipMultiheadAttentionPoolingHead (big_vision MAPHead). Its nn.MultiheadAttention keeps the q, k
    and v projections packed in one Linear, `in_proj`, weight (3D, D) = [W_q; W_k; W_v]. There is no residual around
    the attention (the probe is not added back), only around the MLP:

        y = out_proj(attention(query = probe W_q, keys = x W_k, values = x W_v))    (B, 1, D)
        y = y + mlp(norm(y))                                                        (B, 1, D)
        return y[:, 0]                                                              (B, D)
    """

    def __init__(self, dim, num_heads, intermediate, eps=1e-6):
        super().__init__()
        self.num_heads = num_heads
        # Five members, siglip_min.MAPHead's names: probe, a Parameter (1, 1, D) (zeros: weights are loaded);
        # in_proj, nn.Linear(D, 3D); out_proj, nn.Linear(D, D); norm, nn.LayerNorm(D, eps=eps); mlp, MLP(D, I).
        ### BEGIN SOLUTION
        self.probe = nn.Parameter(torch.zeros(1, 1, dim))  # (1, 1, D)
        self.in_proj = nn.Linear(dim, 3 * dim)  # packed q|k|v
        self.out_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, intermediate)
        ### END SOLUTION

    def forward(self, x):  # x (B, N, D)
        # Cut in_proj's weight and bias into q, k, v parts (.chunk(3)) and apply each with F.linear: the query comes
        # from the probe (expanded to the batch), keys and values from the tokens. Then attend per head
        # (split_heads, attend, merge_heads), out_proj, the residual MLP, and return the one pooled token.
        ### BEGIN SOLUTION
        w_q, w_k, w_v = self.in_proj.weight.chunk(3)  # 3 x (D, D)
        b_q, b_k, b_v = self.in_proj.bias.chunk(3)  # 3 x (D,)
        probe = self.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
        q = split_heads(F.linear(probe, w_q, b_q), self.num_heads)  # (B, H, 1, Dh)
        k = split_heads(F.linear(x, w_k, b_k), self.num_heads)  # (B, H, N, Dh)
        v = split_heads(F.linear(x, w_v, b_v), self.num_heads)  # (B, H, N, Dh)
        y = self.out_proj(merge_heads(attend(q, k, v)))  # (B, 1, D)
        y = y + self.mlp(self.norm(y))  # (B, 1, D)
        return y[:, 0]  # (B, D)
        ### END SOLUTION


# vision_tower ---------------------------------------------------------------------------------------------------

class VisionEmbeddings(nn.Module):
    """Patchify with a Conv2d (kernel = stride = patch size), then add learned positions 0..N-1 ([1] §4: a ViT
    without a class token). transformers SiglipVisionEmbeddings."""

    def __init__(self, config):  # config: siglip_min.SiglipVisionConfig
        super().__init__()
        # Two members: patch, nn.Conv2d(num_channels, hidden_size, patch_size, stride=patch_size), and pos, a
        # Parameter of zeros (N, D) with N = (image_size // patch_size) ** 2.
        ### BEGIN SOLUTION
        grid = config.image_size // config.patch_size
        self.patch = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.pos = nn.Parameter(torch.zeros(grid * grid, config.hidden_size))  # (N, D)
        ### END SOLUTION

    def forward(self, pixel_values):  # pixel_values (B, C, S, S)
        # The conv gives (B, D, g, g); its patches, read row by row, are the tokens (B, N, D).
        ### BEGIN SOLUTION
        x = self.patch(pixel_values)  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), row-major over the patch grid
        return x + self.pos  # (B, N, D)
        ### END SOLUTION


class VisionTower(nn.Module):
    """Embeddings -> encoder blocks -> post LayerNorm -> MAP head: image features (B, D).

    transformers SiglipVisionTransformer (inside SiglipVisionModel); siglip_min.VisionTower.
    """

    def __init__(self, config):  # config: siglip_min.SiglipVisionConfig
        super().__init__()
        # Four members, siglip_min.VisionTower's names: embed (VisionEmbeddings), blocks (encoder_blocks(config)),
        # norm (LayerNorm with the config's layer_norm_eps) and head (your MAPHead, sized by the config).
        ### BEGIN SOLUTION
        self.embed = VisionEmbeddings(config)
        self.blocks = encoder_blocks(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = MAPHead(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                            config.layer_norm_eps)
        ### END SOLUTION

    def forward(self, pixel_values):  # pixel_values (B, C, S, S)
        ### BEGIN SOLUTION
        x = self.embed(pixel_values)  # (B, N, D)
        for block in self.blocks:
            x = block(x)  # (B, N, D)
        return self.head(self.norm(x))  # (B, D)
        ### END SOLUTION


# text_tower -----------------------------------------------------------------------------------------------------

class TextEmbeddings(nn.Module):
    """Token embeddings + learned position embeddings (transformers SiglipTextEmbeddings)."""

    def __init__(self, config):  # config: siglip_min.SiglipTextConfig
        super().__init__()
        # Two plain Parameters of zeros (not nn.Embedding, whose weight would be named token.weight): token
        # (vocab_size, D) and pos (max_position_embeddings, D).
        ### BEGIN SOLUTION
        self.token = nn.Parameter(torch.zeros(config.vocab_size, config.hidden_size))  # (V, D)
        self.pos = nn.Parameter(torch.zeros(config.max_position_embeddings, config.hidden_size))  # (Lmax, D)
        ### END SOLUTION

    def forward(self, input_ids):  # input_ids (B, L), L <= max_position_embeddings
        # F.embedding looks rows up in a table; positions 0..L-1 take the first L rows of pos.
        ### BEGIN SOLUTION
        return F.embedding(input_ids, self.token) + self.pos[: input_ids.shape[1]]  # (B, L, D)
        ### END SOLUTION


class TextTower(nn.Module):
    """Embeddings -> encoder blocks (no causal mask, no padding mask) -> final LayerNorm -> the token at the LAST
    position L-1 -> Linear head to P: text features (B, P).

    transformers SiglipTextTransformer (inside SiglipTextModel); siglip_min.TextTower. SigLIP pads every text to
    full length and reads its output at position L-1, which is padding for short texts: it was trained that way.
    """

    def __init__(self, config):  # config: siglip_min.SiglipTextConfig
        super().__init__()
        # Four members, siglip_min.TextTower's names: embed (TextEmbeddings), blocks (encoder_blocks(config)), norm
        # (LayerNorm with the config's layer_norm_eps), head (nn.Linear(hidden_size, projection_size)).
        ### BEGIN SOLUTION
        self.embed = TextEmbeddings(config)
        self.blocks = encoder_blocks(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.projection_size)
        ### END SOLUTION

    def forward(self, input_ids):  # input_ids (B, L)
        # Not CLIP: no class token, no pooling at the end-of-text token. Which position does SigLIP pool?
        ### BEGIN SOLUTION
        x = self.embed(input_ids)  # (B, L, D)
        for block in self.blocks:
            x = block(x)  # (B, L, D)
        x = self.norm(x)  # (B, L, D)
        return self.head(x[:, -1])  # (B, P): the last position
        ### END SOLUTION


# name_map -------------------------------------------------------------------------------------------------------

def siglip_min_name(hf_name):
    """siglip_min.SiglipModel's parameter name for a tensor name of a transformers SiglipModel checkpoint.

        vision_model.encoder.layers.3.self_attn.q_proj.weight  ->  vision.blocks.3.attn.q.weight
        vision_model.head.attention.in_proj_weight             ->  vision.head.in_proj.weight
        text_model.head.weight                                 ->  text.head.weight
        logit_scale                                            ->  logit_scale

    KeyError naming hf_name for a name that is no parameter of SiglipModel.
    """
    # Print the names of both sides (safe_open(...).keys() and SiglipModel(config).named_parameters()) and pair
    # them. Three kinds of name: the two top-level scalars; a block's, where only the tower, the layer number and
    # the part after it change (a regular expression takes the number whole: 1 and 10 are different layers); and
    # the rest of each tower (embeddings, final LayerNorms, heads), one table per tower.
    ### BEGIN SOLUTION
    if hf_name in ("logit_scale", "logit_bias"):
        return hf_name
    towers = {"vision_model": "vision", "text_model": "text"}
    blocks = {"layer_norm1": "ln1", "self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k",
              "self_attn.v_proj": "attn.v", "self_attn.out_proj": "attn.o", "layer_norm2": "ln2",
              "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    rest = {
        "vision": {
            "embeddings.patch_embedding.weight": "embed.patch.weight",
            "embeddings.patch_embedding.bias": "embed.patch.bias",
            "embeddings.position_embedding.weight": "embed.pos",
            "post_layernorm.weight": "norm.weight", "post_layernorm.bias": "norm.bias",
            "head.probe": "head.probe",
            "head.attention.in_proj_weight": "head.in_proj.weight",
            "head.attention.in_proj_bias": "head.in_proj.bias",
            "head.attention.out_proj.weight": "head.out_proj.weight",
            "head.attention.out_proj.bias": "head.out_proj.bias",
            "head.layernorm.weight": "head.norm.weight", "head.layernorm.bias": "head.norm.bias",
            **{f"head.mlp.{fc}.{p}": f"head.mlp.{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")},
        },
        "text": {
            "embeddings.token_embedding.weight": "embed.token",
            "embeddings.position_embedding.weight": "embed.pos",
            "final_layer_norm.weight": "norm.weight", "final_layer_norm.bias": "norm.bias",
            "head.weight": "head.weight", "head.bias": "head.bias",
        },
    }
    tower, _, inside = hf_name.partition(".")
    if tower in towers:
        ours = towers[tower]
        block = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", inside)
        if block and block.group(2) in blocks:
            layer, module, kind = block.groups()
            return f"{ours}.blocks.{int(layer)}.{blocks[module]}.{kind}"
        if inside in rest[ours]:
            return f"{ours}.{rest[ours][inside]}"
    raise KeyError(f"{hf_name!r} is no parameter of a SiglipModel")
    ### END SOLUTION


def load_checkpoint(folder):
    """siglip_min.SiglipModel(SiglipConfig.from_pretrained(folder)) with every parameter assigned from folder's
    model.safetensors through siglip_min_name, in eval mode; what SiglipModel.from_pretrained(folder) gives.

    An error naming the tensor for a tensor of the file that siglip_min_name cannot map, and one naming the
    parameters for parameters of the model that no tensor filled. (The shapes are checked by copy_.)
    """
    # safe_open(path, framework="pt") reads a .safetensors file one tensor at a time (.keys(), .get_tensor(name)).
    # Assign under torch.no_grad() with parameter.copy_(tensor); keep track of what you filled.
    ### BEGIN SOLUTION
    folder = Path(folder)
    model = SiglipModel(SiglipConfig.from_pretrained(folder))
    parameters = dict(model.named_parameters())
    filled = set()
    with safe_open(folder / "model.safetensors", framework="pt") as file, torch.no_grad():
        for name in file.keys():
            ours = siglip_min_name(name)
            if ours not in parameters:
                raise KeyError(f"{name} maps to {ours}, which SiglipModel has not")
            parameters[ours].copy_(file.get_tensor(name))
            filled.add(ours)
    unfilled = sorted(set(parameters) - filled)
    if unfilled:
        raise ValueError(f"{folder}: no tensor for the parameters {unfilled}")
    return model.eval()
    ### END SOLUTION
