"""The big_vision .npz and open_clip loaders against outputs computed by big_vision (JAX) and open_clip + timm.

tests/fixtures/ holds small random checkpoints in those formats with their inputs and the outputs that code
produced (its README says how); nothing of siglip-min made them. Tolerance 1e-5 (rtol 0), as that README
advises: float32 round-off here is 1e-6 to 2e-6, and the smallest port mistake its negative controls show
(LayerNorm eps 1e-6 -> 1e-5) is 4.3e-4, exact-instead-of-tanh GELU 5.9e-4.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import siglip_min as sm
from oracle import max_abs

FIXTURES = Path(__file__).parent / "fixtures"
B16_LOOP, SO400M_SCAN = FIXTURES / "big_vision" / "b16_loop", FIXTURES / "big_vision" / "so400m_scan"
OPEN_CLIP = FIXTURES / "open_clip" / "b16_openclip"
ATOL = 1e-5


def errors_against(model, folder, outputs="outputs.npz"):
    """Max abs error of features, logits and the loss on the fixture's inputs, vs its stored outputs."""
    inputs, want = np.load(folder / "inputs.npz"), np.load(folder / outputs)
    pixels, ids = torch.from_numpy(inputs["pixel_values"]), torch.from_numpy(inputs["input_ids"])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        loss = sm.sigmoid_loss(out.image_embeds[:3], out.text_embeds[:3], model.logit_scale, model.logit_bias)
        got = {"image_features": model.get_image_features(pixels), "text_features": model.get_text_features(ids),
               "image_embeds": out.image_embeds, "text_embeds": out.text_embeds,
               "logits_per_image": out.logits_per_image, "loss": loss}
    return {name: max_abs(value, torch.from_numpy(want[name])) for name, value in got.items()}


def assert_matches(errors):
    assert max(errors.values()) <= ATOL, errors


def rewritten_npz(source, target, rename=lambda name: name, stack=False, unstack=False):
    """A copy of a big_vision .npz with its names or its layer layout changed: the other layouts big_vision writes."""
    arrays = {rename(name): value for name, value in np.load(source).items()}
    if unstack:  # scan=True -> one encoderblock_{i} per layer
        for name in [n for n in arrays if "/encoderblock/" in n]:
            for i, layer in enumerate(arrays.pop(name)):
                arrays[name.replace("/encoderblock/", f"/encoderblock_{i}/")] = layer
    if stack:  # per layer -> scan=True, the layers stacked on axis 0
        for name in sorted(n for n in arrays if "/encoderblock_0/" in n):
            layers = []
            while (layer_name := name.replace("/encoderblock_0/", f"/encoderblock_{len(layers)}/")) in arrays:
                layers.append(arrays.pop(layer_name))
            arrays[name.replace("/encoderblock_0/", "/encoderblock/")] = np.stack(layers)
    np.savez(target, **arrays)
    return target


# ----------------------------------------------------------------------------------------------------------------
# big_vision .npz: per-layer and scan layouts, with and without the params/ prefix.

@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("fixture", [B16_LOOP, SO400M_SCAN], ids=["b16_loop", "so400m_scan"])
def test_big_vision_npz_reproduces_big_vision(fixture, attn):
    model = sm.from_pretrained(fixture / "checkpoint.npz", attn_implementation=attn)
    assert type(model) is sm.SiglipModel
    assert_matches(errors_against(model, fixture))


@pytest.mark.parametrize("layout", ["no params/ prefix", "other layer layout"])
@pytest.mark.parametrize("fixture", [B16_LOOP, SO400M_SCAN], ids=["b16_loop", "so400m_scan"])
def test_big_vision_layouts(fixture, layout, tmp_path):
    scanned = fixture is SO400M_SCAN
    if layout == "no params/ prefix":
        path = rewritten_npz(fixture / "checkpoint.npz", tmp_path / "c.npz", lambda n: n.removeprefix("params/"))
    else:
        path = rewritten_npz(fixture / "checkpoint.npz", tmp_path / "c.npz", stack=not scanned, unstack=scanned)
    assert_matches(errors_against(sm.from_pretrained(path), fixture))


def test_big_vision_config_from_shapes():
    config = sm.from_pretrained(SO400M_SCAN / "checkpoint.npz").config
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers,
            vision.num_attention_heads, vision.intermediate_size) == (70, 14, 48, 3, 3, 100)
    assert (text.vocab_size, text.max_position_embeddings, text.hidden_size, text.num_hidden_layers,
            text.num_attention_heads, text.intermediate_size, text.projection_size) == (1000, 16, 32, 2, 2, 100, 48)


def test_big_vision_nominal_image_size(tmp_path):
    """so400m/14 at 384 has a 27 x 27 grid (378 px used); 384 comes from the file name or the argument."""
    named = shutil.copy(SO400M_SCAN / "checkpoint.npz", tmp_path / "webli_en_tiny_76_12345.npz")  # 76 // 14 == 5
    assert sm.from_pretrained(named).config.vision_config.image_size == 76
    assert sm.from_pretrained(named, image_size=80).config.vision_config.image_size == 80
    with pytest.raises(sm.InputError, match="image_size is for big_vision .npz files"):
        sm.from_pretrained(OPEN_CLIP, image_size=64)


def test_big_vision_single_towers(tmp_path):
    """An .npz with one tower gives that tower alone, with the same features as the two-tower file."""
    arrays = dict(np.load(B16_LOOP / "checkpoint.npz"))
    np.savez(tmp_path / "img.npz", **{n: a for n, a in arrays.items() if n.startswith("params/img/")})
    np.savez(tmp_path / "txt.npz", **{n: a for n, a in arrays.items() if n.startswith("params/txt/")})
    vision, text = sm.from_pretrained(tmp_path / "img.npz"), sm.from_pretrained(tmp_path / "txt.npz")
    assert (type(vision), type(text)) == (sm.SiglipVisionModel, sm.SiglipTextModel)
    inputs, want = np.load(B16_LOOP / "inputs.npz"), np.load(B16_LOOP / "outputs.npz")
    with torch.no_grad():
        image = vision.get_image_features(torch.from_numpy(inputs["pixel_values"]))
        txt = text.get_text_features(torch.from_numpy(inputs["input_ids"]))
    assert max_abs(image, torch.from_numpy(want["image_features"])) <= ATOL
    assert max_abs(txt, torch.from_numpy(want["text_features"])) <= ATOL


def test_big_vision_corruption_is_noticed(tmp_path):
    """The negative control: the fixture tells a swapped q/k from the real thing (by far more than ATOL)."""
    swap = {"query": "key", "key": "query"}

    def swap_layer_0_qk(name):
        parts = name.split("/")
        if "encoderblock_0" in parts and parts[-2] in swap and name.startswith("params/img/"):
            parts[-2] = swap[parts[-2]]
        return "/".join(parts)

    path = rewritten_npz(B16_LOOP / "checkpoint.npz", tmp_path / "c.npz", swap_layer_0_qk)
    assert errors_against(sm.from_pretrained(path), B16_LOOP)["image_features"] > 100 * ATOL


def test_big_vision_bad_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(sm.InputError, match="junk.npz: not a big_vision .npz"):
        sm.from_pretrained(tmp_path / "junk.npz")
    np.savez(tmp_path / "objects.npz", **{"params/t": np.array([object()], dtype=object)})
    with pytest.raises(sm.InputError, match="objects.npz: not a big_vision .npz checkpoint numpy can read"):
        sm.from_pretrained(tmp_path / "objects.npz")
    np.savez(tmp_path / "other.npz", **{"params/encoder/kernel": np.zeros((2, 2), np.float32)})
    with pytest.raises(sm.InputError, match="neither an image tower"):
        sm.from_pretrained(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz: no such file"):
        sm.from_pretrained(tmp_path / "missing.npz")
    arrays = dict(np.load(B16_LOOP / "checkpoint.npz"))
    del arrays["params/txt/Encoder_0/encoderblock_1/MlpBlock_0/Dense_1/bias"]
    arrays["params/txt/extra"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "holes.npz", **arrays)
    with pytest.raises(sm.InputError, match=r"(?s)2 problems.*missing: txt/Encoder_0/encoderblock_1/MlpBlock_0/"
                                            r"Dense_1/bias.*unexpected: txt/extra"):
        sm.from_pretrained(tmp_path / "holes.npz")


# ----------------------------------------------------------------------------------------------------------------
# open_clip / timm folders.

def open_clip_folder(tmp_path, gelu):
    """The fixture folder, its config saying what open_clip_config.json cannot for a trunk timm does not list.

    The trunk is a custom timm registration ("vit_siglip_fixture_b16_*"), so its heads and GELU are written where
    open_clip passes extra kwargs to timm (vision_cfg.timm_model_kwargs), from the fixture's own record of them.
    gelu="exact" takes the fixture's exact-GELU variant of the config (same weights).
    """
    folder = Path(shutil.copytree(OPEN_CLIP, tmp_path / "open_clip"))
    config = json.loads((folder / "open_clip_config.json").read_text())
    if gelu == "exact":
        config["model_cfg"] = config["exact_gelu_variant"]["model_cfg"]
        kwargs = config["exact_gelu_variant"]["timm_kwargs"]
    else:
        kwargs = config["timm_trunk"]["kwargs"]
    config["model_cfg"]["vision_cfg"]["timm_model_kwargs"] = {k: kwargs[k] for k in ("num_heads", "act_layer")
                                                              if k in kwargs}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("gelu,outputs", [("tanh", "outputs.npz"), ("exact", "outputs_exact_gelu.npz")])
def test_open_clip_reproduces_open_clip(gelu, outputs, attn, tmp_path):
    model = sm.from_pretrained(open_clip_folder(tmp_path, gelu), attn_implementation=attn)
    want_act = {"tanh": "gelu_pytorch_tanh", "exact": "gelu"}[gelu]
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == want_act
    assert_matches(errors_against(model, OPEN_CLIP, outputs))


def test_open_clip_with_the_other_gelu_is_noticed(tmp_path):
    """Run with exact GELU, compared with the tanh outputs: 5e-4 off, what the tolerance is there to catch."""
    error = max(errors_against(sm.from_pretrained(open_clip_folder(tmp_path, "exact")), OPEN_CLIP).values())
    assert error > 10 * ATOL


def test_open_clip_known_trunk_names(tmp_path):
    """timm's own SigLIP entries give heads and GELU by name: base/16 at 224 runs 12 heads, exact GELU."""
    config = sm.open_clip_config({"vision_cfg": {"timm_model_name": "vit_base_patch16_siglip_224", "timm_pool": "map",
                                                 "timm_proj": "none", "image_size": 224},
                                  "text_cfg": {"heads": 12, "pool_type": "last", "no_causal_mask": True,
                                               "proj_bias": True, "norm_kwargs": {"eps": 1e-6}}},
                                 base_open_clip_shapes(), "cfg")
    assert (config.vision_config.num_attention_heads, config.vision_config.hidden_act) == (12, "gelu")
    assert (config.text_config.hidden_act, config.text_config.layer_norm_eps) == ("gelu", 1e-6)


def base_open_clip_shapes():
    """The tensor shapes of hf-hub:timm/ViT-B-16-SigLIP (first layers only: enough to read the config)."""
    return {"visual.trunk.patch_embed.proj.weight": (768, 3, 16, 16), "visual.trunk.pos_embed": (1, 196, 768),
            "visual.trunk.blocks.0.mlp.fc1.weight": (3072, 768), "text.token_embedding.weight": (32000, 768),
            "text.transformer.resblocks.0.mlp.c_fc.weight": (3072, 768), "text.positional_embedding": (64, 768),
            "text.text_projection.weight": (768, 768)}


def test_open_clip_refusals(tmp_path):
    folder = Path(shutil.copytree(OPEN_CLIP, tmp_path / "oc"))
    with pytest.raises(sm.InputError, match="timm trunk 'vit_siglip_fixture_b16_tanh' is not one of timm's SigLIP"):
        sm.from_pretrained(folder)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["timm_pool"] = "avg"
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(sm.InputError, match=r"not an open_clip SigLIP.*vision_cfg.timm_pool='avg'"):
        sm.from_pretrained(folder)
    (folder / "open_clip_model.safetensors").rename(folder / "open_clip_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="found open_clip_pytorch_model.bin: pickles"):
        sm.from_pretrained(folder)


# ----------------------------------------------------------------------------------------------------------------
# Whatever was loaded, save_pretrained writes a folder transformers loads with the same outputs.

@pytest.mark.parametrize("source", ["b16_loop", "so400m_scan", "open_clip exact"])
def test_converted_folders_run_the_same_in_transformers(source, tmp_path):
    if source == "open_clip exact":
        fixture, outputs = OPEN_CLIP, "outputs_exact_gelu.npz"
        model = sm.from_pretrained(open_clip_folder(tmp_path, "exact"))
    else:
        fixture, outputs = FIXTURES / "big_vision" / source, "outputs.npz"
        model = sm.from_pretrained(fixture / "checkpoint.npz")
    model.save_pretrained(tmp_path / "hf")
    theirs = transformers.SiglipModel.from_pretrained(tmp_path / "hf").eval()
    inputs, want = np.load(fixture / "inputs.npz"), np.load(fixture / outputs)
    with torch.no_grad():
        out = theirs(input_ids=torch.from_numpy(inputs["input_ids"]),
                     pixel_values=torch.from_numpy(inputs["pixel_values"]))
    assert max_abs(out.logits_per_image, torch.from_numpy(want["logits_per_image"])) <= ATOL
    assert max_abs(out.image_embeds, torch.from_numpy(want["image_embeds"])) <= ATOL
    assert max_abs(out.text_embeds, torch.from_numpy(want["text_embeds"])) <= ATOL
