"""Assignment 2's tests: each part against siglip_min (checked against transformers by the repository's own tests).

A test is `test_<part>_<what>(student, reference)`; those between the HIDDEN TESTS markers run only at grading.
Parts are graded alone: a test of one part swaps the student's helpers of the other parts for the reference's.
"""
import math

import torch
import torch.nn.functional as F

import siglip_min as sm
from grading import check_close, check_shape, from_reference, loaded, matches, randn

MODULE = "attention.py"
PARTS = [("heads", 2), ("attention_weights", 3), ("attention", 2), ("mlp", 2), ("encoder_layer", 3)]


def random_keep(B, T, seed):
    """(B, T) bools, the first key always kept, about a third of the others masked."""
    keep = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) > 0.33
    keep[:, 0] = True
    return keep


def oracle_weights(q, k, keep=None):
    """siglip_min's eager attention applied to the identity: probs @ I = probs, (B, H, Tq, Tk)."""
    B, H, Tk = k.shape[0], k.shape[1], k.shape[2]
    identity = torch.eye(Tk).expand(B, H, Tk, Tk)
    return sm.attend(q, k, identity, None if keep is None else keep[:, None, None, :], "eager")


def seeded_linears(module, seed):
    """Every parameter of `module` drawn from N(0, 0.2^2) (LayerNorm weights around 1), reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2 + (1.0 if name.endswith(("ln1.weight", "ln2.weight")) else 0.0))
    return module


# heads ---------------------------------------------------------------------------------------------------------

def check_split(student, B, T, D, H, seed):
    x = randn(B, T, D, seed=seed)
    got = student.split_heads(x, H)
    check_shape(got, (B, H, T, D // H), f"split_heads of a ({B}, {T}, {D}) tensor into {H} heads")
    want = sm.split_heads(x, H)
    if not matches(got, want) and matches(got, x.view(B, T, D // H, H).permute(0, 3, 1, 2)):
        raise AssertionError("split_heads: head h must take the consecutive features h*Dh .. (h+1)*Dh - 1; yours "
                             "takes every H-th feature (view as (B, T, H, Dh), not (B, T, Dh, H))")
    check_close(got, want, f"split_heads into {H} heads")


def test_heads_split(student, reference):
    check_split(student, 2, 5, 12, 3, seed=0)


def test_heads_merge_inverts_split(student, reference):
    x = randn(2, 5, 12, seed=1)
    check_close(student.merge_heads(sm.split_heads(x, 4)), x, "merge_heads(split_heads(x, 4)) must give back x")


def test_heads_width_not_a_multiple(student, reference):
    try:
        student.split_heads(randn(1, 2, 10), 3)
    except ValueError as error:
        assert "10" in str(error) and "3" in str(error), \
            f"split_heads: the ValueError should name the width 10 and the 3 heads, it says {str(error)!r}"
        return
    raise AssertionError("split_heads(x of width 10, 3 heads) must raise ValueError: 10 is not a multiple of 3")


### BEGIN HIDDEN TESTS
def test_heads_other_shapes(student, reference):
    for B, T, D, H, seed in ((1, 1, 8, 1, 2), (3, 7, 16, 16, 3), (2, 4, 24, 6, 4)):
        check_split(student, B, T, D, H, seed)
        x = randn(B, H, T, D // H, seed=seed)
        check_close(student.merge_heads(x), sm.merge_heads(x), f"merge_heads of a {tuple(x.shape)} tensor")
### END HIDDEN TESTS


# attention_weights ---------------------------------------------------------------------------------------------

def check_weights(student, B, H, Tq, Tk, Dh, seed, keep=None, scale=1.0):
    q, k = randn(B, H, Tq, Dh, seed=seed, scale=scale), randn(B, H, Tk, Dh, seed=seed + 100, scale=scale)
    got = student.attention_weights(q, k, keep)
    check_shape(got, (B, H, Tq, Tk), f"attention_weights of q {tuple(q.shape)} and k {tuple(k.shape)}")
    want = oracle_weights(q, k, keep)
    if matches(got, want, atol=1e-6):
        return
    if matches(got, (q @ k.transpose(-1, -2) / math.sqrt(Dh)).softmax(dim=-2)):
        raise AssertionError("attention_weights: softmax over the wrong axis: it must normalise over the keys "
                             "(the last axis, dim=-1); yours normalises over the queries")
    if matches(got, oracle_weights(q * math.sqrt(Dh), k, keep)):
        raise AssertionError(f"attention_weights: the scores are not divided by sqrt(head_dim) = sqrt({Dh}) "
                             f"before the softmax")
    if matches(got, oracle_weights(q * math.sqrt(Dh) / Dh, k, keep)):
        raise AssertionError(f"attention_weights: the scores are divided by head_dim = {Dh}; divide by "
                             f"sqrt(head_dim) = {math.sqrt(Dh):.4g}")
    check_close(got, want, "attention_weights", atol=1e-6)


def test_attention_weights_match(student, reference):
    check_weights(student, B=2, H=2, Tq=5, Tk=5, Dh=4, seed=0)


def test_attention_weights_rows_sum_to_one(student, reference):
    q, k = randn(1, 2, 3, 8, seed=5), randn(1, 2, 6, 8, seed=6)
    sums = student.attention_weights(q, k).sum(-1)
    check_close(sums, torch.ones(1, 2, 3), "attention_weights summed over the keys (each query's weights "
                "must sum to 1; softmax over the wrong axis?)")


def test_attention_weights_mask(student, reference):
    keep = random_keep(2, 6, seed=7)
    got = student.attention_weights(randn(2, 3, 6, 4, seed=8), randn(2, 3, 6, 4, seed=9), keep)
    masked = got.detach()[~keep[:, None, None, :].expand_as(got)]
    assert masked.numel() and float(masked.abs().max()) == 0.0, \
        f"attention_weights: keys where keep is False must get weight 0 exactly; max weight there {float(masked.abs().max()):.3g}"
    check_weights(student, B=2, H=3, Tq=6, Tk=6, Dh=4, seed=8, keep=keep)


### BEGIN HIDDEN TESTS
def test_attention_weights_other_shapes(student, reference):
    check_weights(student, B=3, H=4, Tq=1, Tk=9, Dh=16, seed=10)  # one query, as the MAP head's probe
    check_weights(student, B=1, H=1, Tq=7, Tk=7, Dh=64, seed=11, keep=random_keep(1, 7, seed=12))


def test_attention_weights_large_scores(student, reference):
    """Scores near 100: a softmax that exponentiates without subtracting the maximum overflows in float32."""
    check_weights(student, B=2, H=2, Tq=4, Tk=4, Dh=8, seed=13, scale=6.0)
### END HIDDEN TESTS


# attention -----------------------------------------------------------------------------------------------------

def check_attention(student, reference, D, H, T, seed, keep=None):
    oracle = seeded_linears(sm.Attention(D, H, "eager"), seed)
    with from_reference(student, reference, "split_heads", "merge_heads", "attention_weights"):
        ours = loaded(student.Attention(D, H), oracle, "Attention")
        x = randn(2, T, D, seed=seed + 1)
        with torch.no_grad():
            got = ours(x, keep)
            want = oracle(x, None if keep is None else keep[:, None, None, :])
    check_close(got, want, f"Attention(dim={D}, num_heads={H}) output")


def test_attention_matches(student, reference):
    check_attention(student, reference, D=16, H=4, T=5, seed=20)


### BEGIN HIDDEN TESTS
def test_attention_masked_and_other_sizes(student, reference):
    check_attention(student, reference, D=24, H=3, T=7, seed=21, keep=random_keep(2, 7, seed=22))
    check_attention(student, reference, D=8, H=1, T=1, seed=23)
### END HIDDEN TESTS


# mlp -----------------------------------------------------------------------------------------------------------

def check_gelu(student, x):
    got = student.gelu_tanh(x)
    if matches(got, F.gelu(x), atol=1e-6, rtol=0):
        raise AssertionError("gelu_tanh: this is the exact (erf) GELU; SigLIP uses the tanh approximation "
                             "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))")
    check_close(got, F.gelu(x, approximate="tanh"), "gelu_tanh", atol=1e-6, rtol=1e-6)


def test_mlp_gelu_tanh(student, reference):
    check_gelu(student, torch.linspace(-6, 6, 241))


def check_mlp(student, D, I, seed):
    config = sm.SiglipVisionConfig(hidden_size=D, intermediate_size=I, num_attention_heads=1)
    oracle = seeded_linears(sm.MLP(config), seed)
    ours = loaded(student.MLP(D, I), oracle, "MLP")
    x = randn(2, 3, D, seed=seed + 1, scale=2.0)
    with torch.no_grad():
        check_close(ours(x), oracle(x), f"MLP(dim={D}, intermediate={I}) output")


def test_mlp_matches(student, reference):
    check_mlp(student, D=8, I=32, seed=30)


### BEGIN HIDDEN TESTS
def test_mlp_other_sizes(student, reference):
    check_gelu(student, randn(1000, seed=31, scale=4.0))
    check_mlp(student, D=16, I=24, seed=32)
### END HIDDEN TESTS


# encoder_layer -------------------------------------------------------------------------------------------------

def check_layer(student, reference, D, H, I, seed, keep=None, scale=1.0):
    config = sm.SiglipVisionConfig(hidden_size=D, intermediate_size=I, num_attention_heads=H)
    oracle = seeded_linears(sm.Block(config, "eager"), seed)
    with from_reference(student, reference, "Attention", "MLP"):
        ours = loaded(student.EncoderLayer(D, H, I, eps=config.layer_norm_eps), oracle, "EncoderLayer")
    x = randn(2, 6, D, seed=seed + 1, scale=scale)
    mask = None if keep is None else keep[:, None, None, :]
    with torch.no_grad():
        got, want = ours(x, keep), oracle(x, mask)
        for module in (oracle.ln1, oracle.ln2):
            module.eps = 1e-5
        torch_default = oracle(x, mask)
    if matches(got, torch_default) and not matches(got, want):
        raise AssertionError("EncoderLayer: your LayerNorms use eps 1e-5 (torch's default); SigLIP's is the "
                             "config's layer_norm_eps, 1e-6: pass eps to nn.LayerNorm")
    check_close(got, want, f"EncoderLayer(dim={D}, num_heads={H}) output")


def test_encoder_layer_matches(student, reference):
    # Small activations, as SigLIP's own embeddings are: there LayerNorm's eps changes the output.
    check_layer(student, reference, D=16, H=2, I=32, seed=40, scale=0.02)


def test_encoder_layer_mask(student, reference):
    check_layer(student, reference, D=16, H=4, I=32, seed=41, keep=random_keep(2, 6, seed=42))


### BEGIN HIDDEN TESTS
def test_encoder_layer_other_sizes(student, reference):
    check_layer(student, reference, D=24, H=3, I=48, seed=43, scale=0.01)
    check_layer(student, reference, D=8, H=1, I=8, seed=44, scale=3.0)
### END HIDDEN TESTS
