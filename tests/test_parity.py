"""parity.py: traces against transformers' hidden states, golden files, the compare report and the command line."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import parity
import siglip_min as sm
from oracle import hf_config, load_hf, max_abs, save_random_siglip

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # float32 on CPU, every layer: parity.py's default
LAYERS = 3  # per tower: enough for a perturbed block with good blocks before and after it


def block_names(tower, layers):
    """Each block's parts, then its output: the heads before out_proj, x + attention, the MLP's output."""
    return [f"{tower}.layers.{i}{part}" for i in range(layers)
            for part in (".attention", ".attention_residual", ".mlp", "")]


def expected_names(layers=LAYERS):
    return ["pixel_values", "input_ids", "attention_mask", "vision.patch_embeds", "vision.embeddings",
            *block_names("vision", layers), "vision.post_layernorm", "vision.pooled",
            "text.embeddings", *block_names("text", layers), "text.final_layer_norm",
            "text.pooled", "text.features", "image_embeds", "text_embeds", "logits_per_image", "logits_per_text"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = hf_config(text=dict(num_hidden_layers=LAYERS), vision=dict(num_hidden_layers=LAYERS))
    return save_random_siglip(tmp_path_factory.mktemp("siglip"), config)


@pytest.fixture(scope="module")
def hf_model(folder):
    return load_hf(folder)


@pytest.fixture(scope="module")
def inputs():
    """Two images, three texts (so that logits are not square), a mask with padding."""
    g = torch.Generator().manual_seed(1)
    pixel_values = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    input_ids = torch.randint(0, 99, (3, 16), generator=g)
    attention_mask = torch.ones(3, 16, dtype=torch.int64)
    attention_mask[1, 9:] = 0
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


def as_numpy(inputs):
    return {name: t.numpy() for name, t in inputs.items()}


def cli(*args):
    return subprocess.run([sys.executable, str(REPO / "parity.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def assert_one_line_error(stderr, *fragments):
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    for fragment in fragments:
        assert fragment in stderr


def read_file(path):
    with safe_open(str(path), framework="np") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()


# ----------------------------------------------------------------------------------------------------------------
# Traces against transformers.

def test_transformers_hidden_states_are_embeddings_then_block_outputs(hf_model, inputs):
    """What trace_hf relies on, checked on transformers itself: [0] embeddings, [i + 1] block i, no final norm."""
    hf = hf_model
    px = inputs["pixel_values"]
    with torch.no_grad():
        out = hf.vision_model(pixel_values=px, output_hidden_states=True)
        hidden = out.hidden_states
        assert len(hidden) == LAYERS + 1
        assert max_abs(hidden[0], hf.vision_model.embeddings(px)) == 0
        for i, layer in enumerate(hf.vision_model.encoder.layers):
            assert max_abs(hidden[i + 1], layer(hidden[i], attention_mask=None)) == 0
        assert max_abs(hf.vision_model.post_layernorm(hidden[-1]), out.last_hidden_state) == 0
        assert max_abs(hidden[-1], out.last_hidden_state) > 0.1


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("masked", [False, True])
def test_trace_matches_transformers_every_layer(folder, hf_model, inputs, attn_implementation, masked):
    ours = sm.SiglipModel.from_pretrained(folder, attn_implementation=attn_implementation)
    hf = hf_model
    feed = inputs if masked else {**inputs, "attention_mask": None}
    got = parity.trace(ours, **feed)
    want = parity.trace_hf(hf, **feed)
    assert list(got) == list(want) == expected_names()[3:]
    errors = {name: float(np.abs(got[name] - want[name]).max()) for name in want}
    assert max(errors.values()) <= ATOL, errors
    assert all(a.dtype == np.float32 for a in got.values())
    with torch.no_grad():  # the pooled outputs are the public features, not just a slice of them
        image_features = hf.get_image_features(inputs["pixel_values"]).pooler_output
        text_features = hf.get_text_features(feed["input_ids"], attention_mask=feed["attention_mask"]).pooler_output
    assert max_abs(torch.from_numpy(got["vision.pooled"]), image_features) <= ATOL
    assert max_abs(torch.from_numpy(got["text.features"]), text_features) <= ATOL


def test_trace_of_one_tower_is_that_tower_of_the_full_trace(folder, inputs):
    model = sm.SiglipModel.from_pretrained(folder)
    full = parity.trace(model, **inputs)
    vision = parity.trace(model, pixel_values=inputs["pixel_values"])
    text = parity.trace(model, input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert list(vision) == [n for n in full if n.startswith("vision.")]
    assert list(text) == [n for n in full if n.startswith("text.")]
    for name, array in {**vision, **text}.items():
        np.testing.assert_array_equal(array, full[name])
    with pytest.raises(ValueError, match="pixel_values, input_ids or both"):
        parity.trace(model)


def test_pipeline_order_sorts_layers_numerically():
    names = ["logits_per_text", "text.layers.10", "vision.layers.10", "text.layers.9", "mine.extra", "input_ids",
             "vision.layers.2", "vision.pooled", "pixel_values", "text.features", "vision.patch_embeds"]
    assert sorted(names, key=parity.pipeline_position) == [
        "pixel_values", "input_ids", "vision.patch_embeds", "vision.layers.2", "vision.layers.10", "vision.pooled",
        "text.layers.9", "text.layers.10", "text.features", "logits_per_text", "mine.extra"]


# ----------------------------------------------------------------------------------------------------------------
# compare: the table and its last line.

def test_compare_tolerance_is_atol_plus_rtol_times_reference():
    a = {"x": np.array([0.0, 100.0])}
    rows = parity.compare(a, {"x": a["x"] + [5e-6, 5e-3]})  # 5e-6 <= 1e-5 and 5e-3 <= 1e-5 + 1e-4 * 100
    assert rows[0]["result"] == "ok"
    assert float(rows[0]["max_rel"]) == pytest.approx(5e-3 / 100, rel=1e-3)
    assert parity.compare(a, {"x": a["x"] + [2e-5, 0]})[0]["result"] == "FAIL"
    assert parity.compare(a, {"x": a["x"] + [2e-5, 0]}, atol=1e-4)[0]["result"] == "ok"
    assert parity.compare(a, {"x": np.array([1.0, np.nan])})[0]["result"] == "FAIL"


def test_compare_lists_one_sided_names_and_shape_mismatches_as_rows():
    x = np.ones((2, 4, 8), dtype=np.float32)
    a = {"vision.layers.0": x, "text.pooled": x[:, 0]}
    b = {"vision.layers.0": x[:, :3], "image_embeds": x[:, 0]}
    rows = parity.compare(a, b)
    assert [(r["name"], r["result"]) for r in rows] == [
        ("vision.layers.0", "SHAPE"), ("text.pooled", "not written"), ("image_embeds", "extra")]
    assert parity.format_report(rows).splitlines()[-1] == (
        "first mismatch: vision.layers.0 (shape (2, 4, 8) in A, (2, 3, 8) in B)")


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_perturbed_block_is_named_as_first_mismatch(folder, inputs, tmp_path, capsys, tower):
    model = sm.SiglipModel.from_pretrained(folder)
    parity.write_golden(tmp_path / "golden.safetensors", {**as_numpy(inputs), **parity.trace(model, **inputs)}, {})
    with torch.no_grad():
        getattr(model, tower).blocks[1].mlp.fc2.weight.mul_(1.01)
    parity.write_golden(tmp_path / "port.safetensors", {**as_numpy(inputs), **parity.trace(model, **inputs)}, {})
    assert parity.main(["compare", str(tmp_path / "golden.safetensors"), str(tmp_path / "port.safetensors")]) == 1
    report = capsys.readouterr().out.splitlines()
    assert report[-1].startswith(f"first mismatch: {tower}.layers.1.mlp (max abs ")  # fc2 is in the MLP
    results = {line.split()[0]: line.split()[-1] for line in report[3:-1] if line.startswith(("vision.", "text."))}
    assert results[f"{tower}.layers.0"] == "ok" and results[f"{tower}.layers.1.attention_residual"] == "ok"
    assert results[f"{tower}.layers.1.mlp"] == "FAIL" and results[f"{tower}.layers.1"] == "FAIL"
    other = "text" if tower == "vision" else "vision"
    assert all(result == "ok" for name, result in results.items() if name.startswith(other))


# ----------------------------------------------------------------------------------------------------------------
# The command line.

def test_export_then_compare_round_trip(folder, hf_model, inputs, tmp_path, capsys):
    np.save(tmp_path / "pixels.npy", inputs["pixel_values"].numpy())
    ids = [",".join(map(str, row)) for row in inputs["input_ids"].tolist()]
    mask = [",".join(map(str, row)) for row in inputs["attention_mask"].tolist()]
    golden = tmp_path / "out" / "golden.safetensors"
    done = cli("export", "--model", folder, "--pixel-values", tmp_path / "pixels.npy", "--input-ids", *ids,
               "--attention-mask", *mask, "--out", golden)
    assert done.returncode == 0, done.stderr

    tensors, metadata = read_file(golden)
    assert sorted(tensors, key=parity.pipeline_position) == expected_names()
    for name, array in as_numpy(inputs).items():
        np.testing.assert_array_equal(tensors[name], array)
    assert tensors["input_ids"].dtype == np.int64
    assert all(tensors[name].dtype == np.float32 for name in expected_names()[3:])
    trace = parity.trace(sm.SiglipModel.from_pretrained(folder), **inputs)
    assert max(float(np.abs(tensors[name] - trace[name]).max()) for name in trace) == 0
    assert metadata["model"] == str(folder) and metadata["dtype"] == "float32"
    assert metadata["attn_implementation"] == "sdpa" and metadata["torch"] == torch.__version__
    config = sm.SiglipConfig.from_hf(json.loads((folder / "config.json").read_text()))
    assert json.loads(metadata["config"]) == config.to_hf()
    assert metadata["siglip_min"] and metadata["tokenizer"] == "none (--input-ids)"

    assert parity.main(["compare", str(golden), str(golden)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "all match"
    # A port in another framework writes its own file with the same names: transformers stands in for one here.
    port = tmp_path / "port.safetensors"
    parity.write_golden(port, {**as_numpy(inputs), **parity.trace_hf(hf_model, **inputs)}, {})
    assert parity.main(["compare", str(golden), str(port)]) == 0


def test_check_hf_prints_every_layer_and_all_match(folder):
    done = cli("check-hf", "--model", folder)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[3:-5]] == [n for n in expected_names() if n != "attention_mask"]
    assert lines[-5:-1] == [f"{part}: all written names match" for part in ("inputs", "vision", "text", "outputs")]
    assert lines[-1] == "all match" and "Traceback" not in done.stderr


def test_unreadable_file_is_one_line_without_traceback(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_text("not a safetensors file")
    done = cli("compare", garbage, garbage)
    assert done.returncode == 2 and not done.stdout
    assert_one_line_error(done.stderr, "not a readable safetensors file")


@pytest.mark.parametrize("args, message", [
    (["compare", "{tmp}/missing.safetensors", "{tmp}/missing.safetensors"], "no such file"),
    (["export", "--model", "{folder}", "--text", "a cat", "--out", "{tmp}/x.safetensors"],
     "has no tokenizer (spiece.model or tokenizer.model); pass token ids with --input-ids"),
    (["export", "--model", "{folder}", "--out", "{tmp}/x.safetensors"], "no inputs"),
    (["export", "--model", "{folder}", "--input-ids", "5,x", "--out", "{tmp}/x.safetensors"], "comma-separated"),
    (["export", "--model", "{folder}", "--input-ids", "5,9", "1", "--out", "{tmp}/x.safetensors"], "same length"),
    (["export", "--model", "{folder}", "--input-ids", "5,999", "--out", "{tmp}/x.safetensors"], "input_ids must lie"),
    (["export", "--model", "{folder}", "--pixel-values", "{tmp}/bad.npy", "--out", "{tmp}/out"], "not a .npy"),
    (["export", "--model", "{folder}", "--pixel-values", "{tmp}/3d.npy", "--out", "{tmp}/out"], "(B, C, H, W)"),
    (["export", "--model", "{tmp}/no-model", "--input-ids", "5", "--out", "{tmp}/x.safetensors"], "not found"),
    (["check-hf", "--model", "{folder}", "--attention-mask", "1,1"], "needs --input-ids"),
])
def test_bad_inputs_give_clear_errors(folder, tmp_path, capsys, args, message):
    (tmp_path / "bad.npy").write_text("not numpy")
    np.save(tmp_path / "3d.npy", np.zeros((3, 32, 32), dtype=np.float32))
    assert parity.main([a.format(folder=folder, tmp=tmp_path) for a in args]) == 2
    assert_one_line_error(capsys.readouterr().err, message)


def test_usage_errors_are_one_line_too(folder, capsys):
    with pytest.raises(SystemExit) as exited:
        parity.main(["export", "--model", str(folder)])
    assert exited.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "required: --out")


# ----------------------------------------------------------------------------------------------------------------
# --text and --image go through tokenizer.py and preprocess.py.

def train_spiece(folder):
    import sentencepiece as spm

    words = "a photo of the cat dog red blue green house two".split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, rng.integers(1, 6))) for _ in range(200)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_prefix=str(folder / "spiece"),
                                   vocab_size=60, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2)


def test_export_from_texts_and_images(folder, tmp_path):
    from PIL import Image

    from preprocess import SiglipImageProcessor
    from tokenizer import SiglipTokenizer

    model_dir = Path(shutil.copytree(folder, tmp_path / "model"))
    train_spiece(model_dir)
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16}))  # the model's length
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    texts = ["a photo of a cat", "two red dogs!"]

    assert parity.main(["export", "--model", str(model_dir), "--image", str(image), "--text", *texts,
                        "--out", str(tmp_path / "a.safetensors")]) == 0
    tensors, metadata = read_file(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(tensors["input_ids"], SiglipTokenizer.from_pretrained(model_dir)(texts))
    np.testing.assert_array_equal(tensors["pixel_values"], SiglipImageProcessor(size=32)([image]))  # the model's size
    assert json.loads(metadata["tokenizer"])["texts"] == texts
    assert json.loads(metadata["preprocessing"])["size"] == {"height": 32, "width": 32}

    (model_dir / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32},
                                                                    "image_mean": [0.1, 0.2, 0.3]}))
    assert parity.main(["export", "--model", str(model_dir), "--image", str(image), "--text", *texts,
                        "--out", str(tmp_path / "b.safetensors")]) == 0
    tensors, metadata = read_file(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(tensors["pixel_values"], SiglipImageProcessor.from_pretrained(model_dir)([image]))
    assert json.loads(metadata["preprocessing"])["image_mean"] == [0.1, 0.2, 0.3]
