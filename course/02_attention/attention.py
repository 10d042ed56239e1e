"""Assignment 2: multi-head attention and the encoder block, written out in torch.

Fill in every `raise NotImplementedError()`; the comment above each says what the piece does and the shapes it
takes. The classes keep the parameter names of siglip_min.py (q, k, v, o; fc1, fc2; ln1, attn, ln2, mlp), so the
grader loads real weights into them. Check your work with `python course/grade.py 02_attention FOLDER --public`.

Reference: Vaswani et al. 2017, "Attention Is All You Need", §3.2; the SigLIP encoder is transformers'
SiglipEncoderLayer (a pre-norm ViT block: LayerNorm before attention and before the MLP).
"""
import math

import torch
from torch import nn


def split_heads(x, num_heads):
    """(B, T, D) -> (B, H, T, Dh) with Dh = D / H: head h takes features h*Dh .. (h+1)*Dh - 1.

    ValueError naming D and H when D is not a multiple of H.
    """
    # Check the shape first, then view as (B, T, H, Dh) and move the head axis in front of the tokens.
    ### BEGIN SOLUTION
    B, T, D = x.shape
    if D % num_heads:
        raise ValueError(f"hidden size {D} is not a multiple of num_heads {num_heads}")
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, H, T, Dh)
    ### END SOLUTION


def merge_heads(x):
    """(B, H, T, Dh) -> (B, T, H * Dh): the inverse of split_heads."""
    # The inverse of split_heads; `reshape`, not `view`, since the transposed tensor is not contiguous.
    ### BEGIN SOLUTION
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, D)
    ### END SOLUTION


def attention_weights(q, k, keep=None):
    """softmax(q k^T / sqrt(Dh)) per head: (B, H, Tq, Dh), (B, H, Tk, Dh) -> (B, H, Tq, Tk).

    Row (b, h, i) holds how much query i attends to each key: it sums to 1 over the keys. keep (B, Tk) of bools,
    when given, masks the keys where it is False (their weight becomes 0) for every query.
    """
    # Scale the scores by 1/sqrt(Dh) before the softmax (why: §3.2.1 of the paper). Mask with
    # masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min), then softmax over the keys' axis.
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)  # (B, H, Tq, Tk)
    return scores.softmax(dim=-1)  # (B, H, Tq, Tk)
    ### END SOLUTION


class Attention(nn.Module):
    """Multi-head self-attention: q, k, v projections, attention per head, heads merged, output projection o.

    transformers SiglipAttention (its q_proj, k_proj, v_proj, out_proj are our q, k, v, o).
    """

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, keep=None):  # x (B, T, D), keep (B, T) or None
        # Use split_heads, attention_weights and merge_heads (the grader swaps in its own to test this part alone).
        ### BEGIN SOLUTION
        q = split_heads(self.q(x), self.num_heads)  # (B, H, T, Dh)
        k = split_heads(self.k(x), self.num_heads)  # (B, H, T, Dh)
        v = split_heads(self.v(x), self.num_heads)  # (B, H, T, Dh)
        y = attention_weights(q, k, keep) @ v  # (B, H, T, Dh)
        return self.o(merge_heads(y))  # (B, T, D)
        ### END SOLUTION


def gelu_tanh(x):
    """GELU, the tanh approximation SigLIP was trained with: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    # Write the formula out (F.gelu(x, approximate="tanh") gives the same: try both).
    ### BEGIN SOLUTION
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    ### END SOLUTION


class MLP(nn.Module):
    """fc1 (D -> I), GELU (tanh), fc2 (I -> D): transformers SiglipMLP."""

    def __init__(self, dim, intermediate):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, intermediate), nn.Linear(intermediate, dim)

    def forward(self, x):  # x (B, T, D)
        # Use gelu_tanh.
        ### BEGIN SOLUTION
        return self.fc2(gelu_tanh(self.fc1(x)))  # (B, T, D)
        ### END SOLUTION


class EncoderLayer(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)) (transformers SiglipEncoderLayer).

    eps is the config's layer_norm_eps: SigLIP's is 1e-6, not torch's default 1e-5.
    """

    def __init__(self, dim, num_heads, intermediate, eps=1e-6):
        super().__init__()
        # Four submodules, named ln1, attn, ln2, mlp (the names siglip_min.Block gives them).
        ### BEGIN SOLUTION
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, intermediate)
        ### END SOLUTION

    def forward(self, x, keep=None):  # x (B, T, D), keep (B, T) or None
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln1(x), keep)  # (B, T, D)
        return x + self.mlp(self.ln2(x))  # (B, T, D)
        ### END SOLUTION
