"""The command line and parity.py with every checkpoint kind: a big_vision .npz, an open_clip folder, single towers.

The oracle is transformers 5.24, reading the folder `cli.py convert` wrote (its own tokenizer and image processor
included); the .npz itself is checked against big_vision in test_independent_fixtures.py.
"""
import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import cli
import parity
from oracle import SMALL_VISION, hf_config, save_random_siglip, train_sentencepiece
from test_independent_fixtures import B16_LOOP, open_clip_folder

CAPTIONS = ["a red circle", "two blue squares", "a green triangle", "one small cat", "a dog on grass"]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """A SentencePiece tokenizer (ids below the fixture's 1000-word vocabulary), as a .npz is used beside one."""
    folder = tmp_path_factory.mktemp("tokenizer")
    train_sentencepiece(folder, CAPTIONS * 20, vocab_size=50)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(5)
    paths = [folder / f"{i}.png" for i in range(3)]
    for path, size in zip(paths, [(70, 50), (64, 64), (20, 90)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return paths


@pytest.fixture(scope="module")
def converted(tokenizer_folder, tmp_path_factory):
    """`cli.py convert` of the big_vision fixture, with the tokenizer beside it."""
    out = tmp_path_factory.mktemp("converted") / "b16"
    assert cli.main(["convert", str(B16_LOOP / "checkpoint.npz"), str(out), "--tokenizer", str(tokenizer_folder)]) == 0
    return out


def test_convert_writes_a_folder_transformers_reads_whole(converted):
    assert sorted(p.name for p in converted.iterdir()) == ["config.json", "model.safetensors",
                                                           "preprocessor_config.json", "spiece.model",
                                                           "tokenizer_config.json"]
    transformers.SiglipModel.from_pretrained(converted)
    assert transformers.SiglipTokenizer.from_pretrained(converted)("a cat").input_ids[-1] == 1  # eos
    assert transformers.SiglipImageProcessorPil.from_pretrained(converted).size == {"height": 64, "width": 64}


def test_convert_refuses_to_write_over_files(converted, capsys):
    assert cli.main(["convert", str(B16_LOOP / "checkpoint.npz"), str(converted)]) == 2
    assert "holds files; give --overwrite" in capsys.readouterr().err


def test_classify_a_npz_as_transformers_classifies_its_conversion(converted, tokenizer_folder, images, capsys):
    labels = ["cat", "red circle", "two dogs"]
    assert cli.main(["classify", *map(str, images), "--labels", *labels, "--json", "--model",
                     str(B16_LOOP / "checkpoint.npz"), "--tokenizer", str(tokenizer_folder)]) == 0
    tokenizer = transformers.SiglipTokenizer.from_pretrained(converted)
    texts = tokenizer([f"This is a photo of {label}." for label in labels], padding="max_length", return_tensors="pt")
    assert_scores_are_transformers(capsys.readouterr().out, converted, texts.input_ids, images, labels)


def assert_scores_are_transformers(json_lines, folder, input_ids, images, labels):
    """classify --json's scores equal sigmoid(logits_per_image) of transformers' SiglipModel on the folder, with its
    own image processor and the given ids."""
    model = transformers.SiglipModel.from_pretrained(folder).eval()
    processor = transformers.SiglipImageProcessorPil.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor([Image.open(p) for p in images], return_tensors="pt").pixel_values
        probs = model(input_ids=input_ids, pixel_values=pixels).logits_per_image.sigmoid()  # (B_img, labels)
    for line, row in zip((json.loads(line) for line in json_lines.splitlines()), probs):
        got = {score["label"]: score["score"] for score in line["scores"]}
        assert max(abs(got[label] - p) for label, p in zip(labels, row.tolist())) <= 1e-5


def test_embed_with_a_vision_tower_without_head_is_refused(tmp_path, images, capsys):
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SMALL_VISION, vision_use_head=False)) \
        .save_pretrained(tmp_path / "tower")
    assert cli.main(["embed", str(images[0]), "--out", str(tmp_path / "e.npy"), "--model", str(tmp_path / "tower")]) == 2
    assert "a SiglipVisionModel, which cannot embed images (it has no MAP head)" in capsys.readouterr().err


def test_embed_images_with_a_vision_tower(tmp_path, images):
    """A SiglipVisionModel folder (no tokenizer, no preprocessor_config.json) embeds images as transformers does."""
    torch.manual_seed(0)
    tower = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SMALL_VISION)).eval()
    tower.save_pretrained(tmp_path / "tower")
    assert cli.main(["embed", *map(str, images), "--out", str(tmp_path / "e.npy"), "--model",
                     str(tmp_path / "tower")]) == 0
    processor = transformers.SiglipImageProcessorPil(size={"height": SMALL_VISION["image_size"],
                                                           "width": SMALL_VISION["image_size"]})
    with torch.no_grad():
        pooled = tower(processor([Image.open(p) for p in images], return_tensors="pt").pixel_values).pooler_output
    want = torch.nn.functional.normalize(pooled, dim=-1)
    assert np.abs(np.load(tmp_path / "e.npy") - want.numpy()).max() <= 1e-5


def test_classify_needs_two_towers(tmp_path, images, capsys):
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SMALL_VISION)).save_pretrained(tmp_path / "v")
    assert cli.main(["classify", str(images[0]), "--labels", "cat", "--model", str(tmp_path / "v")]) == 2
    assert "a SiglipVisionModel, which cannot embed texts" in capsys.readouterr().err


def test_a_npz_without_tokenizer_asks_for_one(images, capsys):
    assert cli.main(["classify", str(images[0]), "--labels", "cat", "--model", str(B16_LOOP / "checkpoint.npz")]) == 2
    assert "a big_vision .npz holds no tokenizer; give --tokenizer FOLDER" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# parity.py: export and check-hf with every kind.

@pytest.mark.parametrize("kind", ["npz", "open_clip", "vision tower without head", "text tower", "classifier"])
def test_check_hf_passes_for_every_kind(kind, tmp_path, capsys):
    torch.manual_seed(1)
    if kind == "npz":
        model = str(B16_LOOP / "checkpoint.npz")
    elif kind == "open_clip":
        model = str(open_clip_folder(tmp_path, "exact"))
    elif kind == "vision tower without head":
        transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SMALL_VISION, vision_use_head=False)) \
            .save_pretrained(model := tmp_path / "v")
    elif kind == "text tower":
        transformers.SiglipTextModel(hf_config().text_config).save_pretrained(model := tmp_path / "t")
    else:
        transformers.SiglipForImageClassification(hf_config()).save_pretrained(model := tmp_path / "c")
    assert parity.main(["check-hf", "--model", str(model)]) == 0  # 0: every traced name within tolerance
    report = capsys.readouterr().out
    traced = {"text tower": "text.features", "vision tower without head": "vision.post_layernorm",
              "classifier": "vision.post_layernorm"}.get(kind, "logits_per_text")
    assert traced in report, report


def test_export_a_vision_tower_traces_that_tower(tmp_path, capsys):
    transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SMALL_VISION, vision_use_head=False)) \
        .save_pretrained(tmp_path / "v")
    assert parity.main(["export", "--model", str(tmp_path / "v"), "--pixel-values", str(save_pixels(tmp_path)),
                        "--out", str(tmp_path / "g.safetensors")]) == 0
    golden, metadata = parity.read_golden(tmp_path / "g.safetensors")
    layers = SMALL_VISION["num_hidden_layers"]
    assert {"vision.embeddings", f"vision.layers.{layers - 1}", "vision.post_layernorm"} <= golden.keys()
    assert not any(name.startswith("text.") or name == "vision.pooled" for name in golden)
    assert parity.heads_of(metadata) == {"vision": SMALL_VISION["num_attention_heads"]}
    assert parity.main(["export", "--model", str(tmp_path / "v"), "--input-ids", "5,6,1",
                        "--out", str(tmp_path / "h.safetensors")]) == 2
    assert "holds a SiglipVisionModel, without a text tower" in capsys.readouterr().err


def save_pixels(tmp_path):
    size = SMALL_VISION["image_size"]
    np.save(tmp_path / "px.npy", np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    return tmp_path / "px.npy"


def test_export_a_npz_matches_big_vision_layer_outputs(tmp_path):
    """The golden of the .npz holds big_vision's pooled features where the fixture has them."""
    inputs = np.load(B16_LOOP / "inputs.npz")
    np.save(tmp_path / "px.npy", inputs["pixel_values"])
    ids = [",".join(map(str, row)) for row in inputs["input_ids"]]
    assert parity.main(["export", "--model", str(B16_LOOP / "checkpoint.npz"), "--pixel-values",
                        str(tmp_path / "px.npy"), "--input-ids", *ids, "--out", str(tmp_path / "g.safetensors")]) == 0
    golden, _ = parity.read_golden(tmp_path / "g.safetensors")
    want = np.load(B16_LOOP / "outputs.npz")
    assert np.abs(golden["vision.pooled"] - want["image_features"]).max() <= 1e-5
    assert np.abs(golden["text.features"] - want["text_features"]).max() <= 1e-5
    assert np.abs(golden["logits_per_image"] - want["logits_per_image"]).max() <= 1e-5



def test_classify_with_a_siglip2_fixed_resolution_folder(tmp_path, images, capsys):
    """SigLIP 2 fixed-resolution: the two-tower model with Gemma's tokenizer (lowercased text) and bilinear resizing."""
    from test_siglip2_inputs import real_tokenizer_config, train_gemma_like

    folder = tmp_path / "siglip2"
    model_file = train_gemma_like(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(real_tokenizer_config(model_file)))
    vocab = transformers.AutoTokenizer.from_pretrained(folder).vocab_size
    save_random_siglip(folder, hf_config(text=dict(vocab_size=vocab, max_position_embeddings=64)))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}, "resample": 2}))
    labels = ["Red Circle", "a CAT", "two dogs 🐕"]
    assert cli.main(["classify", *map(str, images), "--labels", *labels, "--json", "--model", str(folder)]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)  # a GemmaTokenizer, which does not lowercase
    texts = tokenizer([f"This is a photo of {label}.".lower() for label in labels], padding="max_length",
                      max_length=64, return_tensors="pt")
    assert_scores_are_transformers(capsys.readouterr().out, folder, texts.input_ids, images, labels)
