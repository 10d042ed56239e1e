"""train.py end to end: the smoke run writes a Hugging Face folder that siglip_min and transformers both read alike;
--data trains on a folder of captioned images and --init fine-tunes; drawn shapes have their true areas."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

import shapes  # noqa: E402
import siglip_min as sm  # noqa: E402
from preprocess import SiglipImageProcessor  # noqa: E402
from tokenizer import SiglipTokenizer  # noqa: E402
import train  # noqa: E402
from shapes import CAPTIONS, CLASSES, COLOURS, SUPERSAMPLE, caption, draw_image, shape_alpha  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
transformers.logging.set_verbosity_error()


def run_train(*args):
    result = subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_transformers_agrees(folder, images, texts):
    """transformers' SiglipTokenizer, SiglipImageProcessorPil and SiglipModel read `folder` to the ids, pixels and
    logits (<= 1e-4) that ours give."""
    model, tok, proc = (sm.SiglipModel.from_pretrained(folder), SiglipTokenizer.from_pretrained(folder),
                        SiglipImageProcessor.from_pretrained(folder))
    hf_model = transformers.SiglipModel.from_pretrained(folder).eval()
    hf_tok = transformers.SiglipTokenizer.from_pretrained(folder)
    hf_proc = transformers.SiglipImageProcessorPil.from_pretrained(folder)
    ids, pixels = tok(texts), proc(images)
    hf_ids = hf_tok(texts, padding="max_length", truncation=True, return_tensors="np")["input_ids"]
    hf_pixels = hf_proc(images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ids, hf_ids)
    np.testing.assert_array_equal(pixels, hf_pixels)
    with torch.no_grad():
        want = hf_model(input_ids=torch.from_numpy(hf_ids), pixel_values=torch.from_numpy(hf_pixels)).logits_per_image
        got = model(torch.from_numpy(ids), torch.from_numpy(pixels)).logits_per_image
    assert (got - want).abs().max().item() <= 1e-4


def test_smoke_run_writes_a_folder_transformers_reads(tmp_path):
    out = run_train("--steps", 3, "--out", tmp_path / "smoke")
    assert "step     3  loss" in out and "images/s" in out
    images = [draw_image(np.random.default_rng(i), *CLASSES[i], 32) for i in range(4)]
    assert_transformers_agrees(tmp_path / "smoke", images, [caption(*c) for c in CLASSES[:4]])


def test_on_log_receives_what_train_prints(tmp_path, capsys):
    """The callback that notebook 03 plots from gets every progress and evaluation line, with the printed values."""
    options = train.TrainOptions(steps=4, log_every=2, eval_every=2, threads=1)
    model, tok, proc = train.start_model(options, CAPTIONS, tmp_path)
    rng, image_size = np.random.default_rng(0), model.config.vision_config.image_size
    evaluation = shapes.draw_batch(rng, 32, image_size)
    rows = []
    train.train(model, tok, proc, train.synthetic_batches(rng, 32, image_size), evaluation, options,
                on_log=rows.append)
    printed = capsys.readouterr().out.splitlines()
    assert [r["step"] for r in rows] == [2, 2, 4, 4] and len(printed) == 4
    for row, line in zip(rows, printed):
        if "loss" in row:
            assert line.startswith(f"step {row['step']:5d}  loss {row['loss']:.4f}")
            assert f"b {row['bias']:6.2f}" in line and row["images_per_s"] > 0
        else:
            assert line == f"eval {row['step']:5d}  all {row['all']:.3f}  colour {row['colour']:.3f}  " \
                           f"shape {row['shape']:.3f}"


def test_weight_decay_falls_on_linear_and_patch_kernels_only():
    """big_vision decays ".*/kernel$": the weights of Dense and Conv layers. Checked here by module type, not name."""
    model = sm.SiglipModel(train.model_config("tiny", vocab_size=20))
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    decayed, plain = train.optimizer(model, lr=1e-3, weight_decay=0.1).param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == kernels
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    assert {id(model.text.embed.token), id(model.vision.embed.pos), id(model.vision.head.probe),
            id(model.logit_scale), id(model.logit_bias)} <= {id(p) for p in plain["params"]}


def test_trains_and_fine_tunes_on_a_folder_of_captioned_images(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 30), COLOURS[colour]).save(data / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"All {colour}!"}))
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    run_train("--steps", 1, "--batch-size", 3, "--data", data, "--out", tmp_path / "start")
    run_train("--steps", 2, "--batch-size", 2, "--init", tmp_path / "start", "--data", data,
              "--out", tmp_path / "tuned")
    assert (tmp_path / "tuned" / "spiece.model").read_bytes() == (tmp_path / "start" / "spiece.model").read_bytes()
    assert_transformers_agrees(tmp_path / "tuned", [str(data / "0.png")], ["all red", "all purple"])


def test_drawn_shapes_have_their_geometric_area():
    """Independent check of the drawing: the coverage of a shape of circumradius R is its area in closed form, to
    within one supersampled pixel along its outline (the rasteriser's rounding)."""
    R, r = 20.0, 0.45 * 20.0  # a star's outer and inner radius
    star_edge = math.sqrt(R**2 + r**2 - 2 * R * r * math.cos(math.pi / 5))
    areas = {  # area, perimeter
        "circle": (math.pi * R**2, 2 * math.pi * R),
        "square": (2 * R**2, 4 * math.sqrt(2) * R),
        "triangle": (3 * math.sqrt(3) / 4 * R**2, 3 * math.sqrt(3) * R),
        "star": (5 * R * r * math.sin(math.pi / 5), 10 * star_edge),  # ten triangles R, r at 36 degrees
    }
    for shape, (area, perimeter) in areas.items():
        for angle in (0.0, 0.3, 2.0):
            covered = shape_alpha(shape, 64, (32.0, 32.0), R, angle).sum()
            assert abs(covered - area) <= perimeter / SUPERSAMPLE, (shape, angle, covered, area)


def test_a_shape_drawn_at_a_given_centre_is_centred_there():
    """The centre option puts the shape's centre of mass where asked (a circle's, and a square's, is its centre)."""
    colour, rgb = "red", np.asarray(COLOURS["red"], dtype=np.float32)
    for shape in ("circle", "square"):
        for centre in ((12.0, 12.0), (30.0, 18.0)):
            image = draw_image(np.random.default_rng(0), colour, shape, 48, radii=(0.15, 0.15), centre=centre,
                               backgrounds=("plain",)).astype(np.float32)
            background = image[-1, -1]  # a corner that no shape of circumradius 7.2 px here reaches
            weight = np.clip(1 - np.abs(image - rgb).sum(-1) / np.abs(background - rgb).sum(), 0, 1)  # (H, W): 1 on it
            ys, xs = np.mgrid[0:48, 0:48] + 0.5  # pixel centres
            found = (np.sum(weight * xs) / weight.sum(), np.sum(weight * ys) / weight.sum())
            assert np.allclose(found, centre, atol=0.3), (shape, centre, found)


def test_patch_dropout_feeds_the_blocks_a_random_subset_of_each_images_tokens():
    """FLIP's patch dropout: the first vision block sees round((1 - drop) N) of each image's own tokens, a different
    subset per image; with nothing dropped the loss is the model's own (SiglipModel's, tested in test_loss)."""
    model = sm.SiglipModel(train.model_config("tiny", vocab_size=20)).train()
    image_size = model.config.vision_config.image_size
    images, captions, _ = shapes.draw_batch(np.random.default_rng(3), 8, image_size)
    ids = torch.randint(3, 20, (8, train.TEXT_LENGTH))
    pixels = torch.from_numpy(SiglipImageProcessor(size=image_size)(images))
    seen = {}
    model.vision.embed.register_forward_hook(lambda m, i, out: seen.update(tokens=out))
    model.vision.blocks[0].register_forward_pre_hook(lambda m, i: seen.update(block_in=i[0]))
    torch.manual_seed(0)
    train.batch_loss(model, ids, pixels, drop=0.25)
    tokens, block_in = seen["tokens"], seen["block_in"]  # (B, 16, D), (B, K, D)
    assert tokens.shape[1] == 16 and block_in.shape[1] == 12  # tiny: a 4 x 4 grid, a quarter left out
    subsets = []
    for image_tokens, kept in zip(tokens, block_in):
        match = (kept[:, None, :] == image_tokens[None, :, :]).all(-1)  # (K, N): which token each kept row is
        assert (match.sum(1) == 1).all()
        subsets.append(frozenset(match.float().argmax(1).tolist()))
    assert all(len(s) == 12 for s in subsets) and len(set(subsets)) > 1
    with torch.no_grad():
        full = model(ids, pixels, return_loss=True).loss
        assert torch.allclose(train.batch_loss(model, ids, pixels, drop=0.0), full, atol=1e-6)


def test_patch_dropout_out_of_range_is_a_clear_error():
    for bad in (["--patch-dropout", "1"], ["--patch-dropout", "-0.1"], ["--unmasked-tail", "1.5"]):
        result = subprocess.run([sys.executable, "train.py", *bad, "--steps", "1"], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2 and bad[0] in result.stderr and "Traceback" not in result.stderr


def test_patch_dropout_runs_until_the_unmasked_tail(tmp_path, monkeypatch):
    """--patch-dropout 0.25 --unmasked-tail 0.2 over 5 steps: steps 1-4 drop tokens, step 5 keeps every token."""
    options = train.parse_args(["--steps", "5", "--patch-dropout", "0.25", "--unmasked-tail", "0.2", "--threads", "1"])
    assert options == train.TrainOptions(steps=5, patch_dropout=0.25, unmasked_tail=0.2, threads=1)
    model, tok, proc = train.start_model(options, CAPTIONS, tmp_path)
    calls = []
    real = train.batch_loss
    monkeypatch.setattr(train, "batch_loss", lambda *a, **k: calls.append(a[5]) or real(*a, **k))
    rng, image_size = np.random.default_rng(0), model.config.vision_config.image_size
    train.train(model, tok, proc, train.synthetic_batches(rng, 32, image_size), None, options)
    assert calls == [0.25] * 4 + [0.0]


# Options for the notebooks' exercises: CLIP's loss, the initial bias, held-out pairs, repeated captions, padding mask.

def test_exercise_options_parse_and_refuse_bad_values():
    options = train.parse_args(["--loss", "softmax", "--init-bias", "0", "--hold-out", "a red circle, a blue star",
                                "--repeats", "--mask-padding"])
    assert (options.loss, options.init_bias, options.repeats, options.mask_padding) == ("softmax", 0.0, True, True)
    held = [shapes.CAPTIONS.index("a red circle"), shapes.CAPTIONS.index("a blue star")]
    assert options.training_classes() == [c for c in range(32) if c not in held]
    for bad, message in ((["--loss", "hinge"], "--loss 'hinge'"), (["--hold-out", "a red cat"], "'a red cat' is not"),
                         (["--hold-out", ",".join(shapes.CAPTIONS)], "leaves no caption"),
                         (["--init-bias", "nan"], "--init-bias must be a finite number")):
        with pytest.raises(sm.InputError, match=message):
            train.parse_args(bad)


def test_held_out_captions_are_never_drawn_and_repeats_come_only_when_asked():
    options = train.parse_args(["--hold-out", "a red circle"])
    batches = train.synthetic_batches(np.random.default_rng(0), 31, 16, options.training_classes())
    drawn = [caption for _ in range(20) for caption in next(batches)[1]]
    assert "a red circle" not in drawn and len(set(drawn)) == 31
    plain = train.synthetic_batches(np.random.default_rng(0), 32, 16)
    assert all(len(set(next(plain)[1])) == 32 for _ in range(5))
    repeated = train.synthetic_batches(np.random.default_rng(0), 32, 16, repeats=True)
    assert any(len(set(next(repeated)[1])) < 32 for _ in range(5))


def test_batch_loss_options_against_the_losses(tmp_path):
    """softmax: sm.softmax_loss (tested against transformers' CLIP loss); mask: the text tower gets the mask; the
    initial bias is the one asked for."""
    options = train.TrainOptions(init_bias=0.0, threads=1)
    model, tok, proc = train.start_model(options, CAPTIONS, tmp_path)
    assert model.logit_bias.item() == 0.0
    images, captions, _ = shapes.draw_batch(np.random.default_rng(1), 6, model.config.vision_config.image_size)
    ids, mask = map(torch.from_numpy, tok(captions, return_attention_mask=True))
    pixels = torch.from_numpy(proc(images))
    with torch.no_grad():
        image_embeds = sm.l2_normalize(model.get_image_features(pixels))
        for attention_mask in (None, mask):
            text_embeds = sm.l2_normalize(model.get_text_features(ids, attention_mask))
            want = sm.softmax_loss(image_embeds, text_embeds, model.logit_scale)
            assert train.batch_loss(model, ids, pixels, "softmax", attention_mask).item() == pytest.approx(want.item())
        assert train.batch_loss(model, ids, pixels, "sigmoid", mask) != train.batch_loss(model, ids, pixels)
