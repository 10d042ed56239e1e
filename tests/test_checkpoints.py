"""Configs and broken checkpoints: every bad input raises an error that names the problem."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import siglip_min as sm
from oracle import hf_config, save_random_siglip


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    return save_random_siglip(tmp_path_factory.mktemp("good"), hf_config())


@pytest.fixture
def broken(good_folder, tmp_path):
    """A copy of a good checkpoint, to break in one way."""
    shutil.copytree(good_folder, tmp_path / "model")
    return tmp_path / "model"


def rewrite_weights(folder, change):
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_key_is_named(broken):
    rewrite_weights(broken, lambda t: t.pop("vision_model.encoder.layers.1.mlp.fc2.bias"))
    with pytest.raises(ValueError, match=r"missing: vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias"):
        sm.SiglipModel.from_pretrained(broken)


def test_unexpected_key_is_named(broken):
    rewrite_weights(broken, lambda t: t.update({"text_model.extra.weight": t["logit_bias"].clone()}))
    with pytest.raises(ValueError, match=r"unexpected: text_model\.extra\.weight"):
        sm.SiglipModel.from_pretrained(broken)


def test_wrong_shape_is_named(broken):
    rewrite_weights(broken, lambda t: t.update({"text_model.head.weight": t["text_model.head.weight"][:, :-1].clone()}))
    with pytest.raises(ValueError, match=r"shape: text_model\.head\.weight is \(48, 31\).*\(48, 32\)"):
        sm.SiglipModel.from_pretrained(broken)


def test_every_problem_is_listed_at_once(broken):
    rewrite_weights(broken, lambda t: (t.pop("logit_scale"), t.pop("text_model.head.bias")))
    with pytest.raises(ValueError, match=r"2 problems") as error:
        sm.SiglipModel.from_pretrained(broken)
    assert "missing: logit_scale" in str(error.value) and "missing: text_model.head.bias" in str(error.value)


def test_truncated_safetensors_file(broken):
    path = broken / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: unreadable safetensors file"):
        sm.SiglipModel.from_pretrained(broken)


def test_config_that_is_not_json(broken):
    (broken / "config.json").write_text("{ this is not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        sm.SiglipModel.from_pretrained(broken)


def test_folder_without_weights(broken):
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or model\.safetensors\.index\.json"):
        sm.SiglipModel.from_pretrained(broken)


def test_folder_without_config(broken):
    (broken / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        sm.SiglipModel.from_pretrained(broken)


def test_missing_shard(good_folder, tmp_path):
    index = {"metadata": {}, "weight_map": {"logit_scale": "model-00001-of-00002.safetensors"}}
    (tmp_path / "config.json").write_text((good_folder / "config.json").read_text())
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match=r"model-00001-of-00002\.safetensors: shard named in the index"):
        sm.SiglipModel.from_pretrained(tmp_path)


def test_unknown_folder_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"models--google--nope.*hf download google/nope"):
        sm.SiglipModel.from_pretrained("google/nope")
    with pytest.raises(FileNotFoundError, match=r"model folder not found: \./no/such/folder"):
        sm.SiglipModel.from_pretrained("./no/such/folder")


def test_not_a_siglip_config(broken):
    (broken / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match=r"model_type 'clip': a CLIP checkpoint"):
        sm.SiglipModel.from_pretrained(broken)


def test_bad_attn_implementation(good_folder):
    with pytest.raises(ValueError, match=r"attn_implementation='flash'"):
        sm.SiglipModel.from_pretrained(good_folder, attn_implementation="flash")


# Configs (hypothesis): transformers' config.json fields map 1:1, unknown keys are ignored, bad shapes are named.

widths = st.integers(1, 8).flatmap(lambda h: st.tuples(st.just(h), st.integers(1, 8).map(lambda d: h * d)))


@settings(max_examples=50, deadline=None)
@given(vision=widths, text=widths, patch=st.integers(1, 16), grid=st.integers(1, 8), extra=st.integers(0, 15),
       junk=st.dictionaries(st.text(min_size=1, max_size=8).map(lambda s: "x_" + s), st.integers()))
def test_config_from_hf_dict(vision, text, patch, grid, extra, junk):
    (vh, vd), (th, td) = vision, text
    raw = {"model_type": "siglip", **junk,
           "vision_config": {"hidden_size": vd, "num_attention_heads": vh, "patch_size": patch,
                             "image_size": patch * grid + min(extra, patch - 1), **junk},
           "text_config": {"hidden_size": td, "num_attention_heads": th, "projection_size": vd, **junk}}
    config = sm.SiglipConfig.from_hf(raw)
    assert config.vision_config.hidden_size == vd and config.text_config.hidden_size == td
    assert config.vision_config.image_size == patch * grid + min(extra, patch - 1)
    assert config.text_config.projection_size == vd
    assert config.vision_config.intermediate_size == 3072  # defaults are siglip-base-patch16-224's
    assert sm.SiglipConfig.from_hf(config.to_hf()) == config


@settings(max_examples=50, deadline=None)
@given(heads=st.integers(2, 16), width=st.integers(1, 256), tower=st.sampled_from(["vision_config", "text_config"]))
def test_config_rejects_width_not_divisible_by_heads(heads, width, tower):
    if width % heads == 0:
        width += 1
    raw = {tower: {"hidden_size": width, "num_attention_heads": heads}}
    raw["text_config"] = {**raw.get("text_config", {}), "projection_size": 768}
    with pytest.raises(ValueError, match=rf"{tower}\.hidden_size={width} is not divisible by {tower}\.num_attention_heads"):
        sm.SiglipConfig.from_hf(raw)


def test_config_rejects_what_siglip_is_not():
    with pytest.raises(ValueError, match=r"vision_config\.image_size=8 is smaller than vision_config\.patch_size=16"):
        sm.SiglipConfig.from_hf({"vision_config": {"image_size": 8}})
    with pytest.raises(ValueError, match=r"text_config\.projection_size=64 must equal vision_config\.hidden_size=768"):
        sm.SiglipModel(sm.SiglipConfig.from_hf({"text_config": {"projection_size": 64}}))
    with pytest.raises(ValueError, match=r"vision_config\.hidden_act='relu'"):
        sm.SiglipConfig.from_hf({"vision_config": {"hidden_act": "relu"}})
    with pytest.raises(ValueError, match=r"vision_config\.vision_use_head must be true or false, got 1"):
        sm.SiglipConfig.from_hf({"vision_config": {"vision_use_head": 1}})


def test_default_config_is_siglip_base():
    import torch
    import transformers

    with torch.device("meta"):
        ours, theirs = sm.SiglipModel(sm.SiglipConfig()), transformers.SiglipModel(transformers.SiglipConfig())
    shapes = {name: p.shape for name, p in ours.named_parameters()}
    names = sm.hf_name_map(ours)
    assert {names[n]: s for n, s in shapes.items()} == {n: p.shape for n, p in theirs.named_parameters()}


def test_bad_inputs_are_named(good_folder):
    import torch

    model = sm.SiglipModel.from_pretrained(good_folder)
    with pytest.raises(ValueError, match=r"pixel_values must be a tensor \(B, 3, H, W\), got \(3, 32, 32\)"):
        model.get_image_features(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"interpolate_pos_encoding=True"):
        model.get_image_features(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"input_ids has 17 tokens, max_position_embeddings is 16"):
        model.get_text_features(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 99\), got 0\.\.99: is the tokenizer"):
        sm.embed_texts(model, lambda texts, return_attention_mask: (np.array([[0, 99]]), np.ones((1, 2))), ["x"])
    with pytest.raises(ValueError, match=r"attention_mask \(1, 3\) must match input_ids \(1, 4\)"):
        model.get_text_features(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 3))


@pytest.mark.parametrize("error, says", [
    ("GatedRepoError", "a gated repository on the Hub; accept its terms"),
    ("RepositoryNotFoundError", "no such repository on the Hub, or a private one"),
    ("LocalEntryNotFoundError", r"the download failed, no network\? \(Connection refused\)"),
])
def test_a_failed_download_says_why(tmp_path, monkeypatch, error, says):
    """Not in the cache and online: huggingface_hub's own error classes, raised as its snapshot_download raises them,
    become one message each (the Hub itself cannot be reached from the tests)."""
    import httpx
    import huggingface_hub
    from huggingface_hub import errors

    def failing_download(repo_id, **kwargs):
        if error == "LocalEntryNotFoundError":
            raise errors.LocalEntryNotFoundError("Connection refused")
        response = httpx.Response(401, request=httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise getattr(errors, error)(f"401 for {repo_id}", response=response)

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing_download)
    with pytest.raises(sm.InputError, match=f"google/siglip-elsewhere: .*{says}"):
        sm.SiglipModel.from_pretrained("google/siglip-elsewhere")
