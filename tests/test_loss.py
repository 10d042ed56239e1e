"""Properties of the sigmoid loss ([1] §3.2) and its chunked form (§3.3), against independent computations.

The reference is the definition written out: binary cross-entropy of every (image i, text j) pair, label 1
when i == j and 0 otherwise, summed and divided by the batch size, in float64 NumPy with a double loop.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import siglip_min as sm
from oracle import hf_config, load_hf, save_random_siglip

quick = settings(max_examples=40, deadline=None)


def naive_loss(image_embeds, text_embeds, logit_scale, logit_bias):
    """sum over pairs of BCE(sigmoid(t * <x_i, y_j> + b), [i == j]) / B, one pair at a time, float64."""
    x, y = np.asarray(image_embeds, np.float64), np.asarray(text_embeds, np.float64)
    temperature, total = math.exp(logit_scale), 0.0
    for i in range(len(x)):
        for j in range(len(y)):
            logit = temperature * float(x[i] @ y[j]) + logit_bias
            # -log sigmoid(l) = log(1 + e^-l) for the positive, -log(1 - sigmoid(l)) = log(1 + e^l) for a negative
            total += np.logaddexp(0.0, -logit if i == j else logit)
    return total / len(x)


@st.composite
def batches(draw, max_batch=9, max_scale=math.log(100.0)):
    """Normalised float64 embeddings of B matching pairs, a log temperature and a bias."""
    batch, dim = draw(st.integers(1, max_batch)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    images = sm.l2_normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64))
    texts = sm.l2_normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64))
    scale = torch.tensor([draw(st.floats(-2.0, max_scale))], dtype=torch.float64)
    bias = torch.tensor([draw(st.floats(-15.0, 15.0))], dtype=torch.float64)
    return images, texts, scale, bias


@quick
@given(batches())
def test_equals_pairwise_binary_cross_entropy(batch):
    images, texts, scale, bias = batch
    got = sm.sigmoid_loss(images, texts, scale, bias).item()
    assert got == pytest.approx(naive_loss(images, texts, scale.item(), bias.item()), rel=1e-12, abs=1e-12)


@quick
@given(batches(max_batch=12), st.data())
def test_chunked_equals_full(batch, data):
    images, texts, scale, bias = batch
    num_chunks = data.draw(st.integers(1, len(images)), label="num_chunks")  # dividing B or not
    full = sm.sigmoid_loss(images, texts, scale, bias).item()
    assert sm.chunked_sigmoid_loss(images, texts, scale, bias, num_chunks).item() == pytest.approx(full, rel=1e-12)


@quick
@given(batches(), st.randoms(use_true_random=False))
def test_unchanged_when_pairs_are_permuted_together(batch, random):
    images, texts, scale, bias = batch
    order = list(range(len(images)))
    random.shuffle(order)
    permuted = sm.sigmoid_loss(images[order], texts[order], scale, bias).item()
    assert permuted == pytest.approx(sm.sigmoid_loss(images, texts, scale, bias).item(), rel=1e-12)


@settings(max_examples=10, deadline=None)
@given(batches(max_batch=5), st.sampled_from([None, 1, 2]))
def test_gradients_match_finite_differences(batch, num_chunks):
    inputs = tuple(t.clone().requires_grad_(True) for t in batch)
    if num_chunks is None:
        assert torch.autograd.gradcheck(sm.sigmoid_loss, inputs)
    else:
        chunks = min(num_chunks, len(batch[0]))
        assert torch.autograd.gradcheck(lambda *a: sm.chunked_sigmoid_loss(*a, chunks), inputs)


@settings(max_examples=25, deadline=None)
@given(batches(max_batch=6, max_scale=math.log(1e4)), st.floats(-1e4, 1e4))
def test_finite_for_huge_logits(batch, bias):
    """Logits up to 1e4 in magnitude: the loss and its gradients stay finite, and float32 keeps the value."""
    images, texts, scale, _ = batch
    scale = torch.tensor([math.log(1e4)], dtype=torch.float64)  # temperature 1e4: |t <x, y>| up to 1e4
    bias = torch.tensor([bias], dtype=torch.float64)
    args = [t.float().requires_grad_(True) for t in (images, texts, scale, bias)]
    loss = sm.sigmoid_loss(*args)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(a.grad).all() for a in args)
    want = naive_loss(images, texts, scale.item(), bias.item())
    assert loss.item() == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_from_scratch_init_is_the_papers():
    """[1] §3: t' = log 10, b = -10 (transformers initialises both to 0)."""
    model = sm.SiglipModel(sm.SiglipConfig.from_hf(hf_config().to_dict()))
    assert model.logit_scale.item() == pytest.approx(math.log(10.0))
    assert model.logit_bias.item() == -10.0


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    folder = save_random_siglip(tmp_path_factory.mktemp("loss"), hf_config())
    return load_hf(folder), sm.SiglipModel.from_pretrained(folder)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.floats(-1.0, 4.0), st.floats(-12.0, 5.0), st.integers(0, 2**31 - 1))
def test_forward_loss_equals_transformers(two_models, batch, scale, bias, seed):
    hf, ours = two_models
    with torch.no_grad():
        for model in (hf, ours):
            model.logit_scale.fill_(scale)
            model.logit_bias.fill_(bias)
        g = torch.Generator().manual_seed(seed)
        ids, pixels = torch.randint(0, 99, (batch, 16), generator=g), torch.randn(batch, 3, 32, 32, generator=g)
        want = hf(input_ids=ids, pixel_values=pixels, return_loss=True).loss.item()
        got = ours(ids, pixels, return_loss=True).loss.item()
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


@quick
@given(batches())
def test_softmax_loss_is_clips(batch):
    """sm.softmax_loss, CLIP's loss for comparison, against transformers CLIPModel's image_text_contrastive_loss on the same logits."""
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    images, texts, scale, _ = batch
    want = image_text_contrastive_loss(texts @ images.T * scale.exp())  # transformers takes logits_per_text
    assert sm.softmax_loss(images, texts, scale).item() == pytest.approx(want.item(), rel=1e-12, abs=1e-12)
