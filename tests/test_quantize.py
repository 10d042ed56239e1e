"""siglip_min.quantize: the arithmetic against its definition (written out here in NumPy), the shipped trained
model's embeddings and zero-shot answers against its float32 self on fresh drawings, the error per layer kind through
parity.py, quantized checkpoints saved and loaded, and the errors a user meets."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors.torch import load_file, save_file

import parity
import siglip_min as sm
from hub import InputError
from preprocess import SiglipImageProcessor
from shapes import CLASSES, caption
from test_shipped_model import SHIPPED, fresh_drawings
from tokenizer import SiglipTokenizer

PATHS = {  # name: quantize() arguments
    "int8": dict(bits=8),
    "int4 group 64": dict(bits=4, group_size=64),
    "int4 group 128": dict(bits=4, group_size=128),
    "int8 dynamic activations": dict(bits=8, dynamic_activations=True),
}
TARGETS = {8: (0.999, 0.99), 4: (0.99, 0.97)}  # bits: (embedding cosine to float32, zero-shot top-1 agreement)
FLOORS = {8: 0.998, 4: 0.98}  # bits: the smallest cosine any one embedding may have
QUANTIZED_SEED = 20261128  # fresh drawings: neither training (seeds 0, 1) nor test_shipped_model uses it


def numpy_quantized(weight, bits, group_size):
    """The definition: symmetric round to nearest, max |w| of each group of group_size columns onto 2^(bits-1) - 1."""
    w = np.asarray(weight, dtype=np.float32)
    groups = w.reshape(w.shape[0], -1, group_size or w.shape[1])
    qmax = np.float32(2 ** (bits - 1) - 1)
    scales = np.abs(groups).max(axis=-1) / qmax
    scales = np.where(scales > 0, scales, np.float32(1))
    codes = np.clip(np.round(groups / scales[..., None]), -qmax, qmax)
    return codes.reshape(w.shape).astype(np.int8), scales.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), groups=st.integers(1, 4), group_half=st.integers(1, 8), bits=st.sampled_from([8, 4]),
       per_row=st.booleans(), seed=st.integers(0, 2**16), zero_row=st.booleans())
def test_codes_and_scales_follow_the_definition(rows, groups, group_half, bits, per_row, seed, zero_row):
    group_size = None if per_row else 2 * group_half
    weight = torch.from_numpy(np.random.default_rng(seed).normal(0, 0.05, (rows, groups * 2 * group_half)).astype(np.float32))
    if zero_row:
        weight[0] = 0
    table = sm.QuantizedTable(weight, bits, group_size)
    codes, scales = numpy_quantized(weight.numpy(), bits, group_size)
    assert torch.equal(table.integer_codes(), torch.from_numpy(codes))
    assert torch.equal(table.scales, torch.from_numpy(scales))
    expanded = np.repeat(scales, codes.shape[1] // scales.shape[1], axis=1)
    assert np.all(np.abs(table.weight.numpy() - weight.numpy()) <= expanded / 2 * (1 + 1e-6))  # within half a step
    assert table.codes.dtype == (torch.uint8 if bits == 4 else torch.int8)
    assert table.codes.shape == (rows, codes.shape[1] // (2 if bits == 4 else 1))


def test_int4_packing_puts_even_columns_in_the_low_bits():
    codes = torch.tensor([[-7, 7, 0, -1]], dtype=torch.int8)
    packed = sm.pack_int4(codes)
    assert packed.tolist() == [[(-7 + 8) | ((7 + 8) << 4), (0 + 8) | ((-1 + 8) << 4)]]
    every = torch.arange(-7, 8, dtype=torch.int8).repeat(1, 2)  # (1, 30)
    assert torch.equal(sm.unpack_int4(sm.pack_int4(every)), every)


@pytest.mark.parametrize("bits, group_size", [(8, None), (4, 4), (8, 4)])
def test_quantized_linear_and_table_use_the_dequantized_weight(bits, group_size):
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 5)
    codes, scales = numpy_quantized(linear.weight.detach().numpy(), bits, group_size)
    weight = codes.astype(np.float32).reshape(5, scales.shape[1], -1) * scales[..., None]
    x = torch.randn(2, 3, 8)
    want = x.numpy() @ weight.reshape(5, 8).T + linear.bias.detach().numpy()
    got = sm.QuantizedLinear(linear, bits, group_size)(x)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-6, atol=1e-6)
    ids = torch.tensor([[4, 0, 4], [1, 2, 3]])
    table = sm.QuantizedTable(linear.weight.detach(), bits, group_size)
    np.testing.assert_array_equal(table[ids].numpy(), weight.reshape(5, 8)[ids.numpy()])


@pytest.fixture(scope="module")
def drawings():
    """500 fresh drawings' pixels, the 32 captions, and the float32 model's image and text embeddings and top-1."""
    tokenizer, processor = SiglipTokenizer.from_pretrained(SHIPPED), SiglipImageProcessor.from_pretrained(SHIPPED)
    images, _ = fresh_drawings(500, QUANTIZED_SEED)
    pixels, captions = processor(images), [caption(colour, shape) for colour, shape in CLASSES]
    model = sm.from_pretrained(SHIPPED)
    images, texts = sm.embed_pixels(model, pixels), sm.embed_texts(model, tokenizer, captions)
    return pixels, tokenizer, captions, images, texts, (images @ texts.T).argmax(dim=1)


@pytest.mark.parametrize("path", PATHS)
def test_shipped_model_quantized_agrees_with_float32(drawings, path):
    """The issue's targets on the mean cosine over 500 images and over the 32 captions, and top-1 agreement; no single
    embedding below FLOORS (the smallest measured: int4 group 128 0.987 on one image, int8 weights and activations
    0.9997)."""
    pixels, tokenizer, captions, float_images, float_texts, float_top1 = drawings
    model = sm.quantize(sm.from_pretrained(SHIPPED), **PATHS[path])
    images, texts = sm.embed_pixels(model, pixels), sm.embed_texts(model, tokenizer, captions)
    bits = PATHS[path]["bits"]
    cosine, agreement = TARGETS[bits]
    image_cosine, text_cosine = (images * float_images).sum(1), (texts * float_texts).sum(1)
    assert image_cosine.mean() >= cosine and text_cosine.mean() >= cosine, (image_cosine.mean(), text_cosine.mean())
    assert min(image_cosine.min(), text_cosine.min()) >= FLOORS[bits], (image_cosine.min(), text_cosine.min())
    assert ((images @ texts.T).argmax(dim=1) == float_top1).float().mean() >= agreement


# The largest relative RMS error (parity.error_growth) allowed per kind of activation, on the shipped model with
# seeded inputs; measured: int8 weights at most 0.0098 (attention), int4 group 64 0.244 (an MLP output), int8
# weights and activations 0.082 (an MLP output). Embeddings: the text tower's token table is quantized too.
LAYER_BOUNDS = {
    "int8": {"embeddings": 0.01, "attention": 0.02, "attention_residual": 0.02, "mlp": 0.02, "block": 0.02,
             "final norm": 0.02, "pooled": 0.02, "embeds": 0.01, "logits": 0.01},
    "int4 group 64": {"embeddings": 0.1, "attention": 0.2, "attention_residual": 0.15, "mlp": 0.35, "block": 0.15,
                      "final norm": 0.15, "pooled": 0.12, "embeds": 0.1, "logits": 0.08},
    "int8 dynamic activations": {"embeddings": 0.01, "attention": 0.1, "attention_residual": 0.06, "mlp": 0.15,
                                 "block": 0.06, "final norm": 0.05, "pooled": 0.03, "embeds": 0.03, "logits": 0.02},
}


def layer_kind(name):
    """'embeddings', 'attention', 'attention_residual', 'mlp', 'block', 'final norm', 'pooled', 'embeds', 'logits'."""
    last = name.rsplit(".", 1)[-1]
    if ".layers." in name:
        return "block" if last.isdigit() else last
    return {"post_layernorm": "final norm", "final_layer_norm": "final norm", "features": "pooled",
            "image_embeds": "embeds", "text_embeds": "embeds"}.get(last, "logits" if last.startswith("logits")
                                                                   else last)


@pytest.fixture(scope="module")
def shipped_trace():
    model = sm.from_pretrained(SHIPPED)
    pixels, ids = parity.seeded_inputs(model.config.vision_config, model.config.text_config, batch=4)
    inputs = {"pixel_values": torch.from_numpy(pixels), "input_ids": torch.from_numpy(ids)}
    return inputs, parity.trace(model, **inputs)


@pytest.mark.parametrize("path", LAYER_BOUNDS)
def test_error_per_layer_kind_through_parity(shipped_trace, path):
    inputs, reference = shipped_trace
    rows = parity.error_growth(reference, parity.trace(sm.quantize(sm.from_pretrained(SHIPPED), **PATHS[path]), **inputs))
    assert [row["name"] for row in rows] == list(reference)  # every traced activation, in pipeline order
    assert rows[0]["name"] == "vision.patch_embeds" and rows[0]["rel_rms"] == 0  # the convolution is not quantized
    over = [(row["name"], round(row["rel_rms"], 4)) for row in rows[1:]
            if row["rel_rms"] > LAYER_BOUNDS[path][layer_kind(row["name"])]]
    assert not over, over


def test_parity_quantized_command_prints_every_layer(capsys):
    assert parity.main(["quantized", "--model", str(SHIPPED), "--bits", "4", "--group-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "B: siglip-min, 4-bit weights, groups of 128" in out
    assert "vision.layers.3.mlp" in out and "largest relative error:" in out and "image_embeds cosine 0.99" in out


@pytest.mark.parametrize("path", ["int8", "int4 group 64"])
def test_saved_quantized_folder_loads_to_the_same_outputs(tmp_path, path):
    model = sm.quantize(sm.from_pretrained(SHIPPED), **PATHS[path])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    bits = PATHS[path]["bits"]
    assert config["siglip_min"] == {"template": "{}", "quantization": {"bits": bits, "group_size": model.quantization["group_size"]}}
    tensors = load_file(tmp_path / "model.safetensors")
    codes = tensors["vision_model.encoder.layers.0.self_attn.q_proj.weight.codes"]
    assert codes.dtype == (torch.uint8 if bits == 4 else torch.int8) and "text_model.embeddings.token_embedding.weight.codes" in tensors
    assert "vision_model.embeddings.patch_embedding.weight" in tensors  # kept in float
    loaded = sm.from_pretrained(tmp_path)
    pixels, ids = parity.seeded_inputs(model.config.vision_config, model.config.text_config)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(pixels))
        got = loaded(torch.from_numpy(ids), torch.from_numpy(pixels))
    assert torch.equal(want.logits_per_text, got.logits_per_text)
    if bits == 8:  # int8 activations from a saved int8 folder: the same codes, so the same model as quantizing anew
        fast = sm.quantize(loaded, bits=8, dynamic_activations=True)
        direct = sm.quantize(sm.from_pretrained(SHIPPED), bits=8, dynamic_activations=True)
        with torch.no_grad():
            assert torch.equal(fast(torch.from_numpy(ids), torch.from_numpy(pixels)).logits_per_text,
                               direct(torch.from_numpy(ids), torch.from_numpy(pixels)).logits_per_text)


def test_int4_file_is_under_a_fifth_of_float32(tmp_path):
    """A model with base's proportions at a quarter of its width: linears and the token table are most of it."""
    config = sm.SiglipConfig(text_config=sm.SiglipTextConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=2,
                                                             num_attention_heads=3, vocab_size=8000),
                             vision_config=sm.SiglipVisionConfig(hidden_size=192, intermediate_size=768,
                                                                 num_hidden_layers=2, num_attention_heads=3))
    torch.manual_seed(0)
    model = sm.SiglipModel(config)
    model.save_pretrained(tmp_path / "float32")
    sm.quantize(model, bits=4, group_size=64).save_pretrained(tmp_path / "int4")
    ratio = os.path.getsize(tmp_path / "int4" / "model.safetensors") / os.path.getsize(tmp_path / "float32" / "model.safetensors")
    assert ratio <= 0.2, ratio


def test_bfloat16_model_quantizes_and_stays_close():
    model = sm.from_pretrained(SHIPPED, dtype=torch.bfloat16)
    float_model = sm.from_pretrained(SHIPPED)
    pixels, _ = parity.seeded_inputs(model.config.vision_config, None, batch=3)
    quantized = sm.quantize(model, bits=8)
    assert quantized.vision.blocks[0].attn.q.scales.dtype == torch.bfloat16
    with torch.no_grad():
        got = quantized.get_image_features(torch.from_numpy(pixels).bfloat16()).float()
        want = float_model.get_image_features(torch.from_numpy(pixels))
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_weight_only_quantization_runs_on_cuda():
    model = sm.quantize(sm.from_pretrained(SHIPPED), bits=4).to("cuda")
    pixels, _ = parity.seeded_inputs(model.config.vision_config, None, batch=2)
    with torch.no_grad():
        got = model.get_image_features(torch.from_numpy(pixels).cuda()).cpu()
        want = sm.quantize(sm.from_pretrained(SHIPPED), bits=4).get_image_features(torch.from_numpy(pixels))
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("arguments, message", [
    (dict(bits=3), "bits=3: siglip-min quantizes to 8 or 4 bits"),
    (dict(bits=4, group_size=7), "group_size=7: expected an even int"),
    (dict(bits=4, group_size=96), "group_size=96 does not divide vision.blocks.0.attn.q's 128 input features"),
    (dict(bits=4, dynamic_activations=True), "it needs bits=8 and group_size=None"),
])
def test_bad_settings_are_named(arguments, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        sm.quantize(sm.from_pretrained(SHIPPED), **arguments)


def test_quantizing_twice_is_refused_unless_it_adds_int8_activations():
    model = sm.quantize(sm.from_pretrained(SHIPPED), bits=4)
    with pytest.raises(InputError, match=r"already quantized \({'bits': 4, 'group_size': 64"):
        sm.quantize(model, bits=8)
    assert sm.quantize(model, bits=4) is model  # the same settings again: nothing to do


def test_a_quantized_file_that_does_not_fit_is_named(tmp_path):
    sm.quantize(sm.from_pretrained(SHIPPED), bits=8).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    name = "text_model.encoder.layers.1.mlp.fc2.weight.codes"
    tensors[name] = tensors[name].float()
    save_file(tensors, path)
    with pytest.raises(InputError, match=f"dtype: {name} is float32, quantized codes are int8"):
        sm.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["siglip_min"]["quantization"] = {"bits": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="siglip_min.quantization must be"):
        sm.from_pretrained(tmp_path)
