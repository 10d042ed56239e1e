"""Measuring helpers for notebooks 01 and 02: kept out of the teaching cells so that those show only the model.

attention_per_block   every vision block's attention weights, computed from the model's own modules
mean_attention_distance, uniform_attention_distance   how far (in patches) a query looks, and a flat map's value
image_independent_share   how much of the attention pattern is the same for every image
PeakMemory            peak bytes of the tensors created inside a `with` block (works on CPU, deterministic)
"""
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import siglip_min as sm


@torch.no_grad()
def attention_per_block(model, pixel_values):
    """[(B, H, N, N)] per vision block: softmax(q k^T / sqrt(Dh)), the same numbers notebook 01 computes by hand."""
    vision, heads = model.vision, model.config.vision_config.num_attention_heads
    x = vision.embed(pixel_values)  # (B, N, D)
    maps = []
    for blk in vision.blocks:
        h = blk.ln1(x)
        q, k = sm.split_heads(blk.attn.q(h), heads), sm.split_heads(blk.attn.k(h), heads)  # (B, H, N, Dh)
        maps.append((q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1))  # (B, H, N, N)
        x = blk(x)
    return maps


def patch_distances(g):
    """(N, N) Euclidean distance, in patches, between the centres of patches i and j of a g x g grid (row-major)."""
    rows, cols = np.divmod(np.arange(g * g), g)
    return torch.tensor(np.hypot(rows[:, None] - rows[None], cols[:, None] - cols[None]), dtype=torch.float32)


def mean_attention_distance(weights, g):
    """Mean over images, heads and queries of sum_j w_ij * distance(i, j): how far a patch looks, in patches."""
    return (weights * patch_distances(g)).sum(-1).mean().item()


def uniform_attention_distance(g):
    """The same for attention spread evenly over all N patches."""
    return patch_distances(g).mean().item()


def image_independent_share(weights):
    """Fraction of the attention pattern (its deviation from uniform, summed over images) that the mean over images
    explains: sum ||mean - 1/N||^2 / sum ||w - 1/N||^2. 1: every image gets the same map; 0: nothing is shared."""
    flat = weights - 1 / weights.shape[-1]  # (B, H, N, N): deviation from a flat map
    shared = flat.mean(0, keepdim=True)  # (1, H, N, N): the part every image has
    return (shared.pow(2).sum() * weights.shape[0] / flat.pow(2).sum()).item()


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors created inside the `with` block and alive at the same time.

    A TorchDispatchMode sees every operation's outputs (the backward pass's too): each new storage adds its bytes
    while alive (a weakref finalizer subtracts them when it is freed). Views share memory and are skipped; tensors
    made before the block are not counted. The count is of bytes, not of time, so it is the same on every run.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:  # a view shares its base's memory
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    nbytes = t.untyped_storage().nbytes()
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self.freed, nbytes)
        return out

    def freed(self, nbytes):
        self.live -= nbytes


def peak_mib(fn, backward=False):
    """Peak MiB of fn() (a loss), and of its backward pass too if backward; fn's inputs are made before the count."""
    with torch.set_grad_enabled(backward), PeakMemory() as memory:
        loss = fn()
        if backward:
            loss.backward()
        del loss
    return memory.peak / 2 ** 20
