"""SigLIP 2 NaFlex through the tools: cli.py embed and convert, parity.py check-hf, export and compare (padded
patches left out), against transformers' Siglip2Model and Siglip2ImageProcessorPil."""
import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import cli
import parity

PATCH, NUM_PATCHES = 8, 16


@pytest.fixture(scope="module")
def naflex_folder(tmp_path_factory):
    """A random transformers Siglip2Model (weights perturbed: no zero biases) with its NaFlex preprocessor config."""
    folder = tmp_path_factory.mktemp("naflex")
    torch.manual_seed(0)
    config = transformers.Siglip2Config(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, projection_size=48),
        vision_config=dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=PATCH, num_patches=NUM_PATCHES))
    model = transformers.Siglip2Model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    transformers.Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A wide, a tall and a tiny image: every one padded differently."""
    folder, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(3)
    paths = [folder / f"{i}.png" for i in range(3)]
    for path, size in zip(paths, [(40, 300), (90, 20), (3, 5)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return paths


def transformers_embeds(folder, paths, max_num_patches=None):
    model = transformers.Siglip2Model.from_pretrained(folder).eval()
    processor = transformers.Siglip2ImageProcessorPil.from_pretrained(folder)
    inputs = processor([Image.open(p) for p in paths], return_tensors="pt",
                       **({"max_num_patches": max_num_patches} if max_num_patches else {}))
    with torch.no_grad():
        return torch.nn.functional.normalize(model.get_image_features(**inputs).pooler_output, dim=-1).numpy()


@pytest.mark.parametrize("max_num_patches", [None, 20])
def test_embed_matches_transformers(naflex_folder, images, tmp_path, max_num_patches):
    extra = ["--max-num-patches", str(max_num_patches)] if max_num_patches else []
    assert cli.main(["embed", *map(str, images), "--out", str(tmp_path / "e.npy"), "--model", str(naflex_folder),
                     *extra]) == 0
    want = transformers_embeds(naflex_folder, images, max_num_patches)
    assert np.abs(np.load(tmp_path / "e.npy") - want).max() <= 1e-5


def test_max_num_patches_is_for_naflex_only(images, tmp_path, capsys):
    assert cli.main(["embed", str(images[0]), "--out", str(tmp_path / "e.npy"), "--max-num-patches", "16"]) == 2
    assert "--max-num-patches is for NaFlex models" in capsys.readouterr().err


def test_convert_keeps_naflex(naflex_folder, images, tmp_path):
    assert cli.main(["convert", str(naflex_folder), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("siglip2", ["Siglip2Model"])
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert (processor["image_processor_type"], processor["max_num_patches"]) == ("Siglip2ImageProcessor", 64)
    want = transformers_embeds(naflex_folder, images)
    assert np.abs(transformers_embeds(tmp_path / "out", images) - want).max() <= 1e-5


@pytest.mark.parametrize("inputs", [[], ["--image", "IMAGES", "--max-num-patches", "24"]])
def test_check_hf_passes(naflex_folder, images, inputs, capsys):
    args = [x for item in inputs for x in ([str(p) for p in images] if item == "IMAGES" else [item])]
    assert parity.main(["check-hf", "--model", str(naflex_folder), *args]) == 0
    out = capsys.readouterr().out
    assert "NaFlex: vision rows compare the" in out and "vision.pooled" in out, out


def test_compare_leaves_padding_out(naflex_folder, images, tmp_path, capsys):
    """A port whose padded positions hold anything at all still matches; one wrong at a real patch does not."""
    golden = tmp_path / "golden.safetensors"
    assert parity.main(["export", "--model", str(naflex_folder), "--image", *map(str, images),
                        "--out", str(golden)]) == 0
    tensors, metadata = parity.read_golden(golden)
    padded = tensors["pixel_attention_mask"] == 0
    assert padded.any()  # the images are padded differently
    port = {name: (array.astype(np.float32) if array.dtype == np.float64 else array) for name, array in tensors.items()}
    for name in ("vision.embeddings", "vision.layers.0", "vision.post_layernorm"):
        port[name] = port[name].copy()
        port[name][padded] = 1e3  # garbage where the mask is 0
    parity.write_golden(tmp_path / "port.safetensors", port, {})
    assert parity.main(["compare", str(golden), str(tmp_path / "port.safetensors")]) == 0
    real_row = int(np.argwhere(~padded)[0][0]), int(np.argwhere(~padded)[0][1])
    port["vision.layers.0"][real_row] += 1e-2  # one real patch off
    parity.write_golden(tmp_path / "port.safetensors", port, {})
    assert parity.main(["compare", str(golden), str(tmp_path / "port.safetensors")]) == 1
    assert "vision.layers.0" in capsys.readouterr().out


def test_transformers_positional_order_gets_a_clear_error(naflex_folder, images):
    """transformers' Siglip2Model.forward takes (input_ids, pixel_values, pixel_attention_mask, spatial_shapes); ours
    keeps SigLIP's order (input_ids, pixel_values, attention_mask, interpolate_pos_encoding): NaFlex inputs by keyword."""
    import siglip_min as sm
    from preprocess import SiglipImageProcessor

    model = sm.from_pretrained(naflex_folder)
    arrays = [torch.from_numpy(a) for a in SiglipImageProcessor.from_pretrained(naflex_folder)(list(map(str, images)))]
    ids = torch.ones(len(images), 16, dtype=torch.long)
    with pytest.raises(sm.InputError, match="NaFlex inputs go by keyword"):
        model(ids, *arrays)
    out = model(ids, arrays[0], pixel_attention_mask=arrays[1], spatial_shapes=arrays[2])
    assert out.logits_per_image.shape == (len(images), len(images))
