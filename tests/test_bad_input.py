"""Bad input, as a careless or hostile user gives it: through the command lines (cli.py, train.py, parity.py, bench.py)
and the public loaders. Each case asserts the exit status, that stderr names the problem in one line with no
traceback, and that nothing on disk changed that should not have. The numbered comments are the classes of
defect this module was written against; the cases marked "kept" worked before and must keep working.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import bench
import cli
import parity
import siglip_min as sm
import train
from oracle import save_checkpoint_folder
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "siglip-tiny-shapes"
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 1234\n".format("0" * 64)
fixture_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random SigLIP folder as users have them: weights, config, spiece.model and both JSON configs."""
    return save_checkpoint_folder(tmp_path_factory.mktemp("checkpoint"), ["a red circle", "two birds", "a cat"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"img{i}.png" for i in range(2)]
    for i, path in enumerate(paths):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return [str(p) for p in paths]


@pytest.fixture
def broken(checkpoint, tmp_path):
    """A copy of the good checkpoint, to break in one way."""
    return Path(shutil.copytree(checkpoint, tmp_path / "model"))


def fingerprint(folder):
    """{relative path: sha256} of every file under folder: what 'nothing changed on disk' compares."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, main, argv, *says):
    """main(argv) exits 2 with a single stderr line that holds every fragment in `says`, and no traceback."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, (status, err)
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err, err
    assert len([line for line in lines if not line.startswith(("usage:", " "))]) == 1, err
    for fragment in says:
        assert fragment in lines[-1], (fragment, err)
    return lines[-1]


def classify(checkpoint, images, *extra):
    """cli.py's arguments to classify images against two labels with the model in `checkpoint`."""
    return [str(a) for a in ("classify", *images, "--labels", "a cat", "two birds", "--model", checkpoint, *extra)]


# 1. train.py never overwrites a model folder unless asked, and never saves an untrained model.

def test_train_default_output_is_not_the_shipped_model():
    assert Path(train.TrainOptions().out).resolve() != SHIPPED.resolve()


@pytest.mark.parametrize("argv, says", [
    (["--out", SHIPPED], "--overwrite"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "-3"], "--steps must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--lr", "0"], "--lr > 0"),
    (["--ema", "1"], "--ema < 1"),
    (["--size", "huge"], "--size 'huge'"),
    (["--patch-dropout", "1"], "--patch-dropout 1.0"),
])
def test_train_refuses_before_it_starts(capsys, tmp_path, argv, says):
    before = fingerprint(SHIPPED)
    one_line_error(capsys, train.main, [*argv] + ([] if "--out" in argv else ["--out", tmp_path / "run"]), says)
    assert fingerprint(SHIPPED) == before and not (tmp_path / "run").exists()


def test_train_refuses_an_out_that_is_a_file(capsys, tmp_path):
    (tmp_path / "model").write_text("mine")
    one_line_error(capsys, train.main, ["--out", tmp_path / "model", "--steps", 1], "a file, not a folder")
    assert (tmp_path / "model").read_text() == "mine"


def test_train_overwrites_only_when_asked(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    one_line_error(capsys, train.main, ["--out", out, "--steps", 1], "not empty", "--overwrite")
    assert fingerprint(out) == {"notes.txt": hashlib.sha256(b"keep").hexdigest()}
    assert train.main(["--out", str(out), "--steps", "1", "--overwrite", "--eval-every", "1", "--threads", "1"]) == 0
    assert (out / "model.safetensors").is_file()


# 2. Weights that are NaN, infinite or not floating point are refused, each named; the JSON output stays JSON.

@pytest.mark.parametrize("name, value, dtype, says", [
    ("text_model.head.bias", float("nan"), torch.float32, "not finite: text_model.head.bias has 1 NaN"),
    ("vision_model.post_layernorm.weight", float("inf"), torch.float32, "not finite: vision_model.post_layernorm"),
    ("logit_scale", 2.0, torch.int64, "not floating point: logit_scale is int64"),
])
def test_weights_that_cannot_be_used_are_named(capsys, broken, images, name, value, dtype, says):
    tensors = load_file(broken / "model.safetensors")
    tensors[name] = tensors[name].to(dtype)
    tensors[name].view(-1)[0] = value
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    one_line_error(capsys, cli.main, classify(broken, images, "--json"), str(broken), says)


def test_a_weight_that_overflows_half_precision_is_named(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["text_model.head.weight"][0, 0] = 1e6  # float16 holds at most 65504
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    sm.SiglipModel.from_pretrained(broken)  # float32 holds it
    with pytest.raises(sm.InputError, match="not finite: text_model.head.weight has 1 NaN or infinite values in "
                                            "float16"):
        sm.SiglipModel.from_pretrained(broken, dtype=torch.float16)


def test_non_finite_scores_are_refused_not_printed(capsys, checkpoint, images, monkeypatch):
    monkeypatch.setattr(sm, "embed_pixels", lambda model, pixels: torch.full((len(pixels), 48), float("nan")))
    one_line_error(capsys, cli.main, classify(checkpoint, images, "--json"), "NaN or infinite scores")


# 3. An output never overwrites an input, goes where it says, and is written whole or not at all.

def test_embed_out_never_overwrites_its_input(capsys, checkpoint, tmp_path):
    texts = tmp_path / "captions.txt"
    texts.write_text("a cat\ntwo birds\n")
    before = fingerprint(tmp_path)
    one_line_error(capsys, cli.main, ["embed", "--texts", texts, "--out", tmp_path / "captions.npy", "--model",
                                      checkpoint], "would write over the input", "captions.txt")
    assert fingerprint(tmp_path) == before


def test_embed_says_where_it_really_wrote(capsys, checkpoint, tmp_path):
    texts = tmp_path / "captions.txt"
    texts.write_text("a cat\n")
    assert cli.main(["embed", "--texts", str(texts), "--out", str(tmp_path / "x.dat"), "--model", str(checkpoint)]) == 0
    assert f"to {tmp_path / 'x.dat.npy'}" in capsys.readouterr().err
    assert np.load(tmp_path / "x.dat.npy").shape == (1, 48) and (tmp_path / "x.dat.txt").is_file()


@pytest.mark.parametrize("out, says", [("missing/e.npy", "no such folder"), ("folder.npy", "is a folder"),
                                       ("sidecar/e.npy", "is a folder")])
def test_embed_finds_an_unwritable_output_before_the_work(capsys, checkpoint, tmp_path, monkeypatch, out, says):
    (tmp_path / "folder.npy").mkdir()
    (tmp_path / "sidecar" / "e.txt").mkdir(parents=True)
    (tmp_path / "c.txt").write_text("a cat\n")
    monkeypatch.setattr(cli, "load_model", lambda args: pytest.fail("the model was loaded before --out was checked"))
    one_line_error(capsys, cli.main, ["embed", "--texts", tmp_path / "c.txt", "--out", tmp_path / out], says)


def test_embed_leaves_no_rows_without_their_sidecar(capsys, checkpoint, tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("a cat\n")
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(OSError("disk full"))
                        if self.name.startswith("e.txt") else real(self, *a, **k))
    one_line_error(capsys, cli.main, ["embed", "--texts", tmp_path / "c.txt", "--out", tmp_path / "e.npy",
                                      "--model", checkpoint], "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


# 4. A template holds exactly one {} field, parsed as str.format parses it.

def template_is_valid(template):
    """The oracle, by string rules rather than string.Formatter: with {{ and }} taken out, what is left holds one {}
    and no other brace."""
    left = template.replace("{{", "").replace("}}", "").replace("{:}", "{}")  # an empty format spec is no spec
    return left.count("{}") == 1 and left.replace("{}", "").count("{") == 0 and "}" not in left.replace("{}", "")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}a x0:!r", max_size=10))
def test_templates_are_parsed_properly(template):
    if template_is_valid(template):
        sm.check_template(template)
        assert template.format("LABEL").count("LABEL") == 1
    else:
        with pytest.raises(sm.InputError, match="template"):
            sm.check_template(template)


@pytest.mark.parametrize("template", ["{{}}", "{} {x}", "{}{}", "{0}", "{", "no field"])
def test_bad_template_on_the_command_line(capsys, checkpoint, images, template):
    one_line_error(capsys, cli.main, classify(checkpoint, images, "--template", template), "template")


# 5. 16-bit grey is scaled (tests/test_preprocess.py compares the pixels); 32-bit images are refused by name.

def test_sixteen_bit_grey_is_not_white(tmp_path):
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16)).save(grey)
    pixels = SiglipImageProcessor(size=8)(str(grey))
    assert np.allclose(pixels, (128 / 255 - 0.5) / 0.5, atol=1e-6)  # round(32768 / 257) = 128, not white (1.0)


def test_thirty_two_bit_image_on_the_command_line(capsys, checkpoint, images, tmp_path):
    tiff = tmp_path / "deep.tif"
    Image.fromarray(np.arange(400, dtype=np.int32).reshape(20, 20) * 100000).save(tiff)
    one_line_error(capsys, cli.main, classify(checkpoint, [tiff]), "deep.tif", "mode I image (32-bit pixels)")


# 6. --top-k must be at least 1.

@pytest.mark.parametrize("k", [0, -1])
def test_top_k_below_one(capsys, checkpoint, images, k):
    one_line_error(capsys, cli.main, classify(checkpoint, images, "--top-k", k), f"--top-k must be at least 1, got {k}")


# 7. Malformed config, tokenizer and preprocessor files: one line naming the file and the field.

int_fields = ["vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers", "projection_size"]
bad_ints = st.one_of(st.integers(max_value=0), st.text(max_size=4), st.floats(allow_nan=False), st.booleans(),
                     st.lists(st.integers(), max_size=2))


@fixture_settings
@given(field=st.sampled_from(int_fields), value=bad_ints)
def test_bad_config_values_name_the_file_and_field(checkpoint, broken, field, value):
    config = json.loads((checkpoint / "config.json").read_text())
    config["text_config"][field] = value
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(sm.InputError, match=f"config.json: text_config.{field} must be a positive int") as error:
        sm.SiglipModel.from_pretrained(broken)
    assert str(broken) in str(error.value)


CONFIG_BREAKS = {  # file: (content, what the one line must say)
    "config is a list": ("config.json", "[1, 2]", "expected a JSON object, got a list"),
    "text_config is a string": ("config.json", '{"text_config": "small"}', "text_config must be a JSON object"),
    "eps as a string": ("config.json", '{"vision_config": {"layer_norm_eps": "1e-6"}}',
                        "vision_config.layer_norm_eps must be a positive number"),
    "projection as a string": ("config.json", '{"text_config": {"projection_size": "768"}}',
                               "text_config.projection_size must be a positive int"),
    "config not JSON": ("config.json", "{oops", "not valid JSON"),
    "tokenizer config not JSON": ("tokenizer_config.json", "{oops", "not valid JSON"),
    "negative text length": ("tokenizer_config.json", '{"model_max_length": -1}', "model_max_length must be a "
                                                                                     "positive"),
    "case as a string": ("tokenizer_config.json", '{"do_lower_case": "yes"}', "do_lower_case must be true or false"),
    "preprocessor config not JSON": ("preprocessor_config.json", "[}", "not valid JSON"),
    "two-value mean": ("preprocessor_config.json", '{"image_mean": [0.5, 0.5]}', "image_mean must be three numbers"),
    "std of zero": ("preprocessor_config.json", '{"image_std": [0.5, 0, 0.5]}', "image_std must be positive"),
    "unknown resample": ("preprocessor_config.json", '{"resample": 42}', "resample must be one of"),
    "junk vocabulary": ("spiece.model", "not a protobuf", "not a SentencePiece model"),
    "vocabulary as a git-lfs pointer": ("spiece.model", LFS_POINTER, "git-lfs pointer"),
    "weights as a git-lfs pointer": ("model.safetensors", LFS_POINTER, "git-lfs pointer"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_BREAKS))
def test_malformed_files_are_named(capsys, broken, images, case):
    name, content, says = CONFIG_BREAKS[case]
    (broken / name).write_text(content)
    one_line_error(capsys, cli.main, classify(broken, images), str(broken / name), says)


def test_weight_map_that_is_a_list(capsys, broken, images):
    (broken / "model.safetensors").rename(broken / "shard.safetensors")
    (broken / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["shard.safetensors"]}))
    one_line_error(capsys, cli.main, classify(broken, images), "model.safetensors.index.json", "weight_map")


# 8. train.py --data checks the whole data set before step 1, naming the line.

@pytest.mark.parametrize("lines, says", [
    (['{"image": "0.png", "caption": "red"}', '{"image": "gone.png", "caption": "blue"}'], "captions.jsonl:2"),
    (['{"image": "0.png", "caption": "red"}', "not json"], "captions.jsonl:2: not a JSON line"),
    (['{"image": "0.png", "caption": 7}'], "captions.jsonl:1: caption must be a non-empty string"),
    (['{"image": "0.png"}'], "captions.jsonl:1: needs an object with keys 'image' and 'caption'"),
    (['{"image": "broken.png", "caption": "red"}'], "captions.jsonl:1: image 'broken.png'"),
    ([], "no image-caption pairs"),
    (None, "--data needs a captions.jsonl"),
])
def test_train_data_is_checked_before_training(capsys, tmp_path, monkeypatch, lines, says):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (20, 20), (200, 0, 0)).save(data / "0.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    if lines is not None:
        (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("training started on a bad data set"))
    one_line_error(capsys, train.main, ["--data", data, "--out", tmp_path / "out", "--steps", 1], says)
    assert not (tmp_path / "out").exists()


# 9. Shards: each tensor from the shard the index names; an index that disagrees with the files is refused.

def split_into_shards(folder, put_twice=None):
    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    first, second = names[: len(names) // 2], names[len(names) // 2:]
    save_file({n: tensors[n] for n in first + ([put_twice] if put_twice else [])}, folder / "a.safetensors")
    save_file({n: tensors[n] * (2 if n == put_twice else 1) for n in second}, folder / "b.safetensors")
    (folder / "model.safetensors").unlink()
    index = {n: "a.safetensors" for n in first} | {n: "b.safetensors" for n in second}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    return tensors


def test_a_tensor_in_two_shards_is_refused(broken):
    tensors = load_file(broken / "model.safetensors")
    twice = sorted(tensors)[-1]  # the index puts it in b.safetensors; a.safetensors holds a stale copy too
    split_into_shards(broken, put_twice=twice)
    with pytest.raises(sm.InputError, match=f"a.safetensors: the index and the shard disagree, e.g. on {twice}"):
        sm.SiglipModel.from_pretrained(broken)


def test_sharded_tensors_come_from_the_shard_the_index_names(broken):
    tensors = split_into_shards(broken)
    model = sm.SiglipModel.from_pretrained(broken)
    assert torch.equal(model.logit_bias, tensors["logit_bias"])


# 10. Unreadable images are skipped and reported alike by classify and embed; nothing produced is an error.

def test_classify_skips_a_corrupt_image_and_scores_the_others(capsys, checkpoint, images, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert cli.main(classify(checkpoint, [images[0], str(tmp_path / "bad.png"), images[1]], "--json")) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["image"] for line in out.splitlines()] == [images[0], images[1]]
    assert "skipped 1 unreadable files" in err and "bad.png" in err


def test_nothing_readable_is_an_error_and_writes_nothing(capsys, checkpoint, tmp_path):
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"junk")
    before = fingerprint(tmp_path)
    one_line_error(capsys, cli.main, ["embed", tmp_path / "a.png", tmp_path / "b.jpg", "--out", tmp_path / "e.npy",
                                      "--model", checkpoint], "none of the 2 images could be read")
    assert fingerprint(tmp_path) == before
    one_line_error(capsys, cli.main, classify(checkpoint, [tmp_path / "a.png"]), "none of the 1 images")


# 11. Text reaches the model as given: long texts are named, a BOM is dropped, rows match lines, labels not blank.

def test_long_labels_are_named_once(capsys, checkpoint, images):
    long = "a photo of " + "a very big cat " * 20
    assert cli.main(classify(checkpoint, images[:1], "--labels", long, "--template", "{}")) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "longer than the model's 64 tokens are cut off" in err and long in err


def test_labels_file_with_a_byte_order_mark(capsys, checkpoint, images, tmp_path):
    (tmp_path / "labels.txt").write_text("\ufeffa cat\ntwo birds\n", encoding="utf-8")
    assert cli.main(["classify", images[0], "--labels-file", str(tmp_path / "labels.txt"), "--model",
                     str(checkpoint), "--json"]) == 0
    assert {row["label"] for row in json.loads(capsys.readouterr().out)["scores"]} == {"a cat", "two birds"}


def test_text_rows_match_lines_blank_ones_too(checkpoint, tmp_path):
    (tmp_path / "t.txt").write_text("a cat\n\ntwo birds\n   \n", encoding="utf-8")
    assert cli.main(["embed", "--texts", str(tmp_path / "t.txt"), "--out", str(tmp_path / "rows.npy"), "--model",
                     str(checkpoint)]) == 0
    assert [json.loads(line) for line in (tmp_path / "rows.txt").open()] == ["a cat", "", "two birds", ""]
    assert np.load(tmp_path / "rows.npy").shape[0] == 4


@pytest.mark.parametrize("label", ["", "   "])
def test_blank_label_is_refused(capsys, checkpoint, images, label):
    one_line_error(capsys, cli.main, ["classify", images[0], "--labels", "a cat", label, "--model", checkpoint],
                   "label 1 is blank")


# 12. The sidecar gives back every path exactly, newlines included.

@fixture_settings
@given(name=st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=12))
def test_sidecar_rows_round_trip_to_the_paths(checkpoint, images, tmp_path_factory, name):
    if name in (".", "..") or len(name.encode()) > 200:
        return
    folder = tmp_path_factory.mktemp("names")
    path = folder / (name + ".png")
    shutil.copyfile(images[0], path)
    assert cli.main(["embed", str(path), "--out", str(folder / "e.npy"), "--model", str(checkpoint)]) == 0
    assert [json.loads(line) for line in (folder / "e.txt").read_text(encoding="utf-8").splitlines()] == [str(path)]


# 13. Pipes, interrupts, devices, special files and folders.

def test_output_into_a_closed_pipe_ends_quietly(checkpoint, images, tmp_path):
    """`| head -1` with more output than the pipe holds (about 170 KB): the writes after head left fail (EPIPE)."""
    (tmp_path / "labels.txt").write_text("".join(f"label number {i}\n" for i in range(3000)))
    command = (f"{sys.executable} {REPO / 'cli.py'} classify {images[0]} {images[1]} --labels-file "
               f"{tmp_path / 'labels.txt'} --model {checkpoint} | head -1; exit ${{PIPESTATUS[0]}}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.stdout.strip() == images[0] and result.stderr == "" and result.returncode == 141


def test_interrupt_is_one_line(capsys, checkpoint, images, monkeypatch):
    monkeypatch.setattr(sm, "prompt_embeds", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(classify(checkpoint, images)) == 130
    assert capsys.readouterr().err.strip() == "cli.py classify: interrupted"


@pytest.mark.parametrize("device, says", [("gpu", "not a device name"), ("mps", "MPS is not available"),
                                          ("cuda:9", "CUDA GPUs"), ("meta", "runs on cpu, cuda or mps")])
def test_devices_that_are_not_here(capsys, checkpoint, images, device, says):
    one_line_error(capsys, cli.main, classify(checkpoint, images, "--device", device),
                   f"--device: device '{device}'", says)


def test_labels_from_a_special_file_or_a_folder_as_image(capsys, checkpoint, images, tmp_path):
    one_line_error(capsys, cli.main, ["classify", images[0], "--labels-file", "/dev/zero", "--model", checkpoint],
                   "/dev/zero: not a regular file")
    one_line_error(capsys, cli.main, classify(checkpoint, [tmp_path]), "a folder, not an image file")


# 14. parity.py and bench.py.

def test_parity_compare_of_files_without_tensors(capsys, tmp_path):
    for name in ("a", "b"):
        save_file({}, tmp_path / f"{name}.safetensors")
    one_line_error(capsys, parity.main, ["compare", tmp_path / "a.safetensors", tmp_path / "b.safetensors"],
                   "hold no tensors")


@pytest.mark.parametrize("argv, says", [(["--model", "/nowhere/model"], "/nowhere/model"),
                                        (["--device", "gpu"], "not a device name")])
def test_bench_on_a_bad_model_or_device(capsys, argv, says):
    one_line_error(capsys, bench.main, argv, "bench.py: error:", says)


# Kept: what was handled well before, so that it stays handled.

KEPT = {  # what to do to a good folder, and what the one line must say
    "no config.json": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:99]),
                          "unreadable safetensors file"),
    "pickle only": (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "only safetensors"),
    "no spiece.model": (lambda f: (f / "spiece.model").unlink(), "no spiece.model"),
    "missing tensor": (lambda f: save_file({k: v for k, v in load_file(f / "model.safetensors").items()
                                            if k != "logit_bias"}, f / "model.safetensors"), "missing: logit_bias"),
}


@pytest.mark.parametrize("case", sorted(KEPT))
def test_kept_broken_folders(capsys, broken, images, case):
    change, says = KEPT[case]
    change(broken)
    one_line_error(capsys, cli.main, classify(broken, images), says)


def test_kept_missing_image_and_model(capsys, checkpoint, images, tmp_path):
    one_line_error(capsys, cli.main, classify(checkpoint, [tmp_path / "nope.png"]), "nope.png: no such file")
    one_line_error(capsys, cli.main, classify(tmp_path / "no-model", images), "no-model")


def test_kept_tokenizer_refuses_what_is_not_text(checkpoint):
    with pytest.raises(TypeError, match="text 1 is a bytes"):
        SiglipTokenizer.from_pretrained(checkpoint)(["a cat", b"bytes"])
