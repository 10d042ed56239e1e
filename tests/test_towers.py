"""The single towers (SiglipVisionModel, SiglipTextModel) and siglip_min.from_pretrained's dispatch, against
transformers 5.24 (the oracle) on hypothesis-drawn small configs.

Every transformers model is perturbed before it is saved (transformers initialises biases to 0 and LayerNorms to 1,
which would hide a bias or LayerNorm mapped to the wrong place). Both sides always run the same attention
implementation: eager against sdpa differs by up to 2e-5 on last_hidden_state at width 4 (LayerNorm over 4 numbers
amplifies float32 rounding; either is ~1e-5 from float64), which is float noise, not a bug.
"""
import json
import tempfile
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import siglip_min as sm
from oracle import hf_config, load_hf, max_abs, save_random_siglip

FEATURES_ATOL = 1e-5  # float32 CPU features
LOGITS_ATOL = 1e-4
ATTN = ["eager", "sdpa"]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
GELUS = ["gelu_pytorch_tanh", "gelu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: these models are tiny


# ----------------------------------------------------------------------------------------------------------------
# Strategies and helpers

@st.composite
def vision_kwargs(draw, use_head=None):
    """transformers.SiglipVisionConfig kwargs: widths, heads, depths, channels, eps, GELU, image sizes that are and
    are not a multiple of the patch, with and without the MAP head."""
    heads, patch = draw(st.integers(1, 4)), draw(st.sampled_from([2, 4, 8]))
    return dict(num_attention_heads=heads, hidden_size=heads * draw(st.sampled_from([4, 8, 12])),
                intermediate_size=draw(st.integers(4, 48)), num_hidden_layers=draw(st.integers(1, 3)),
                patch_size=patch, image_size=patch * draw(st.integers(1, 4)) + draw(st.sampled_from([0, 0, 1])),
                num_channels=draw(st.sampled_from([1, 3, 4])), layer_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
                hidden_act=draw(st.sampled_from(GELUS)),
                vision_use_head=draw(st.booleans()) if use_head is None else use_head)


@st.composite
def text_kwargs(draw):
    """transformers.SiglipTextConfig kwargs; projection_size drawn apart from the width."""
    heads = draw(st.integers(1, 4))
    return dict(num_attention_heads=heads, hidden_size=heads * draw(st.sampled_from([4, 8, 12])),
                intermediate_size=draw(st.integers(4, 48)), num_hidden_layers=draw(st.integers(1, 3)),
                vocab_size=draw(st.integers(3, 200)), max_position_embeddings=draw(st.integers(1, 16)),
                projection_size=draw(st.integers(1, 40)), layer_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
                hidden_act=draw(st.sampled_from(GELUS)))


def perturb(model, seed):
    """Noise on every parameter: non-zero biases, LayerNorms away from 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def save_hf_tower(folder, model_class, config_class, kwargs, seed=0):
    torch.manual_seed(seed)
    model = perturb(model_class(config_class(**kwargs)), seed)
    model.save_pretrained(folder)
    return folder


def save_hf_vision(folder, kwargs, seed=0):
    return save_hf_tower(folder, transformers.SiglipVisionModel, transformers.SiglipVisionConfig, kwargs, seed)


def save_hf_text(folder, kwargs, seed=0):
    return save_hf_tower(folder, transformers.SiglipTextModel, transformers.SiglipTextConfig, kwargs, seed)


def save_perturbed_siglip(folder, config, seed=0):
    """oracle.save_random_siglip, every parameter perturbed."""
    save_random_siglip(folder, config, seed=seed)
    model = perturb(transformers.SiglipModel.from_pretrained(folder), seed)
    model.save_pretrained(folder)
    return folder


def pixels_for(v, seed, batch=2, extra=(0, 0)):
    """pixel_values for a vision config (dict or object), `extra` patches more in each direction."""
    v = v if isinstance(v, dict) else v.to_dict()
    g = torch.Generator().manual_seed(seed)
    size = [v["image_size"] + e * v["patch_size"] for e in extra]
    return torch.randn(batch, v["num_channels"], *size, generator=g)


def ids_and_mask(t, seed, batch=2):
    t = t if isinstance(t, dict) else t.to_dict()
    g = torch.Generator().manual_seed(seed)
    length = int(torch.randint(1, t["max_position_embeddings"] + 1, (), generator=g))
    ids = torch.randint(0, t["vocab_size"], (batch, length), generator=g)
    mask = (torch.rand(batch, length, generator=g) < 0.6).long()
    mask[:, 0] = 1  # every text keeps a token, as a tokenizer's mask does
    return ids, mask


def loading_info_is_clean(info):
    return not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def vision_errors(hf, ours, pixels, larger):
    """Max abs error of every vision output, transformers vs ours; the pooled ones only with a head."""
    with torch.no_grad():
        want = hf(pixel_values=pixels, output_hidden_states=True)
        got_last, got_states = ours(pixels, output_hidden_states=True)
        assert len(got_states) == len(want.hidden_states) == hf.config.num_hidden_layers + 1
        errors = {"last_hidden_state": max_abs(want.last_hidden_state, got_last),
                  "plain_call": max_abs(want.last_hidden_state, ours(pixels))}
        errors.update({f"hidden_states[{i}]": max_abs(w, g) for i, (w, g) in
                       enumerate(zip(want.hidden_states, got_states))})
        want_big = hf(pixel_values=larger, interpolate_pos_encoding=True, output_hidden_states=True)
        got_big, got_big_states = ours(larger, interpolate_pos_encoding=True, output_hidden_states=True)
        errors["interpolated"] = max_abs(want_big.last_hidden_state, got_big)
        errors["interpolated_hidden_states"] = max(max_abs(w, g) for w, g in
                                                   zip(want_big.hidden_states, got_big_states))
        if hf.config.vision_use_head:
            errors["pooler_output"] = max_abs(want.pooler_output, ours.get_image_features(pixels))
            errors["interpolated_pooler"] = max_abs(want_big.pooler_output, ours.get_image_features(
                larger, interpolate_pos_encoding=True))
        else:
            assert want.pooler_output is None
            with pytest.raises(sm.InputError, match="vision_use_head"):
                ours.get_image_features(pixels)
    return errors


def text_errors(hf, ours, ids, mask):
    with torch.no_grad():
        want, want_masked = hf(input_ids=ids), hf(input_ids=ids, attention_mask=mask)
        return {"last_hidden_state": max_abs(want.last_hidden_state, ours(ids)),
                "pooler_output": max_abs(want.pooler_output, ours.get_text_features(ids)),
                "masked_last_hidden_state": max_abs(want_masked.last_hidden_state, ours(ids, attention_mask=mask)),
                "masked_pooler_output": max_abs(want_masked.pooler_output,
                                                ours.get_text_features(ids, attention_mask=mask))}


def assert_close(errors):
    for name, error in errors.items():
        assert error <= (LOGITS_ATOL if name == "logits" else FEATURES_ATOL), (name, errors)


# ----------------------------------------------------------------------------------------------------------------
# 1, 2. Single towers saved by transformers

@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=20, **SETTINGS)
@given(kwargs=vision_kwargs(), seed=st.integers(0, 1000), extra=st.tuples(st.integers(0, 2), st.integers(0, 2)))
def test_vision_model_matches_transformers(attn_implementation, kwargs, seed, extra):
    with tempfile.TemporaryDirectory() as folder:
        save_hf_vision(folder, kwargs, seed)
        hf = load_hf(folder, attn_implementation, transformers.SiglipVisionModel)
        ours = sm.SiglipVisionModel.from_pretrained(folder, attn_implementation=attn_implementation)
        assert ours.config.vision_use_head == kwargs["vision_use_head"]
        assert_close(vision_errors(hf, ours, pixels_for(kwargs, seed), pixels_for(kwargs, seed + 1, extra=extra)))
        dispatched = sm.from_pretrained(folder, attn_implementation=attn_implementation)
        assert type(dispatched) is sm.SiglipVisionModel
        pixels = pixels_for(kwargs, seed)
        with torch.no_grad():
            assert torch.equal(dispatched(pixels), ours(pixels))


@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=20, **SETTINGS)
@given(kwargs=text_kwargs(), seed=st.integers(0, 1000))
def test_text_model_matches_transformers(attn_implementation, kwargs, seed):
    with tempfile.TemporaryDirectory() as folder:
        save_hf_text(folder, kwargs, seed)
        hf = load_hf(folder, attn_implementation, transformers.SiglipTextModel)
        ours = sm.SiglipTextModel.from_pretrained(folder, attn_implementation=attn_implementation)
        ids, mask = ids_and_mask(kwargs, seed)
        assert_close(text_errors(hf, ours, ids, mask))
        dispatched = sm.from_pretrained(folder, attn_implementation=attn_implementation)
        assert type(dispatched) is sm.SiglipTextModel
        with torch.no_grad():
            assert torch.equal(dispatched.get_text_features(ids), ours.get_text_features(ids))


# ----------------------------------------------------------------------------------------------------------------
# 3. One tower of a two-tower folder

@st.composite
def two_tower_configs(draw):
    v, t = draw(vision_kwargs(use_head=True)), draw(text_kwargs())
    t["projection_size"] = v["hidden_size"]
    return hf_config(t, v)


@pytest.mark.parametrize("attn_implementation", ATTN)
@settings(max_examples=12, **SETTINGS)
@given(config=two_tower_configs(), seed=st.integers(0, 1000))
def test_towers_of_a_two_tower_folder_match_transformers(attn_implementation, config, seed):
    with tempfile.TemporaryDirectory() as folder:
        save_perturbed_siglip(folder, config, seed)
        hf_vision, info = transformers.SiglipVisionModel.from_pretrained(
            folder, attn_implementation=attn_implementation, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"], info
        hf_text, info = transformers.SiglipTextModel.from_pretrained(
            folder, attn_implementation=attn_implementation, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"], info
        vision = sm.SiglipVisionModel.from_pretrained(folder, attn_implementation=attn_implementation)
        text = sm.SiglipTextModel.from_pretrained(folder, attn_implementation=attn_implementation)
        both = sm.SiglipModel.from_pretrained(folder, attn_implementation=attn_implementation)
        v = config.vision_config
        pixels, larger = pixels_for(v, seed), pixels_for(v, seed + 1, extra=(1, 2))
        assert_close(vision_errors(hf_vision.eval(), vision, pixels, larger))
        ids, mask = ids_and_mask(config.text_config, seed)
        assert_close(text_errors(hf_text.eval(), text, ids, mask))
        with torch.no_grad():  # the tower alone is the two-tower model's tower, bit for bit
            assert torch.equal(vision.get_image_features(pixels), both.get_image_features(pixels))
            assert torch.equal(text.get_text_features(ids, mask), both.get_text_features(ids, mask))


class TensorReads:
    """Stands in for siglip_min.safe_open and records the name of every tensor read."""

    def __init__(self):
        self.names = []

    def __call__(self, *args, **kwargs):
        real, reads = safe_open(*args, **kwargs), self

        class Recording:
            def __enter__(self):
                self.file = real.__enter__()
                return self

            def __exit__(self, *exc):
                return real.__exit__(*exc)

            def keys(self):
                return self.file.keys()

            def get_tensor(self, name):
                reads.names.append(name)
                return self.file.get_tensor(name)

            def __getattr__(self, name):
                return getattr(self.file, name)

        return Recording()


@pytest.fixture(scope="module")
def two_tower_folder(tmp_path_factory):
    return save_perturbed_siglip(tmp_path_factory.mktemp("two_tower"), hf_config(), seed=3)


@pytest.fixture(scope="module")
def sharded_two_tower_folder(two_tower_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded")
    load_hf(two_tower_folder).save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


def names_in(folder):
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return set(load_file(folder / "model.safetensors"))
    return set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("model_class, prefix", [(sm.SiglipVisionModel, "vision_model."),
                                                 (sm.SiglipTextModel, "text_model.")])
def test_one_tower_reads_only_its_own_tensors(two_tower_folder, sharded_two_tower_folder, monkeypatch, sharded,
                                              model_class, prefix):
    folder = sharded_two_tower_folder if sharded else two_tower_folder
    reads = TensorReads()
    monkeypatch.setattr(sm, "safe_open", reads)
    model_class.from_pretrained(folder)
    assert len(reads.names) == len(set(reads.names)), "a tensor was read twice"
    others = [n for n in reads.names if not n.startswith(prefix)]
    assert not others, f"{model_class.__name__} read the other tower's tensors: {others[:5]}"
    assert set(reads.names) == {n for n in names_in(folder) if n.startswith(prefix)}


def test_tensor_recorder_sees_every_read_of_the_two_tower_model(two_tower_folder, monkeypatch):
    """The recorder above is what siglip_min reads through: the two-tower model is seen reading everything."""
    reads = TensorReads()
    monkeypatch.setattr(sm, "safe_open", reads)
    sm.SiglipModel.from_pretrained(two_tower_folder)
    assert set(reads.names) == names_in(two_tower_folder)


def test_vision_tower_without_head_from_a_two_tower_folder(tmp_path):
    """A two-tower folder whose vision_config has vision_use_head false (a VLM's tower saved inside SiglipModel):
    the vision tower loads from it as transformers' does, and the two-tower model is refused naming the field."""
    config = hf_config(vision=dict(vision_use_head=False))
    torch.manual_seed(0)
    perturb(transformers.SiglipModel(config), 0).save_pretrained(tmp_path)
    hf, info = transformers.SiglipVisionModel.from_pretrained(tmp_path, attn_implementation="eager",
                                                              output_loading_info=True)
    assert not info["missing_keys"], info
    ours = sm.SiglipVisionModel.from_pretrained(tmp_path, attn_implementation="eager")
    v = config.vision_config
    assert_close(vision_errors(hf.eval(), ours, pixels_for(v, 0), pixels_for(v, 1, extra=(1, 1))))
    with pytest.raises(sm.InputError, match="vision_use_head is false"):
        sm.SiglipModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# 4. Single towers as transformers 4.x saved them: every name with the tower's prefix

def add_prefix(folder, prefix):
    tensors = load_file(Path(folder) / "model.safetensors")
    assert not any(n.startswith(prefix) for n in tensors)  # transformers 5.x saved them bare
    save_file({prefix + n: t for n, t in tensors.items()}, Path(folder) / "model.safetensors",
              metadata={"format": "pt"})


@settings(max_examples=10, **SETTINGS)
@given(kwargs=vision_kwargs(), seed=st.integers(0, 1000))
def test_vision_model_in_the_transformers_4_layout(kwargs, seed):
    with tempfile.TemporaryDirectory() as folder:
        save_hf_vision(folder, kwargs, seed)
        bare = sm.SiglipVisionModel.from_pretrained(folder)
        add_prefix(folder, "vision_model.")
        hf, info = transformers.SiglipVisionModel.from_pretrained(folder, attn_implementation="eager",
                                                                  output_loading_info=True)
        assert loading_info_is_clean(info), info
        ours = sm.SiglipVisionModel.from_pretrained(folder, attn_implementation="eager")
        assert type(sm.from_pretrained(folder)) is sm.SiglipVisionModel
        assert_close(vision_errors(hf.eval(), ours, pixels_for(kwargs, seed), pixels_for(kwargs, seed, extra=(1, 1))))
        for (name, a), (_, b) in zip(bare.state_dict().items(), ours.state_dict().items()):
            assert torch.equal(a, b), name


@settings(max_examples=10, **SETTINGS)
@given(kwargs=text_kwargs(), seed=st.integers(0, 1000))
def test_text_model_in_the_transformers_4_layout(kwargs, seed):
    with tempfile.TemporaryDirectory() as folder:
        save_hf_text(folder, kwargs, seed)
        add_prefix(folder, "text_model.")
        hf, info = transformers.SiglipTextModel.from_pretrained(folder, attn_implementation="eager",
                                                                output_loading_info=True)
        assert loading_info_is_clean(info), info
        ours = sm.SiglipTextModel.from_pretrained(folder, attn_implementation="eager")
        assert type(sm.from_pretrained(folder)) is sm.SiglipTextModel
        assert_close(text_errors(hf.eval(), ours, *ids_and_mask(kwargs, seed)))


# ----------------------------------------------------------------------------------------------------------------
# 5. Round trips: ours save_pretrained -> transformers from_pretrained

def saved_config(folder):
    return json.loads((Path(folder) / "config.json").read_text())


def assert_same_kind_of_config(ours_folder, hf_model, tmp):
    """model_type, architectures and tensor names as transformers writes them for the same model (5.x: a single
    tower's names bare); every field we write is the value transformers reads back. (A fresh model: one loaded
    from a checkpoint saves its names as that checkpoint had them.)"""
    type(hf_model)(hf_model.config).save_pretrained(tmp)
    assert names_in(ours_folder) == names_in(tmp)
    ours, theirs = saved_config(ours_folder), saved_config(tmp)
    assert (ours["model_type"], ours["architectures"]) == (theirs["model_type"], theirs["architectures"])
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "layer_norm_eps",
                "hidden_act", "vision_use_head", "image_size", "patch_size", "num_channels", "vocab_size",
                "max_position_embeddings", "projection_size"):
        if key in theirs:
            assert ours[key] == theirs[key], key


@settings(max_examples=15, **SETTINGS)
@given(kwargs=vision_kwargs(), seed=st.integers(0, 1000))
def test_vision_model_save_round_trip_through_transformers(kwargs, seed):
    config = sm.SiglipVisionConfig(**kwargs)
    torch.manual_seed(seed)
    ours = perturb(sm.SiglipVisionModel(config, attn_implementation="eager"), seed)
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as other:
        ours.save_pretrained(folder)
        hf, info = transformers.SiglipVisionModel.from_pretrained(folder, attn_implementation="eager",
                                                                  output_loading_info=True)
        assert loading_info_is_clean(info), info
        assert hf.config.vision_use_head == kwargs["vision_use_head"] and hf.config.hidden_act == kwargs["hidden_act"]
        assert_close(vision_errors(hf.eval(), ours, pixels_for(kwargs, seed), pixels_for(kwargs, seed, extra=(2, 1))))
        assert_same_kind_of_config(folder, hf, other)
        again = sm.from_pretrained(folder)
        assert type(again) is sm.SiglipVisionModel
        for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
            assert torch.equal(a, b), name


@settings(max_examples=15, **SETTINGS)
@given(kwargs=text_kwargs(), seed=st.integers(0, 1000))
def test_text_model_save_round_trip_through_transformers(kwargs, seed):
    config = sm.SiglipTextConfig(**kwargs)
    torch.manual_seed(seed)
    ours = perturb(sm.SiglipTextModel(config, attn_implementation="eager"), seed)
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as other:
        ours.save_pretrained(folder)
        hf, info = transformers.SiglipTextModel.from_pretrained(folder, attn_implementation="eager",
                                                                output_loading_info=True)
        assert loading_info_is_clean(info), info
        assert hf.config.projection_size == kwargs["projection_size"]
        assert_close(text_errors(hf.eval(), ours, *ids_and_mask(kwargs, seed)))
        assert_same_kind_of_config(folder, hf, other)
        again = sm.from_pretrained(folder)
        assert type(again) is sm.SiglipTextModel
        for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
            assert torch.equal(a, b), name


def two_tower_errors(hf, ours, seed=0):
    v, t = hf.config.vision_config, hf.config.text_config
    pixels = pixels_for(v, seed)
    ids, mask = ids_and_mask(t, seed)
    with torch.no_grad():
        want, got = hf(input_ids=ids, pixel_values=pixels), ours(ids, pixels)
        return {"image": max_abs(hf.get_image_features(pixels).pooler_output, ours.get_image_features(pixels)),
                "text": max_abs(hf.get_text_features(ids, attention_mask=mask).pooler_output,
                                ours.get_text_features(ids, attention_mask=mask)),
                "logits": max_abs(want.logits_per_image, got.logits_per_image)}


def test_exact_gelu_two_tower_model(tmp_path):
    """hidden_act "gelu" in both towers (open_clip/timm's SigLIP 1): the exact erf GELU, as transformers runs it;
    saved by us, transformers reads it back as "gelu" and gives the same outputs."""
    config = hf_config(text=dict(hidden_act="gelu"), vision=dict(hidden_act="gelu"))
    save_perturbed_siglip(tmp_path / "hf", config, seed=5)
    hf = load_hf(tmp_path / "hf")
    ours = sm.SiglipModel.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    assert ours.vision.blocks[0].mlp.approximate == ours.text.blocks[0].mlp.approximate == "none"
    assert ours.vision.head.mlp.approximate == "none"
    assert_close(two_tower_errors(hf, ours))
    # the test can tell the two GELUs apart: the tanh one is further than the tolerance
    tanh = transformers.SiglipModel(hf_config()).eval()
    tanh.load_state_dict(hf.state_dict())
    with torch.no_grad():
        pixels = pixels_for(config.vision_config, 0)
        assert max_abs(tanh.get_image_features(pixels).pooler_output, ours.get_image_features(pixels)) > FEATURES_ATOL
    ours.save_pretrained(tmp_path / "ours")
    again, info = transformers.SiglipModel.from_pretrained(tmp_path / "ours", attn_implementation="eager",
                                                           output_loading_info=True)
    assert loading_info_is_clean(info), info
    assert again.config.vision_config.hidden_act == again.config.text_config.hidden_act == "gelu"
    assert_close(two_tower_errors(again.eval(), ours))


# ----------------------------------------------------------------------------------------------------------------
# 6. siglip_min.from_pretrained: the model a folder holds, or one line saying what it found

def test_dispatch_two_tower_and_towers(two_tower_folder, tmp_path):
    assert type(sm.from_pretrained(two_tower_folder)) is sm.SiglipModel
    model = sm.from_pretrained(two_tower_folder, dtype=torch.bfloat16, attn_implementation="eager")
    assert model.logit_scale.dtype == torch.bfloat16 and model.vision.blocks[0].attn.attn_implementation == "eager"
    save_hf_vision(tmp_path / "vision", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=8, patch_size=4))
    save_hf_text(tmp_path / "text", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=2, vocab_size=10, max_position_embeddings=4))
    vision = sm.from_pretrained(tmp_path / "vision", dtype=torch.bfloat16, attn_implementation="eager")
    assert type(vision) is sm.SiglipVisionModel and vision.vision.embed.pos.dtype == torch.bfloat16
    assert vision.vision.blocks[0].attn.attn_implementation == "eager"
    assert type(sm.from_pretrained(tmp_path / "text")) is sm.SiglipTextModel


def test_dispatch_classifier_matches_transformers(tmp_path):
    config = hf_config()
    config.id2label = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(2)
    perturb(transformers.SiglipForImageClassification(config), 2).save_pretrained(tmp_path)
    hf = load_hf(tmp_path, "eager", transformers.SiglipForImageClassification)
    ours = sm.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(ours) is sm.SiglipClassifier and ours.id2label == config.id2label
    pixels = pixels_for(config.vision_config, 0, batch=3)
    larger = pixels_for(config.vision_config, 1, extra=(1, 2))
    with torch.no_grad():
        assert max_abs(hf(pixel_values=pixels).logits, ours(pixels)) <= LOGITS_ATOL
        assert max_abs(hf(pixel_values=larger, interpolate_pos_encoding=True).logits,
                       ours(larger, interpolate_pos_encoding=True)) <= LOGITS_ATOL
    # the classifier's vision tower alone, as transformers takes it from the same folder
    hf_vision, info = transformers.SiglipVisionModel.from_pretrained(tmp_path, attn_implementation="eager",
                                                                     output_loading_info=True)
    assert not info["missing_keys"], info
    vision = sm.SiglipVisionModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert_close(vision_errors(hf_vision.eval(), vision, pixels, larger))


def test_refuses_clip(tmp_path):
    clip = transformers.CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, vocab_size=10),
                                   vision_config=dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                                      num_attention_heads=2, image_size=8, patch_size=4),
                                   projection_dim=8)
    transformers.CLIPModel(clip).save_pretrained(tmp_path)
    for load in (sm.from_pretrained, sm.SiglipModel.from_pretrained, sm.SiglipVisionModel.from_pretrained):
        with pytest.raises(sm.InputError, match=r"config\.json: model_type 'clip': a CLIP checkpoint") as error:
            load(tmp_path)
        assert "\n" not in str(error.value)


def test_refuses_pickled_weights_only(tmp_path):
    torch.save({"logit_scale": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(sm.InputError, match=r"holds pytorch_model\.bin") as error:
        sm.from_pretrained(tmp_path)
    assert "\n" not in str(error.value)


def test_refuses_pickled_weights_beside_a_config(two_tower_folder, tmp_path):
    """config.json + pytorch_model.bin (an old transformers save): the error names the pickle and why."""
    (tmp_path / "config.json").write_text((two_tower_folder / "config.json").read_text())
    torch.save({"logit_scale": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    for load in (sm.from_pretrained, sm.SiglipModel.from_pretrained, sm.SiglipVisionModel.from_pretrained):
        with pytest.raises(FileNotFoundError, match=r"no model\.safetensors.*found pytorch_model\.bin: pickles"):
            load(tmp_path)


def test_refuses_an_empty_folder(tmp_path):
    with pytest.raises(sm.InputError, match=r"holds nothing") as error:
        sm.from_pretrained(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        sm.SiglipVisionModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# 7. Bad input on the new paths

@pytest.fixture(scope="module")
def tower_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    save_hf_vision(root / "vision", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=8, patch_size=4))
    save_hf_vision(root / "headless", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=8, patch_size=4, vision_use_head=False))
    save_hf_text(root / "text", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, vocab_size=10, max_position_embeddings=4))
    return root


def test_image_features_without_a_head(tower_folders):
    model = sm.SiglipVisionModel.from_pretrained(tower_folders / "headless")
    assert model.vision.head is None
    with pytest.raises(sm.InputError, match=r"no MAP head \(vision_use_head is false\)"):
        model.get_image_features(torch.zeros(1, 3, 8, 8))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 16)  # the tokens still come


def test_siglip_model_refuses_headless_config():
    with pytest.raises(sm.InputError, match=r"vision_use_head is false.*SiglipVisionModel"):
        sm.SiglipModel(sm.SiglipConfig(vision_config=sm.SiglipVisionConfig(vision_use_head=False)))


@pytest.mark.parametrize("kind, model_class, holds", [
    ("text", sm.SiglipModel, "SiglipText"), ("vision", sm.SiglipModel, "SiglipVision"),
    ("headless", sm.SiglipModel, "SiglipVision"), ("vision", sm.SiglipTextModel, "SiglipVision"),
    ("text", sm.SiglipVisionModel, "SiglipText"), ("vision", sm.SiglipClassifier, "SiglipVision"),
])
def test_wrong_class_for_a_single_tower_folder(tower_folders, kind, model_class, holds):
    with pytest.raises(sm.InputError) as error:
        model_class.from_pretrained(tower_folders / kind)
    message = str(error.value)
    assert f"holds a {holds} model, {model_class.__name__} cannot be built from it" in message, message
    assert "siglip_min.from_pretrained" in message and "\n" not in message


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    transformers.SiglipForImageClassification(hf_config()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_class", [sm.SiglipModel, sm.SiglipTextModel])
def test_a_classifier_folder_has_no_text_tower(classifier_folder, model_class):
    """A SiglipForImageClassification folder holds a vision tower and a classifier, no text tower: asking it for a
    text tower is refused in one line that says what the folder holds, as for a vision-only folder above (not as a
    list of every text tensor missing and every vision tensor unexpected)."""
    with pytest.raises(sm.InputError) as error:
        model_class.from_pretrained(classifier_folder)
    message = str(error.value)
    assert "\n" not in message, message[:400]
    assert "SiglipForImageClassification" in message and "siglip_min.from_pretrained" in message, message


def test_vision_model_checks_pixel_values(tower_folders):
    model = sm.SiglipVisionModel.from_pretrained(tower_folders / "vision")
    with pytest.raises(sm.InputError, match=r"pixel_values must be a tensor \(B, 3, H, W\), got \(1, 1, 8, 8\)"):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(sm.InputError, match=r"3x2 patch grid, the model.s is 2x2; pass interpolate_pos_encoding=True"):
        model(torch.zeros(1, 3, 12, 8), output_hidden_states=True)


def test_text_model_checks_input_ids(tower_folders):
    model = sm.SiglipTextModel.from_pretrained(tower_folders / "text")
    with pytest.raises(sm.InputError, match=r"input_ids has 5 tokens, max_position_embeddings is 4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(sm.InputError, match=r"attention_mask \(1, 3\) must match input_ids \(1, 2\)"):
        model.get_text_features(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.ones(1, 3))
