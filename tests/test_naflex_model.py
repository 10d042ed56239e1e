"""SigLIP 2 NaFlex models (model_type siglip2 / siglip2_vision_model) against transformers 5.24 (the oracle):
Siglip2Model, Siglip2VisionModel (with and without the MAP head) and Siglip2ForImageClassification, on
hypothesis-drawn small configs and on images drawn as uint8 arrays (1 x 1 and 2 x 17 up to a few hundred pixels,
aspect ratios 1:8 to 8:1), cut into patches by preprocess.Siglip2ImageProcessor with max_num_patches 16 to 1024,
in batches that mix sizes so that every image has its own grid and padding.

Every transformers model is perturbed before it is saved: transformers initialises biases to 0 and LayerNorms to 1,
which would hide a bias or LayerNorm mapped to the wrong place. Both sides always run the same attention
implementation (eager against eager, sdpa against sdpa).

What is compared, float32 CPU: features, embeddings and hidden states within FEATURES_ATOL, logits within
LOGITS_ATOL. Hidden states are compared on the real patches and, separately, on the padded ones: a padded patch
still gets outputs (nothing masks the queries), and ours are transformers' there too (zero pixels, position 0's
embedding of the resized grid, keys masked).
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import siglip_min as sm
from oracle import hf_config, max_abs, save_random_siglip
from preprocess import Siglip2ImageProcessor

FEATURES_ATOL = 1e-5  # float32 CPU features: the README's parity promise
LOGITS_ATOL = 1e-4
ATTN = ["eager", "sdpa"]
# The same examples on every run (derandomize): a random search once drew a width-8, one-head model where
# transformers' own float32 rounding alone comes near 1e-5 (test_widest_gap_seen_is_transformers_own_rounding), and
# CI must not pass or fail by the draw.
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.data_too_large])
PATCH_SIZES = [2, 4, 8, 14, 16]
NUM_PATCHES = [4, 9, 16, 64, 256]  # position grids 2x2 to 16x16
GELUS = ["gelu_pytorch_tanh", "gelu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: these models are tiny


# ----------------------------------------------------------------------------------------------------------------
# Strategies and helpers

@st.composite
def naflex_vision_kwargs(draw, use_head=None):
    """transformers.Siglip2VisionConfig kwargs: widths, heads, depths, patch sizes, position grids, eps, GELU, with
    and without the MAP head. Small widths keep 1024-patch sequences cheap, but not under 8: a LayerNorm over 4
    numbers amplifies float32 rounding, and on 1000-patch sequences last_hidden_state then moves by up to 1.6e-5
    between two float32 runs of the same math (transformers itself is 4e-5 from float64 there); at width 8 we measured
    at most 4.3e-6 (40 seeds, 1024 patches)."""
    heads = draw(st.integers(1, 3))
    return dict(num_attention_heads=heads, hidden_size=heads * draw(st.sampled_from([8, 12])),
                intermediate_size=draw(st.integers(4, 32)), num_hidden_layers=draw(st.integers(1, 2)),
                patch_size=draw(st.sampled_from(PATCH_SIZES)), num_patches=draw(st.sampled_from(NUM_PATCHES)),
                layer_norm_eps=draw(st.sampled_from([1e-6, 1e-5])), hidden_act=draw(st.sampled_from(GELUS)),
                vision_use_head=draw(st.booleans()) if use_head is None else use_head)


@st.composite
def text_kwargs(draw, projection_size):
    heads = draw(st.integers(1, 2))
    return dict(num_attention_heads=heads, hidden_size=heads * draw(st.sampled_from([4, 8])),
                intermediate_size=draw(st.integers(4, 32)), num_hidden_layers=draw(st.integers(1, 2)),
                vocab_size=draw(st.integers(3, 100)), max_position_embeddings=draw(st.integers(1, 12)),
                layer_norm_eps=draw(st.sampled_from([1e-6, 1e-5])), hidden_act=draw(st.sampled_from(GELUS)),
                projection_size=projection_size)


TINY = [(1, 1), (2, 17), (17, 2), (1, 9), (9, 1), (3, 3)]


@st.composite
def image_sizes(draw, max_side=300):
    """(height, width): one time in five a tiny one (1 x 1, 2 x 17, ...), else a side up to max_side and an aspect
    ratio from 1:8 to 8:1."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(TINY))
    height, ratio = draw(st.integers(1, max_side)), 2 ** draw(st.floats(-3, 3))
    return height, min(max_side, max(1, round(height * ratio)))


def picture(seed, height, width):
    """A uint8 RGB array (H, W, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def to_tensors(inputs):
    return tuple(torch.from_numpy(a) for a in inputs)  # pixel_values, pixel_attention_mask, spatial_shapes


def naflex_inputs(patch_size, sizes, max_num_patches, seed=0):
    """preprocess.Siglip2ImageProcessor's three arrays as tensors for pictures of `sizes`."""
    images = [picture(seed + i, h, w) for i, (h, w) in enumerate(sizes)]
    return to_tensors(Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=max_num_patches)(images))


def image_batch(data, patch_size, max_images=3):
    """NaflexInputs tensors for 1 to max_images pictures of mixed sizes, max_num_patches 16 to 1024, drawn from
    `data` (so a failure prints the sizes, not the tensors)."""
    sizes = data.draw(st.lists(image_sizes(), min_size=1, max_size=max_images), label="image sizes")
    max_num_patches = data.draw(st.integers(16, 1024), label="max_num_patches")
    return naflex_inputs(patch_size, sizes, max_num_patches, data.draw(st.integers(0, 2**31 - 1), label="seed"))


def ids_and_mask(t, seed, batch):
    g = torch.Generator().manual_seed(seed)
    length = int(torch.randint(1, t["max_position_embeddings"] + 1, (), generator=g))
    ids = torch.randint(0, t["vocab_size"], (batch, length), generator=g)
    mask = (torch.rand(batch, length, generator=g) < 0.6).long()
    mask[:, 0] = 1  # every text keeps a token, as a tokenizer's mask does
    return ids, mask


def perturb(model, seed):
    """Noise on every parameter: non-zero biases, LayerNorms away from 1, logit scale and bias away from 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(2.3)
            model.logit_bias.fill_(-4.7)
    return model


def siglip2_config(vision, text=None, id2label=None):
    """transformers.Siglip2Config; the text tower's projection is the vision width (a small default text tower)."""
    text = text or dict(vocab_size=20, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                        max_position_embeddings=4)
    config = transformers.Siglip2Config(text_config={**text, "projection_size": vision["hidden_size"]},
                                        vision_config=vision)
    if id2label is not None:
        config.id2label, config.label2id = id2label, {name: i for i, name in id2label.items()}
    return config


def save_hf(folder, model_class, config, seed=0):
    """A perturbed transformers `model_class` (Siglip2Model, Siglip2VisionModel, Siglip2ForImageClassification)
    saved with save_pretrained."""
    torch.manual_seed(seed)
    perturb(model_class(config), seed).save_pretrained(folder)
    return folder


def load_hf(folder, model_class, attn_implementation="eager", other_tower_too=False):
    """transformers' model, every tensor of the folder used (but the other tower's, when `other_tower_too`)."""
    model, info = model_class.from_pretrained(folder, attn_implementation=attn_implementation,
                                              output_loading_info=True)
    if other_tower_too:
        info["unexpected_keys"] = {k for k in info["unexpected_keys"] if not k.startswith(("text_model.", "logit_"))}
    assert loading_info_is_clean(info), info
    return model.eval()


def loading_info_is_clean(info):
    return not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def assert_close(errors):
    for name, error in errors.items():
        assert error <= (LOGITS_ATOL if name.startswith("logits") else FEATURES_ATOL), (name, errors)


def real_and_padded(want, got, mask):
    """Max abs errors of (B, N, D) tensors on the real patches and on the padded ones (0.0 when there are none)."""
    real, padded = mask.bool(), ~mask.bool()  # (B, N)
    return max_abs(want[real], got[real]), (max_abs(want[padded], got[padded]) if padded.any() else 0.0)


OBSERVED = {}  # the largest error seen per test and output, printed at the end with -s


def observe(test, errors):
    seen = OBSERVED.setdefault(test, {})
    for name, error in errors.items():
        seen[name] = max(seen.get(name, 0.0), error)


@pytest.fixture(scope="module", autouse=True)
def report_observed():
    yield
    for test, errors in OBSERVED.items():
        print(f"\n{test}: " + ", ".join(f"{name} {error:.2e}" for name, error in sorted(errors.items())))


# ----------------------------------------------------------------------------------------------------------------
# 1. Siglip2Model

@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_two_tower_model_matches_transformers(attn_implementation, data):
    vision = data.draw(naflex_vision_kwargs(use_head=True), label="vision config")
    text = data.draw(text_kwargs(vision["hidden_size"]), label="text config")
    seed = data.draw(st.integers(0, 1000), label="seed")
    pixel_values, mask, shapes = image_batch(data, vision["patch_size"])
    ids, text_mask = ids_and_mask(text, seed, batch=data.draw(st.integers(1, 3)))
    with tempfile.TemporaryDirectory() as folder:
        save_hf(folder, transformers.Siglip2Model, siglip2_config(vision, text), seed)
        hf = load_hf(folder, transformers.Siglip2Model, attn_implementation)
        ours = sm.SiglipModel.from_pretrained(folder, attn_implementation=attn_implementation)
        dispatched = sm.from_pretrained(folder, attn_implementation=attn_implementation)
    assert type(dispatched) is sm.SiglipModel and ours.config.vision_config.num_patches == vision["num_patches"]
    with torch.no_grad():
        want_image = hf.get_image_features(pixel_values=pixel_values, pixel_attention_mask=mask,
                                           spatial_shapes=shapes).pooler_output
        got_image = ours.get_image_features(pixel_values, mask, shapes)  # positional
        assert torch.equal(got_image, ours.get_image_features(pixel_values=pixel_values, pixel_attention_mask=mask,
                                                              spatial_shapes=shapes))
        assert torch.equal(got_image, dispatched.get_image_features(pixel_values, mask, shapes))
        want = hf(input_ids=ids, pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes,
                  attention_mask=text_mask, return_loss=len(ids) == len(pixel_values))
        got = ours(input_ids=ids, pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes,
                   attention_mask=text_mask, return_loss=len(ids) == len(pixel_values))
        errors = {
            "image_features": max_abs(want_image, got_image),
            "text_features": max_abs(hf.get_text_features(input_ids=ids).pooler_output, ours.get_text_features(ids)),
            "text_features_masked": max_abs(hf.get_text_features(input_ids=ids, attention_mask=text_mask).pooler_output,
                                            ours.get_text_features(ids, text_mask)),
            "image_embeds": max_abs(want.image_embeds, got.image_embeds),
            "text_embeds": max_abs(want.text_embeds, got.text_embeds),
            "logits_per_image": max_abs(want.logits_per_image, got.logits_per_image),
            "logits_per_text": max_abs(want.logits_per_text, got.logits_per_text),
        }
        assert got.logits_per_image.shape == (len(pixel_values), len(ids))
        if want.loss is not None:
            errors["loss"] = abs(want.loss.item() - got.loss.item()) / max(1.0, abs(want.loss.item()))
    observe(f"two_tower[{attn_implementation}]", errors)
    assert_close(errors)


def test_transformers_processor_output_end_to_end(tmp_path):
    """What a user of transformers feeds the model (Siglip2ImageProcessorPil's tensors) gives the same features in
    ours; the processor is compared with ours bit for bit in test_naflex_inputs.py."""
    vision = dict(hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                  num_patches=16)
    save_hf(tmp_path, transformers.Siglip2Model, siglip2_config(vision), seed=5)
    images = [picture(i, h, w) for i, (h, w) in enumerate([(1, 1), (2, 17), (240, 31), (64, 200)])]
    processor = transformers.Siglip2ImageProcessorPil(patch_size=8, max_num_patches=100)
    inputs = processor([Image.fromarray(a) for a in images], return_tensors="pt", do_convert_rgb=True)
    ours_inputs = naflex_inputs(8, [a.shape[:2] for a in images], 100)
    for theirs, mine in zip((inputs["pixel_values"], inputs["pixel_attention_mask"], inputs["spatial_shapes"]),
                            ours_inputs):
        assert torch.equal(theirs, mine)
    hf = load_hf(tmp_path, transformers.Siglip2Model)
    with torch.no_grad():
        want = hf.get_image_features(**inputs).pooler_output
        got = sm.from_pretrained(tmp_path, attn_implementation="eager").get_image_features(**inputs)
    assert max_abs(want, got) <= FEATURES_ATOL


# ----------------------------------------------------------------------------------------------------------------
# 2. Siglip2VisionModel, with and without the MAP head

def vision_outputs(hf, ours, pixel_values, mask, shapes):
    """(transformers' output with hidden states, our (last_hidden_state, hidden_states))."""
    with torch.no_grad():
        want = hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes,
                  output_hidden_states=True)
        got_last, got_states = ours(pixel_values, mask, shapes, output_hidden_states=True)
    assert len(got_states) == len(want.hidden_states) == hf.config.num_hidden_layers + 1
    return want, (got_last, got_states)


def vision_errors(want, got, mask, which):
    """Max abs error of last_hidden_state and every hidden state on the real (which=0) or padded (which=1) patches."""
    got_last, got_states = got
    errors = {"last_hidden_state": real_and_padded(want.last_hidden_state, got_last, mask)[which]}
    errors.update({f"hidden_states[{i}]": real_and_padded(w, g, mask)[which]
                   for i, (w, g) in enumerate(zip(want.hidden_states, got_states))})
    return errors


def saved_vision_models(data, attn_implementation):
    """(transformers' Siglip2VisionModel, ours, inputs) from a config drawn from `data`, saved by transformers."""
    kwargs = data.draw(naflex_vision_kwargs(), label="config")
    seed = data.draw(st.integers(0, 1000), label="seed")
    inputs = image_batch(data, kwargs["patch_size"])
    with tempfile.TemporaryDirectory() as folder:
        save_hf(folder, transformers.Siglip2VisionModel, transformers.Siglip2VisionConfig(**kwargs), seed)
        assert json.loads((Path(folder) / "config.json").read_text())["model_type"] == "siglip2_vision_model"
        hf = load_hf(folder, transformers.Siglip2VisionModel, attn_implementation)
        ours = sm.SiglipVisionModel.from_pretrained(folder, attn_implementation=attn_implementation)
        dispatched = sm.from_pretrained(folder, attn_implementation=attn_implementation)
    assert type(dispatched) is sm.SiglipVisionModel
    assert ours.config.num_patches == kwargs["num_patches"] and ours.config.vision_use_head == kwargs["vision_use_head"]
    with torch.no_grad():
        assert torch.equal(dispatched(*inputs), ours(*inputs))
    return hf, ours, inputs


@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_vision_model_matches_transformers_on_real_patches(attn_implementation, data):
    hf, ours, (pixel_values, mask, shapes) = saved_vision_models(data, attn_implementation)
    want, got = vision_outputs(hf, ours, pixel_values, mask, shapes)
    errors = vision_errors(want, got, mask, which=0)
    with torch.no_grad():
        errors["plain_call"] = real_and_padded(want.last_hidden_state, ours(pixel_values, mask, shapes), mask)[0]
        keywords = ours(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes)
        assert torch.equal(keywords, got[0])
        if hf.config.vision_use_head:
            errors["pooler_output"] = max_abs(want.pooler_output, ours.get_image_features(pixel_values, mask, shapes))
        else:
            assert want.pooler_output is None
            with pytest.raises(sm.InputError, match="vision_use_head"):
                ours.get_image_features(pixel_values, mask, shapes)
    observe(f"vision_real[{attn_implementation}]", errors)
    assert_close(errors)


def test_widest_gap_seen_is_transformers_own_rounding(tmp_path):
    """The one example a random search found over 1e-5 (last_hidden_state 1.1e-05 with sdpa, 2026-11-28): a width-8,
    one-head, two-layer model, eps 1e-5, values up to 2.9. Against the same model computed in float64, ours is within
    3.4e-06 and transformers' sdpa within 9.4e-06: the gap is float32 rounding, mostly transformers'. Asserted, so a
    real regression on this example still fails."""
    config = dict(num_attention_heads=1, hidden_size=8, intermediate_size=11, num_hidden_layers=2, patch_size=2,
                  num_patches=9, layer_norm_eps=1e-05, hidden_act="gelu_pytorch_tanh", vision_use_head=False)
    pixel_values, mask, shapes = naflex_inputs(2, [(124, 124)], 196, 20402)
    save_hf(tmp_path, transformers.Siglip2VisionModel, transformers.Siglip2VisionConfig(**config), 129)
    hf = load_hf(tmp_path, transformers.Siglip2VisionModel, "sdpa")
    ours = sm.SiglipVisionModel.from_pretrained(tmp_path, attn_implementation="sdpa")
    exact = sm.SiglipVisionModel.from_pretrained(tmp_path, attn_implementation="eager").double()
    real = mask.bool()
    with torch.no_grad():
        truth = exact(pixel_values.double(), mask, shapes)[real]
        theirs = hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes).last_hidden_state[real]
        mine = ours(pixel_values, mask, shapes)[real]
    ours_error, their_error = max_abs(mine.double(), truth), max_abs(theirs.double(), truth)
    assert ours_error <= FEATURES_ATOL and ours_error < their_error, (ours_error, their_error)


@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=10, **SETTINGS)
@given(data=st.data())
def test_padded_patches_match_transformers_too(attn_implementation, data):
    """The padded positions' outputs are unused, but they match transformers as well: a padded patch's pixels are
    zeros, its position embedding is position 0's of the resized grid (as transformers gives it), and it attends to
    the real patches only. Asserted, so a change in what padding holds is seen."""
    hf, ours, (pixel_values, mask, shapes) = saved_vision_models(data, attn_implementation)
    want, got = vision_outputs(hf, ours, pixel_values, mask, shapes)
    errors = vision_errors(want, got, mask, which=1)
    observe(f"vision_padded[{attn_implementation}]", errors)
    assert_close(errors)


def test_padded_patches_take_position_zero_of_the_resized_grid():
    """Every padded patch's embedding (hidden_states[0]) is patch_embedding(zeros) + the image's resized position 0,
    in ours as in transformers; and these inputs really have padding (drawn ones may have little)."""
    kwargs = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, patch_size=4,
                  num_patches=16)
    with tempfile.TemporaryDirectory() as folder:
        save_hf(folder, transformers.Siglip2VisionModel, transformers.Siglip2VisionConfig(**kwargs), seed=1)
        hf = load_hf(folder, transformers.Siglip2VisionModel)
        ours = sm.SiglipVisionModel.from_pretrained(folder, attn_implementation="eager")
    pixel_values, mask, shapes = naflex_inputs(4, [(9, 40), (40, 9), (1, 1)], 40)
    assert (mask.sum(dim=1) < 40).all()
    want, (_, states) = vision_outputs(hf, ours, pixel_values, mask, shapes)
    patch = ours.vision.embed.patch
    with torch.no_grad():
        for b, real in enumerate(mask.sum(dim=1).tolist()):
            position_0 = states[0][b, 0] - patch(pixel_values[b, 0])  # (D,): the resized grid's first entry
            assert torch.allclose(states[0][b, real:], (patch.bias + position_0).expand(40 - real, -1), atol=1e-6)
    assert real_and_padded(want.hidden_states[0], states[0], mask)[1] <= FEATURES_ATOL


# ----------------------------------------------------------------------------------------------------------------
# 3. Siglip2ForImageClassification

@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=15, **SETTINGS)
@given(data=st.data())
def test_classifier_matches_transformers(attn_implementation, data):
    """Logits of the mean over the real patches' last_hidden_state (the padding excluded, as transformers)."""
    vision = data.draw(naflex_vision_kwargs(), label="vision config")
    labels = {i: f"class {i}" for i in range(data.draw(st.integers(1, 5), label="classes"))}
    seed = data.draw(st.integers(0, 1000), label="seed")
    pixel_values, mask, shapes = image_batch(data, vision["patch_size"])
    with tempfile.TemporaryDirectory() as folder:
        save_hf(folder, transformers.Siglip2ForImageClassification, siglip2_config(vision, id2label=labels), seed)
        hf = load_hf(folder, transformers.Siglip2ForImageClassification, attn_implementation)
        ours = sm.SiglipClassifier.from_pretrained(folder, attn_implementation=attn_implementation)
        dispatched = sm.from_pretrained(folder, attn_implementation=attn_implementation)
    assert type(dispatched) is sm.SiglipClassifier and ours.id2label == labels
    with torch.no_grad():
        want = hf(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes).logits
        got = ours(pixel_values, mask, shapes)
        assert got.shape == (len(pixel_values), len(labels))
        assert torch.equal(got, ours(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes))
        assert torch.equal(got, dispatched(pixel_values, mask, shapes))
    errors = {"classifier_logits": max_abs(want, got)}  # logits of a mean of features: held to FEATURES_ATOL
    observe(f"classifier[{attn_implementation}]", errors)
    assert errors["classifier_logits"] <= FEATURES_ATOL, errors


@pytest.mark.parametrize("hf_class", [transformers.Siglip2ForImageClassification,
                                      transformers.SiglipForImageClassification])
def test_classifier_made_from_a_vision_config_alone_loads(tmp_path, hf_class):
    """A classifier has no text tower, so its config.json's text_config is whatever the config class defaulted it
    to when the classifier was made from a vision config alone (hidden_size 768, projection_size 768, whatever the
    vision width). transformers loads such a folder; ours must too, and give the same logits."""
    naflex = hf_class is transformers.Siglip2ForImageClassification
    vision = dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, patch_size=4)
    config_class = transformers.Siglip2Config if naflex else transformers.SiglipConfig
    config = config_class(vision_config={**vision, **({"num_patches": 16} if naflex else {"image_size": 16})})
    assert config.text_config.projection_size != vision["hidden_size"]  # the default text tower: 768
    save_hf(tmp_path, hf_class, config, seed=4)
    hf = load_hf(tmp_path, hf_class)
    ours = sm.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(ours) is sm.SiglipClassifier
    inputs = naflex_inputs(4, [(20, 9), (1, 1)], 30) if naflex else (torch.randn(2, 3, 16, 16),)
    names = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
    with torch.no_grad():
        assert max_abs(hf(**dict(zip(names, inputs))).logits, ours(*inputs)) <= FEATURES_ATOL


# ----------------------------------------------------------------------------------------------------------------
# 4. Reduced precision on CPU

SMALL_VISION = dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
                    num_patches=64)
SMALL_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=16)
MIXED_SIZES = [(1, 1), (2, 17), (120, 31), (64, 200), (300, 300)]


@pytest.fixture(scope="module")
def naflex_folder(tmp_path_factory):
    """A perturbed transformers Siglip2Model, 2 layers a tower."""
    return save_hf(tmp_path_factory.mktemp("naflex"), transformers.Siglip2Model,
                   siglip2_config(SMALL_VISION, SMALL_TEXT), seed=7)


@pytest.fixture(scope="module")
def naflex_classifier_folder(tmp_path_factory):
    """A perturbed transformers Siglip2ForImageClassification on SMALL_VISION, two classes."""
    return save_hf(tmp_path_factory.mktemp("classifier"), transformers.Siglip2ForImageClassification,
                   siglip2_config(SMALL_VISION, id2label={0: "a", 1: "b"}), seed=3)


# Bounds as in test_model.py: units of the format's unit roundoff u (2^-8 bfloat16, 2^-11 float16), relative to the
# largest feature. 8u fails when something runs at lower precision than it should or a real bug moves features by
# 1e-2 and more.
@pytest.mark.parametrize("dtype, unit_roundoff", [(torch.bfloat16, 2**-8), (torch.float16, 2**-11)])
@pytest.mark.parametrize("attn_implementation", ATTN)
def test_reduced_precision_on_cpu(naflex_folder, dtype, unit_roundoff, attn_implementation):
    pixel_values, mask, shapes = naflex_inputs(8, MIXED_SIZES, 200)
    ids = torch.randint(0, 99, (3, 16), generator=torch.Generator().manual_seed(0))
    reference = sm.SiglipModel.from_pretrained(naflex_folder, attn_implementation=attn_implementation)
    low = sm.SiglipModel.from_pretrained(naflex_folder, dtype=dtype, attn_implementation=attn_implementation)
    assert all(p.dtype == dtype for p in low.parameters())
    errors = {}
    with torch.no_grad():
        for name, want, got in [("image", reference.get_image_features(pixel_values, mask, shapes),
                                 low.get_image_features(pixel_values, mask, shapes)),
                                ("text", reference.get_text_features(ids), low.get_text_features(ids))]:
            assert got.dtype == dtype
            errors[name] = max_abs(want, got) / want.abs().max().item() / unit_roundoff
    observe(f"reduced_precision_in_u[{str(dtype)[6:]},{attn_implementation}]", errors)
    assert max(errors.values()) <= 8, errors


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_naflex_model_runs_on_cpu(naflex_folder, naflex_classifier_folder, dtype):
    """CPU has no antialiased resize in half precision (torch 2.13: NotImplementedError "compute_index_ranges_weights"
    not implemented for 'BFloat16' / 'Half'); the position grid is resized in float32 and cast, as transformers does,
    so a bfloat16 (or float16) NaFlex model runs: every kind, every output finite and in its dtype, and its embeddings
    (hidden_states[0]) those of transformers in the same dtype, within one rounding."""
    pixel_values, mask, shapes = naflex_inputs(8, MIXED_SIZES, 64)
    model = sm.SiglipModel.from_pretrained(naflex_folder, dtype=dtype)
    vision = sm.SiglipVisionModel.from_pretrained(naflex_folder, dtype=dtype)
    classifier = sm.from_pretrained(naflex_classifier_folder, dtype=dtype)
    hf = transformers.Siglip2VisionModel.from_pretrained(naflex_folder, dtype=dtype, attn_implementation="eager")
    with torch.no_grad():
        features = model.get_image_features(pixel_values, mask, shapes)
        last, states = vision(pixel_values, mask, shapes, output_hidden_states=True)
        out = model(input_ids=torch.ones(2, 16, dtype=torch.long), pixel_values=pixel_values,
                    pixel_attention_mask=mask, spatial_shapes=shapes)
        logits = classifier(pixel_values, mask, shapes)
        want = hf.eval()(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes,
                         output_hidden_states=True).hidden_states[0]
    for x in (features, last, *states, out.logits_per_image, out.image_embeds, logits):
        assert x.dtype == dtype and torch.isfinite(x).all()
    assert features.shape == (len(MIXED_SIZES), SMALL_VISION["hidden_size"])
    # the same half-precision patch embedding plus the same float32 resize, cast: at most a rounding apart
    error = max_abs(want, states[0]) / want.abs().max().item()
    observe(f"half_precision_embeddings_vs_transformers[{str(dtype)[6:]}]", {"relative": error})
    assert error <= {torch.bfloat16: 2**-8, torch.float16: 2**-11}[dtype]


# ----------------------------------------------------------------------------------------------------------------
# 5. save_pretrained round trips through transformers

def hf_config_json(folder):
    return json.loads((Path(folder) / "config.json").read_text())


CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "patch_size", "num_patches", "layer_norm_eps", "hidden_act", "vision_use_head")


@pytest.mark.parametrize("kind", ["Siglip2Model", "Siglip2VisionModel", "Siglip2VisionModel-no-head",
                                  "Siglip2VisionModel-of-two-towers", "Siglip2ForImageClassification"])
def test_save_pretrained_round_trips_through_transformers(tmp_path, kind):
    vision = dict(hidden_size=12, intermediate_size=20, num_hidden_layers=2, num_attention_heads=3, patch_size=4,
                  num_patches=9, layer_norm_eps=1e-5, hidden_act="gelu", vision_use_head=not kind.endswith("no-head"))
    labels = {0: "cat", 1: "dog", 2: "shape"}
    original, saved = tmp_path / "original", tmp_path / "saved"
    hf_class = getattr(transformers, kind.split("-")[0])
    if kind == "Siglip2ForImageClassification":
        save_hf(original, hf_class, siglip2_config(vision, id2label=labels), seed=2)
    elif kind.startswith("Siglip2VisionModel") and not kind.endswith("two-towers"):
        save_hf(original, hf_class, transformers.Siglip2VisionConfig(**vision), seed=2)
    else:
        save_hf(original, transformers.Siglip2Model, siglip2_config(vision), seed=2)
    ours_class = {"Siglip2Model": sm.SiglipModel, "Siglip2VisionModel": sm.SiglipVisionModel,
                  "Siglip2ForImageClassification": sm.SiglipClassifier}[hf_class.__name__]
    ours = ours_class.from_pretrained(original)
    ours.save_pretrained(saved)

    config = hf_config_json(saved)
    model_type = "siglip2_vision_model" if hf_class is transformers.Siglip2VisionModel else "siglip2"
    assert config["model_type"] == model_type and config["architectures"] == [hf_class.__name__]
    if not kind.endswith("two-towers"):  # as transformers wrote the original
        assert (config["model_type"], config["architectures"]) == (hf_config_json(original)["model_type"],
                                                                   hf_config_json(original)["architectures"])
    again = load_hf(saved, hf_class)
    before = load_hf(original, hf_class, other_tower_too=kind.endswith("two-towers"))
    vision_config = again.config if model_type == "siglip2_vision_model" else again.config.vision_config
    assert {k: getattr(vision_config, k) for k in CONFIG_KEYS} == {k: vision[k] for k in CONFIG_KEYS if k in vision} | {
        "num_channels": 3}
    if kind == "Siglip2ForImageClassification":
        assert again.config.id2label == labels
    pixel_values, mask, shapes = naflex_inputs(4, [(30, 7), (1, 1), (50, 50)], 40)
    inputs = dict(pixel_values=pixel_values, pixel_attention_mask=mask, spatial_shapes=shapes)
    with torch.no_grad():
        if hf_class is transformers.Siglip2Model:
            ids = torch.randint(0, 20, (2, 4), generator=torch.Generator().manual_seed(0))
            want, got = before(input_ids=ids, **inputs), again(input_ids=ids, **inputs)
            assert torch.equal(want.logits_per_image, got.logits_per_image)
            assert torch.equal(want.image_embeds, got.image_embeds)
        elif hf_class is transformers.Siglip2VisionModel:
            want, got = before(**inputs), again(**inputs)
            assert torch.equal(want.last_hidden_state, got.last_hidden_state)
            assert (want.pooler_output is None) == (not vision["vision_use_head"])
            if vision["vision_use_head"]:
                assert torch.equal(want.pooler_output, got.pooler_output)
        else:
            assert torch.equal(before(**inputs).logits, again(**inputs).logits)
        reloaded = sm.from_pretrained(saved)  # and ours reads its own file back as the same model
        assert type(reloaded) is ours_class
        for name, p in ours.named_parameters():
            assert torch.equal(p, reloaded.get_parameter(name)), name


# ----------------------------------------------------------------------------------------------------------------
# 6. Bad input: an InputError naming the thing

@pytest.fixture(scope="module")
def naflex_models(naflex_folder, naflex_classifier_folder):
    """Ours, each kind, NaFlex: the two-tower model, its vision tower, a classifier."""
    return {"two_tower": sm.SiglipModel.from_pretrained(naflex_folder),
            "vision": sm.SiglipVisionModel.from_pretrained(naflex_folder),
            "classifier": sm.SiglipClassifier.from_pretrained(naflex_classifier_folder)}


def callers(models):
    """Every public way to feed images to a NaFlex model, each taking (pixel_values, mask, shapes)."""
    two_tower, vision, classifier = models["two_tower"], models["vision"], models["classifier"]
    ids = torch.ones(1, 4, dtype=torch.long)
    return {
        "get_image_features": lambda *a: two_tower.get_image_features(*a),
        "forward": lambda p, m, s: two_tower(input_ids=ids, pixel_values=p, pixel_attention_mask=m, spatial_shapes=s),
        "vision_call": lambda *a: vision(*a),
        "vision_hidden_states": lambda *a: vision(*a, output_hidden_states=True),
        "vision_features": lambda *a: vision.get_image_features(*a),
        "classifier": lambda *a: classifier(*a),
    }


CALLERS = ["get_image_features", "forward", "vision_call", "vision_hidden_states", "vision_features", "classifier"]


def good_inputs():
    return naflex_inputs(8, [(40, 10), (3, 3)], 20)


def bad_inputs(case):
    """(pixel_values, pixel_attention_mask, spatial_shapes, the words the error must hold)."""
    p, m, s = good_inputs()  # (2, 20, 192), (2, 20), (2, 2)
    return {
        "no_mask": (p, None, s, "pixel_attention_mask"),
        "no_shapes": (p, m, None, "spatial_shapes"),
        "neither": (p, None, None, "pixel_attention_mask"),
        "mask_too_long": (p, torch.ones(2, 21, dtype=torch.int32), s, "pixel_attention_mask"),
        "mask_one_image": (p, m[:1], s, "pixel_attention_mask"),
        "mask_3d": (p, m[:, :, None], s, "pixel_attention_mask"),
        "shapes_three_numbers": (p, m, torch.ones(2, 3, dtype=torch.long), "spatial_shapes"),
        "shapes_one_image": (p, m, s[:1], "spatial_shapes"),
        "shapes_flat": (p, m, s.flatten(), "spatial_shapes"),
        "shapes_over_the_patches": (p, m, torch.tensor([[4, 5], [5, 5]]), "spatial_shapes"),
        "shapes_zero": (p, m, torch.tensor([[0, 3], [1, 1]]), "spatial_shapes"),
        "shapes_negative": (p, m, torch.tensor([[2, 2], [-1, -3]]), "spatial_shapes"),
        "whole_images": (torch.zeros(2, 3, 32, 32), m, s, "pixel_values"),
        "whole_images_alone": (torch.zeros(2, 3, 32, 32), None, None, "pixel_values"),
        "other_patch_size": (torch.zeros(2, 20, 3 * 16 * 16), m, s, "pixel_values"),
        "unbatched": (p[0], m[0], s[0], "pixel_values"),
        "numpy": (p.numpy(), m, s, "pixel_values"),
    }[case]


BAD_CASES = ["no_mask", "no_shapes", "neither", "mask_too_long", "mask_one_image", "mask_3d", "shapes_three_numbers",
             "shapes_one_image", "shapes_flat", "shapes_over_the_patches", "shapes_zero", "shapes_negative",
             "whole_images", "whole_images_alone", "other_patch_size", "unbatched", "numpy"]


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("caller", CALLERS)
def test_bad_naflex_input_is_named(naflex_models, caller, case):
    *inputs, says = bad_inputs(case)
    with torch.no_grad(), pytest.raises(sm.InputError, match=says):
        callers(naflex_models)[caller](*inputs)


@pytest.mark.parametrize("caller", CALLERS)
def test_good_naflex_input_runs(naflex_models, caller):
    """The bad cases above start from these inputs, which every caller takes."""
    with torch.no_grad():
        callers(naflex_models)[caller](*good_inputs())


@pytest.mark.parametrize("caller", ["get_image_features", "forward", "vision_call", "classifier"])
def test_interpolate_pos_encoding_is_refused_by_naflex(naflex_models, caller):
    p, m, s = good_inputs()
    two_tower, vision, classifier = naflex_models["two_tower"], naflex_models["vision"], naflex_models["classifier"]
    call = {"get_image_features": lambda: two_tower.get_image_features(p, m, s, interpolate_pos_encoding=True),
            "forward": lambda: two_tower(torch.ones(1, 4, dtype=torch.long), p, interpolate_pos_encoding=True,
                                         pixel_attention_mask=m, spatial_shapes=s),
            "vision_call": lambda: vision(p, m, s, interpolate_pos_encoding=True),
            "classifier": lambda: classifier(p, m, s, interpolate_pos_encoding=True)}[caller]
    with torch.no_grad(), pytest.raises(sm.InputError, match="interpolate_pos_encoding"):
        call()


@pytest.fixture(scope="module")
def fixed_resolution_models(tmp_path_factory):
    """A SigLIP 1 (fixed resolution, 32 x 32, patch 8) two-tower model and its vision tower."""
    folder = save_random_siglip(tmp_path_factory.mktemp("fixed"), hf_config())
    return sm.SiglipModel.from_pretrained(folder), sm.SiglipVisionModel.from_pretrained(folder)


@pytest.mark.parametrize("given_inputs", ["mask_and_shapes", "mask_only", "shapes_only", "patches_only"])
@pytest.mark.parametrize("caller", ["get_image_features", "forward", "vision_call", "vision_features"])
def test_fixed_resolution_model_refuses_naflex_inputs(fixed_resolution_models, caller, given_inputs):
    two_tower, vision = fixed_resolution_models
    patches, mask, shapes = naflex_inputs(8, [(32, 32), (8, 64)], 16)
    whole = torch.zeros(2, 3, 32, 32)
    pixel_values, m, s, says = {
        "mask_and_shapes": (whole, mask, shapes, "pixel_attention_mask and spatial_shapes are for NaFlex"),
        "mask_only": (whole, mask, None, "pixel_attention_mask"),
        "shapes_only": (whole, None, shapes, "spatial_shapes"),
        "patches_only": (patches, None, None, r"pixel_values must be a tensor \(B, 3, H, W\)"),
    }[given_inputs]
    ids = torch.ones(1, 4, dtype=torch.long)
    call = {"get_image_features": lambda: two_tower.get_image_features(pixel_values, m, s),
            "forward": lambda: two_tower(input_ids=ids, pixel_values=pixel_values, pixel_attention_mask=m,
                                         spatial_shapes=s),
            "vision_call": lambda: vision(pixel_values, m, s),
            "vision_features": lambda: vision.get_image_features(pixel_values, m, s)}[caller]
    with torch.no_grad(), pytest.raises(sm.InputError, match=says):
        call()
    with torch.no_grad():  # and the same call without the NaFlex inputs runs
        two_tower.get_image_features(whole)


# ----------------------------------------------------------------------------------------------------------------
# 7. Padding never leaks

@st.composite
def leak_cases(draw):
    """A NaFlex vision config (ours, random, perturbed), an image, other images, where it sits among them, how many
    more padded patches the batch has, and whether those hold garbage (the mask says they are padding)."""
    kwargs = draw(naflex_vision_kwargs(use_head=True))
    kwargs.pop("vision_use_head")
    sizes = draw(st.lists(image_sizes(), min_size=2, max_size=4))
    return dict(kwargs=kwargs, sizes=sizes, position=draw(st.integers(0, len(sizes) - 1)),
                max_num_patches=draw(st.integers(16, 512)), extra=draw(st.integers(0, 40)),
                garbage=draw(st.booleans()), seed=draw(st.integers(0, 1000)))


def padded_further(inputs, extra, garbage, seed):
    """inputs with `extra` more padded patches; padded pixels (the old ones too) random when `garbage`."""
    p, m, s = inputs
    p = torch.cat([p, torch.zeros(len(p), extra, p.shape[-1])], dim=1)
    m = torch.cat([m, torch.zeros(len(m), extra, dtype=m.dtype)], dim=1)
    if garbage:
        noise = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 3
        p = torch.where(m.bool()[..., None], p, noise)
    return p, m, s


def our_naflex_models(kwargs, seed):
    """Ours only (no transformers needed for an invariance): a vision tower with head and a classifier on it."""
    vision_config = sm.SiglipVisionConfig(**kwargs)
    text_config = sm.SiglipTextConfig(vocab_size=5, hidden_size=4, intermediate_size=4, num_hidden_layers=1,
                                      num_attention_heads=1, projection_size=kwargs["hidden_size"])
    torch.manual_seed(seed)
    vision = perturb(sm.SiglipVisionModel(vision_config, "sdpa"), seed).eval()
    classifier = sm.SiglipClassifier(sm.SiglipConfig(text_config=text_config, vision_config=vision_config,
                                                     id2label={0: "a", 1: "b", 2: "c"}), "eager")
    classifier.vision.load_state_dict(vision.vision.state_dict())
    perturb(classifier.classifier, seed)
    return vision, classifier.eval()


@settings(max_examples=25, **SETTINGS)
@given(case=leak_cases())
@example(case=dict(kwargs=dict(num_attention_heads=2, hidden_size=8, intermediate_size=8, num_hidden_layers=2,
                               patch_size=4, num_patches=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
                   sizes=[(2, 17), (1, 1), (300, 40)], position=1, max_num_patches=100, extra=7, garbage=True,
                   seed=0))
def test_padding_never_leaks(case):
    """An image's features, last_hidden_state on its real patches and class logits are the same alone (padded to
    max_num_patches) and in a batch with other images whose grids differ, padded further, the padding holding
    garbage: nothing of another image or of any padding reaches them."""
    vision, classifier = our_naflex_models(case["kwargs"], case["seed"])
    p = case["kwargs"]["patch_size"]
    alone = naflex_inputs(p, case["sizes"][case["position"]:case["position"] + 1], case["max_num_patches"],
                          seed=case["seed"] + case["position"])
    batch = padded_further(naflex_inputs(p, case["sizes"], case["max_num_patches"], seed=case["seed"]),
                           case["extra"], case["garbage"], case["seed"])
    i, real = case["position"], alone[1][0].bool()
    assert torch.equal(batch[0][i, :alone[0].shape[1]][real], alone[0][0][real])  # the same image, the same resize
    with torch.no_grad():
        errors = {
            "features": max_abs(vision.get_image_features(*alone)[0], vision.get_image_features(*batch)[i]),
            "last_hidden_state": max_abs(vision(*alone)[0][real], vision(*batch)[i, :len(real)][real]),
            "classifier_logits": max_abs(classifier(*alone)[0], classifier(*batch)[i]),
        }
    observe("padding_never_leaks", errors)
    assert max(errors.values()) <= FEATURES_ATOL, errors
