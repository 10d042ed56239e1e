"""parity.py as a porting engineer meets it: a plain NumPy port (tests/numpy_port.py) with one planted bug at a time,
written in float32, float16 or bfloat16, driven through the real `export` and `compare` commands. Each case asserts
the exit status, the first mismatch of each tower in the summary, and the hint."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import numpy_port
import parity
import siglip_min as sm
from oracle import hf_config, save_random_siglip

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_random_siglip(tmp_path_factory.mktemp("siglip"), hf_config())  # 2 layers a tower, 4 heads


@pytest.fixture(scope="module")
def golden(folder, tmp_path_factory):
    """A golden file from the real export command: seeded pixels, ten token ids a text (padded to 16 by export)."""
    pixels, ids = parity.seeded_inputs(*towers_of(sm.SiglipConfig.from_pretrained(folder)), batch=2)
    work = tmp_path_factory.mktemp("golden")
    np.save(work / "pixels.npy", pixels)
    path = work / "golden.safetensors"
    rows = [",".join(map(str, row[:10])) for row in ids]
    assert parity.main(["export", "--model", str(folder), "--pixel-values", str(work / "pixels.npy"),
                        "--input-ids", *rows, "--out", str(path)]) == 0
    return path


def towers_of(config):
    return config.vision_config, config.text_config


def heads(folder):
    config = json.loads((folder / "config.json").read_text())
    return {tower: config[f"{tower}_config"]["num_attention_heads"] for tower in ("vision", "text")}


def compare(capsys, golden, port, *extra):
    """(exit status, {part: its summary line}, every line) of `parity.py compare golden port`."""
    capsys.readouterr()
    status = parity.main(["compare", str(golden), str(port), *extra])
    lines = capsys.readouterr().out.splitlines()
    parts = {line.split(":")[0]: line.split(": ", 1)[1] for line in lines
             if line.split(":")[0] in ("inputs", "vision", "text", "outputs")}
    return status, parts, lines


def port_file(folder, golden, tmp_path, bugs=(), dtype="float32"):
    tensors, _ = parity.read_golden(golden)
    trace = numpy_port.run(folder, tensors, heads(folder), bugs)
    numpy_port.write(tmp_path / "port.safetensors", trace, DTYPES[dtype])
    return tmp_path / "port.safetensors"


# planted bug: (vision's first mismatch, text's first mismatch, a fragment of the hint or of the why)
PLANTED = {
    "exact_gelu": ("vision.layers.0.mlp", "text.layers.0.mlp", ""),
    "column_major_patches": ("vision.patch_embeds", None, "patch grid transposed"),
    "transposed_kernel": ("vision.patch_embeds", None, ""),
    "swapped_heads": ("vision.layers.0.attention", "text.layers.0.attention", "heads in the order [3, 2, 1, 0]"),
    "pool_first": (None, "text.pooled", "equals text.final_layer_norm at position 0"),
    "no_attention_scale": ("vision.layers.0.attention", "text.layers.0.attention", ""),
    "names_one_off": ("vision.layers.0", "text.layers.0", "equals A's vision.embeddings: written one name off"),
    "logit_scale_not_exp": (None, None, "x A - 3.6"),  # log(t) cos + b against t cos + b, t = exp(2.3)
}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_named_with_its_hint(capsys, folder, golden, tmp_path, bug, dtype):
    """The port computes in float64 and writes dtype: rounding alone passes, the bug does not, in every dtype."""
    status, parts, lines = compare(capsys, golden, port_file(folder, golden, tmp_path, (bug,), dtype))
    vision, text, says = PLANTED[bug]
    last = lines[-1]
    assert status == 1
    for part, first in (("vision", vision), ("text", text)):
        assert parts[part] == "all written names match" if first is None else \
            parts[part].startswith(f"first mismatch {first} ("), (part, parts[part])
    first = vision or text or "logits_per_image"
    assert last.startswith(f"first mismatch: {first} (") and says in last, last


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_correct_port_matches_in_every_dtype(capsys, folder, golden, tmp_path, dtype):
    status, _, lines = compare(capsys, golden, port_file(folder, golden, tmp_path, (), dtype))
    assert (status, lines[-1]) == (0, "all match")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_layer_norm_eps_is_found_in_every_dtype(capsys, folder, golden, tmp_path, dtype):
    """eps 1e-5 moves the text tower's first LayerNorm (small-variance token embeddings) the most."""
    status, parts, _ = compare(capsys, golden, port_file(folder, golden, tmp_path, ("eps_1e-5",), dtype))
    assert status == 1 and parts["text"].startswith("first mismatch text.layers.0.attention (")


def test_channels_last_pixels_are_recognised_not_failed(capsys, folder, golden, tmp_path):
    status, _, lines = compare(capsys, golden, port_file(folder, golden, tmp_path, ("channels_last_pixels",)))
    assert (status, lines[-1]) == (0, "all match")
    row = next(line for line in lines if line.startswith("pixel_values"))
    assert row.endswith("ok  (written channels-last (B, H, W, C))"), row


def test_a_partial_port_passes_on_what_it_wrote(capsys, folder, golden, tmp_path):
    """A port of the vision tower alone, with a debug name of its own: the rest is listed, not failed."""
    tensors, _ = parity.read_golden(golden)
    trace = numpy_port.run(folder, tensors, heads(folder))
    vision_only = {name: x for name, x in trace.items() if name.startswith("vision.") or name == "pixel_values"}
    numpy_port.write(tmp_path / "port.safetensors", {**vision_only, "debug.my_patches": trace["vision.patch_embeds"]})
    status, parts, lines = compare(capsys, golden, tmp_path / "port.safetensors")
    not_written = sum(name not in vision_only for name in tensors)
    assert (status, lines[-1]) == (0, f"all written names match ({not_written} not written)")
    assert any(line.startswith("debug.my_patches") and line.endswith("extra") for line in lines)
    assert parts["text"] == "all written names match"


def test_unpadded_input_ids_are_said_to_be_unpadded(capsys, folder, golden, tmp_path):
    tensors, _ = parity.read_golden(golden)
    trace = numpy_port.run(folder, tensors, heads(folder))
    numpy_port.write(tmp_path / "port.safetensors", {**trace, "input_ids": trace["input_ids"][:, :10]})
    status, parts, _ = compare(capsys, golden, tmp_path / "port.safetensors")
    assert status == 1 and "stop at 10 tokens: the golden's are padded to 16" in parts["inputs"]


def test_export_pads_input_ids_as_the_tokenizer_and_says_so(capsys, folder, tmp_path):
    pixels, _ = parity.seeded_inputs(*towers_of(sm.SiglipConfig.from_pretrained(folder)), batch=1)
    np.save(tmp_path / "pixels.npy", pixels)
    args = ["export", "--model", str(folder), "--pixel-values", str(tmp_path / "pixels.npy"), "--input-ids", "5,9,1"]
    assert parity.main([*args, "--out", str(tmp_path / "padded.safetensors")]) == 0
    assert "padded --input-ids from 3 to 16 ids with the pad id 1" in capsys.readouterr().out
    assert parity.read_golden(tmp_path / "padded.safetensors")[0]["input_ids"].tolist() == [[5, 9] + [1] * 14]
    assert parity.main([*args, "--no-pad", "--out", str(tmp_path / "as_given.safetensors")]) == 0
    assert parity.read_golden(tmp_path / "as_given.safetensors")[0]["input_ids"].tolist() == [[5, 9, 1]]


# A port that computes in float16/bfloat16 (siglip-min itself in that dtype stands in for one): judged against
# siglip-min's own error in the dtype, NOISE_FACTOR times it at most.

def low_precision_trace(folder, golden, dtype, change=None):
    tensors, _ = parity.read_golden(golden)
    model = sm.SiglipModel.from_pretrained(folder, dtype=DTYPES[dtype])
    if change:
        change(model)
    inputs = {name: torch.from_numpy(tensors[name]) for name in ("pixel_values", "input_ids")}
    return {**{name: tensors[name] for name in inputs}, **parity.trace(model, **inputs)}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_port_computing_in_low_precision_is_judged_against_siglip_mins_own_noise(capsys, folder, golden, tmp_path,
                                                                                     dtype):
    numpy_port.write(tmp_path / "port.safetensors", low_precision_trace(folder, golden, dtype), DTYPES[dtype])
    status, _, lines = compare(capsys, golden, tmp_path / "port.safetensors")
    assert (status, lines[-1]) == (0, "all match")

    def bigger_mlp(model):
        with torch.no_grad():
            model.vision.blocks[1].mlp.fc2.weight.mul_(1.05)
    numpy_port.write(tmp_path / "port.safetensors", low_precision_trace(folder, golden, dtype, bigger_mlp),
                     DTYPES[dtype])
    status, parts, _ = compare(capsys, golden, tmp_path / "port.safetensors")
    assert status == 1 and parts["vision"].startswith("first mismatch vision.layers.1.mlp (RMS error")
    assert f"x siglip-min's own {dtype} error" in parts["vision"] and parts["text"] == "all written names match"


@pytest.mark.xfail(strict=True, reason="below the noise floor: an exact GELU moves bfloat16 activations by about 1e-4 "
                                       "RMS, bfloat16 rounding by 2e-3 to 1e-2 (measured per layer)")
def test_exact_gelu_in_a_port_computing_in_bfloat16_is_found(capsys, folder, golden, tmp_path, monkeypatch):
    monkeypatch.setattr(sm.F, "gelu", lambda x, approximate="none": F.gelu(x))
    numpy_port.write(tmp_path / "port.safetensors", low_precision_trace(folder, golden, "bfloat16"), torch.bfloat16)
    monkeypatch.undo()
    assert compare(capsys, golden, tmp_path / "port.safetensors")[0] == 1


def test_low_precision_reference_from_a_file_when_the_model_is_elsewhere(capsys, folder, golden, tmp_path):
    tensors, metadata = parity.read_golden(golden)
    moved = tmp_path / "golden.safetensors"
    parity.write_golden(moved, tensors, {**metadata, "model_folder": str(tmp_path / "gone")})
    numpy_port.write(tmp_path / "port.safetensors", low_precision_trace(folder, golden, "bfloat16"), torch.bfloat16)
    assert parity.main(["compare", str(moved), str(tmp_path / "port.safetensors")]) == 2
    assert "export one with --dtype bfloat16 from the same inputs and pass it with --noise" in capsys.readouterr().err
    np.save(tmp_path / "pixels.npy", tensors["pixel_values"].astype(np.float32))
    ids = [",".join(map(str, row)) for row in tensors["input_ids"].tolist()]
    low = str(tmp_path / "low.safetensors")
    assert parity.main(["export", "--model", str(folder), "--dtype", "bfloat16", "--pixel-values",
                        str(tmp_path / "pixels.npy"), "--input-ids", *ids, "--out", low]) == 0
    status, _, lines = compare(capsys, moved, tmp_path / "port.safetensors", "--noise", low)
    assert (status, lines[-1]) == (0, "all match")


def test_nan_is_counted_and_the_error_taken_over_the_finite_values(capsys, folder, golden, tmp_path):
    tensors, _ = parity.read_golden(golden)
    trace = numpy_port.run(folder, tensors, heads(folder))
    trace["text.features"][0, :3] = np.nan
    numpy_port.write(tmp_path / "port.safetensors", trace)
    status, parts, _ = compare(capsys, golden, tmp_path / "port.safetensors")
    assert status == 1 and parts["text"].startswith("first mismatch text.features (3 NaN and 0 infinite values; "
                                                    "max abs over the finite ones ")
