"""The main job: zero-shot classification and embeddings, from Python and from the command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import cli
import siglip_min as sm
from oracle import save_checkpoint_folder
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

SCRIPT = str(Path(cli.__file__).resolve())
CAPTIONS = ["a red circle", "a blue square", "a green star", "a photo of a cat", "a photo of a dog", "two birds"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random SigLIP with a real tokenizer and image processor config, texts of 64 tokens as the pipeline pads."""
    return save_checkpoint_folder(tmp_path_factory.mktemp("checkpoint"), CAPTIONS)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (32, 32), (64, 20), (17, 45)]):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_zero_shot_matches_transformers_pipeline(checkpoint, images):
    """transformers 5.24's pipeline passes the tokenizer's attention mask: mask_padding=True reproduces it."""
    labels = ["cat", "dog", "red circle", "two birds"]
    pipe = transformers.pipeline("zero-shot-image-classification", model=transformers.SiglipModel.from_pretrained(checkpoint),
                                 tokenizer=transformers.SiglipTokenizer.from_pretrained(checkpoint),
                                 image_processor=transformers.SiglipImageProcessorPil.from_pretrained(checkpoint))
    model = sm.SiglipModel.from_pretrained(checkpoint)
    ours = sm.zero_shot_ranking(model, SiglipTokenizer.from_pretrained(checkpoint),
                        SiglipImageProcessor.from_pretrained(checkpoint), [str(p) for p in images], labels,
                        mask_padding=True)
    for path, ranked in zip(images, ours):
        theirs = pipe(Image.open(path), candidate_labels=labels)
        assert [label for label, _ in ranked] == [r["label"] for r in theirs]
        assert max(abs(s - r["score"]) for (_, s), r in zip(ranked, theirs)) <= 1e-6


def test_classify_json(checkpoint, images):
    result = run_cli("classify", *images[:2], "--labels", "cat", "dog", "red circle", "--model", checkpoint,
                     "--json", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images[:2]]
    model = transformers.SiglipModel.from_pretrained(checkpoint).eval()
    tokenizer = transformers.SiglipTokenizer.from_pretrained(checkpoint)
    processor = transformers.SiglipImageProcessorPil.from_pretrained(checkpoint)
    texts = tokenizer([f"This is a photo of {x}." for x in ["cat", "dog", "red circle"]], padding="max_length",
                      return_tensors="pt")
    with torch.no_grad():
        pixels = processor([Image.open(p) for p in images[:2]], return_tensors="pt").pixel_values
        probs = model(input_ids=texts.input_ids, pixel_values=pixels).logits_per_image.sigmoid()  # no mask: as trained
    for line, row in zip(lines, probs):
        best = sorted(zip(["cat", "dog", "red circle"], row.tolist()), key=lambda p: -p[1])[:2]
        assert [s["label"] for s in line["scores"]] == [label for label, _ in best]
        assert all(abs(s["score"] - p) <= 1e-6 for s, (_, p) in zip(line["scores"], best))


def test_classify_softmax_and_labels_file(checkpoint, images, tmp_path):
    (tmp_path / "labels.txt").write_text("cat\n\ndog\n")
    result = run_cli("classify", images[0], "--labels-file", tmp_path / "labels.txt", "--model", checkpoint,
                     "--softmax", "--json", "--template", "{}")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)["scores"]
    assert sorted(s["label"] for s in scores) == ["cat", "dog"]
    assert abs(sum(s["softmax"] for s in scores) - 1) <= 1e-6


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_errors_are_one_line_with_exit_2(checkpoint, images, tmp_path):
    assert_one_line_error(run_cli("classify", images[0], "--model", checkpoint), "no labels")
    assert_one_line_error(run_cli("classify", tmp_path / "nope.png", "--labels", "a", "--model", checkpoint),
                          "nope.png", "no such file")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert_one_line_error(run_cli("classify", tmp_path / "bad.png", "--labels", "a", "--model", checkpoint),
                          "bad.png", "not an image")
    assert_one_line_error(run_cli("classify", images[0], "--labels", "a", "--model", tmp_path / "no-model"),
                          "no-model")
    assert_one_line_error(run_cli("classify", images[0], "--labels", "a", "--model", "google/siglip-nowhere",
                                  env={"HF_HUB_CACHE": str(tmp_path / "cache")}),
                          str(tmp_path / "cache" / "models--google--siglip-nowhere"),
                          "hf download google/siglip-nowhere")
    if not torch.cuda.is_available():
        assert_one_line_error(run_cli("classify", images[0], "--labels", "a", "--model", checkpoint,
                                      "--device", "cuda"), "--device", "this machine has 0 CUDA GPUs")


def test_hub_id_from_fake_cache(checkpoint, images, tmp_path):
    repo = tmp_path / "cache" / "models--org--tiny-siglip"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "old").mkdir()  # another revision: refs/main must win
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd\n")
    for f in checkpoint.iterdir():
        (repo / "snapshots" / "0123abcd" / f.name).symlink_to(f)
    direct = run_cli("classify", images[0], "--labels", "cat", "dog", "--model", checkpoint, "--json")
    cached = run_cli("classify", images[0], "--labels", "cat", "dog", "--model", "org/tiny-siglip", "--json",
                     env={"HF_HUB_CACHE": str(tmp_path / "cache")})
    assert cached.returncode == 0, cached.stderr
    assert json.loads(cached.stdout) == json.loads(direct.stdout)


def test_siglip_min_py_hands_over_to_cli_py(checkpoint, images):
    """Users have `python siglip_min.py classify ...`: the model file hands it to cli.py, same output."""
    args = ["classify", str(images[0]), "--labels", "cat", "dog", "--model", str(checkpoint), "--json"]
    old = subprocess.run([sys.executable, sm.__file__, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert old.returncode == 0, old.stderr
    assert json.loads(old.stdout) == json.loads(run_cli(*args).stdout)


def test_one_classify_looks_up_the_model_once_and_reads_config_json_once(checkpoint, images, tmp_path,
                                                                         monkeypatch, capsys):
    import hub

    snapshot = tmp_path / "cache" / "models--org--counted" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    for f in checkpoint.iterdir():
        (snapshot / f.name).symlink_to(f)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    lookups, reads = [], []
    find, read_text = hub.cached_snapshot, Path.read_text
    monkeypatch.setattr(hub, "cached_snapshot", lambda *a, **k: lookups.append(a) or find(*a, **k))
    monkeypatch.setattr(Path, "read_text", lambda path, *a, **k: reads.append(path.name) or read_text(path, *a, **k))
    assert cli.main(["classify", str(images[0]), "--labels", "cat", "dog", "--model", "org/counted"]) == 0
    assert "cat" in capsys.readouterr().out
    assert len(lookups) == 1 and reads.count("config.json") == 1, (lookups, reads)


def test_a_bug_keeps_its_traceback(checkpoint, images, monkeypatch):
    """Only the user's input errors become one line; a TypeError from the code is not swallowed."""
    def broken(*args, **kwargs):
        raise TypeError("a bug in the code")

    monkeypatch.setattr(sm, "prompt_embeds", broken)
    with pytest.raises(TypeError, match="a bug in the code"):
        cli.main(["classify", str(images[0]), "--labels", "cat", "--model", str(checkpoint)])


def test_embed_folder_with_corrupt_file_keeps_rows_aligned(checkpoint, images, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(images):
        (folder / ("sub" if i % 2 else ".") / p.name).write_bytes(p.read_bytes())
    (folder / "img1b.png").write_bytes(b"\x89PNG broken")
    result = run_cli("embed", folder, "--out", tmp_path / "e.npy", "--model", checkpoint, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "img1b.png" in result.stderr and "skipped 1" in result.stderr
    rows, paths = np.load(tmp_path / "e.npy"), [json.loads(line) for line in (tmp_path / "e.txt").open()]
    assert rows.dtype == np.float32 and rows.shape == (len(images), 48) and len(paths) == len(images)
    assert all("img1b" not in p for p in paths)
    model = transformers.SiglipModel.from_pretrained(checkpoint).eval()
    processor = transformers.SiglipImageProcessorPil.from_pretrained(checkpoint)
    with torch.no_grad():
        want = model.get_image_features(**processor([Image.open(p) for p in paths], return_tensors="pt")).pooler_output
    want = (want / want.norm(dim=-1, keepdim=True)).numpy()
    assert np.abs(rows - want).max() <= 1e-5


def test_embed_texts(checkpoint, tmp_path):
    (tmp_path / "captions.txt").write_text("a red circle\ntwo birds\n")
    result = run_cli("embed", "--texts", tmp_path / "captions.txt", "--out", tmp_path / "t.npy", "--model", checkpoint)
    assert result.returncode == 0, result.stderr
    model = transformers.SiglipModel.from_pretrained(checkpoint).eval()
    ids = transformers.SiglipTokenizer.from_pretrained(checkpoint)(["a red circle", "two birds"], padding="max_length",
                                                                   return_tensors="pt")
    with torch.no_grad():
        want = model.get_text_features(input_ids=ids.input_ids).pooler_output
    want = (want / want.norm(dim=-1, keepdim=True)).numpy()
    assert np.abs(np.load(tmp_path / "t.npy") - want).max() <= 1e-5
    assert [json.loads(line) for line in (tmp_path / "t.txt").open()] == ["a red circle", "two birds"]


def test_help_is_complete_and_ends_with_examples():
    for command in ("classify", "embed"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "do not sum to 1" in result.stdout
        assert result.stdout.rstrip().splitlines()[-1].startswith("  python cli.py convert")
        for option in ("--model", "--device", "--dtype", "--attn", "--batch-size", "--tokenizer", "--image-size"):
            assert option in result.stdout
    result = run_cli("convert", "--help")
    for option in ("--tokenizer", "--image-size", "--dtype", "--overwrite"):
        assert option in result.stdout


def test_classify_with_the_shipped_model_ranks_the_right_caption_first(tmp_path):
    """The main job on a fresh clone: the default model, drawings it never saw, all 32 captions as labels."""
    import shapes

    rng = np.random.default_rng(31337)  # a seed training never used
    image_size = sm.SiglipConfig.from_pretrained(cli.DEFAULT_MODEL).vision_config.image_size
    truths = [shapes.CLASSES[i] for i in rng.permutation(len(shapes.CLASSES))[:16]]
    paths = []
    for i, (colour, shape) in enumerate(truths):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(shapes.draw_image(rng, colour, shape, image_size)).save(paths[-1])
    labels = cli.DEFAULT_MODEL / "examples" / "labels.txt"
    result = run_cli("classify", *paths, "--labels-file", labels, "--json", "--top-k", "1")
    assert result.returncode == 0, result.stderr
    best = [json.loads(line)["scores"][0]["label"] for line in result.stdout.splitlines()]
    assert all(label.split()[1] == colour for label, (colour, _) in zip(best, truths)), best  # colour: ~100%
    assert sum(label == shapes.caption(*truth) for label, truth in zip(best, truths)) >= 13, best  # top-1: ~90%
    examples = sorted((cli.DEFAULT_MODEL / "examples").glob("*.png"))
    result = run_cli("classify", *examples, "--labels-file", labels, "--json", "--top-k", "1")
    for line in result.stdout.splitlines():
        record = json.loads(line)
        assert record["scores"][0]["label"] == "a " + Path(record["image"]).stem.replace("_", " ")
