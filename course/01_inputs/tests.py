"""Assignment 1's tests: each part against tokenizer.py and preprocess.py (checked against transformers'
SiglipTokenizer and SiglipImageProcessorPil by the repository's own tests) and the shipped model folder.

A test is `test_<part>_<what>(student, reference)`; those between the HIDDEN TESTS markers run only at grading.
Parts are graded alone: a test of one part swaps the student's helpers of the other parts for the reference's.
"""
import io
import json
import re
import string
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import preprocess as pp
import tokenizer as tk
from grading import PROPERTIES, check_close, check_shape, from_reference, matches

MODULE = "inputs.py"
PARTS = [("canonicalize", 2), ("token_ids", 3), ("normalize", 3), ("preprocess", 3)]

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "siglip-tiny-shapes"
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
DROP = str.maketrans("", "", string.punctuation)
PUNCTUATION_TO_SPACE = str.maketrans(string.punctuation, " " * len(string.punctuation))


# canonicalize ----------------------------------------------------------------------------------------------------

# Known mistakes: (what a wrong canonicalize_text gives, the advice). Checked in order; the first that explains the
# answer (and is not the right answer for that text) is the feedback.
CANONICAL_MISTAKES = [
    (lambda t: tk.canonicalize(t, lowercase=False), "the text is not lowercased (str.lower comes first)"),
    (lambda t: tk.canonicalize(t.translate(PUNCTUATION_TO_SPACE)),
     "punctuation must be deleted, not replaced by a space: \"a.b\" becomes \"ab\""),
    (lambda t: re.sub(r"\s+", " ", t.lower()).strip().translate(DROP),
     "collapse the whitespace after deleting the punctuation: \"a . b\" must become \"a b\", not \"a  b\""),
    (lambda t: re.sub(r"\s+", " ", t.lower().translate(DROP)),
     "strip the spaces at both ends (after collapsing)"),
    (lambda t: re.sub(" +", " ", t.lower().translate(DROP)).strip(),
     "collapse every kind of whitespace (tabs, newlines, Unicode spaces), not only spaces: re.sub(r\"\\s+\", ...)"),
    (lambda t: re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", t.lower())).strip(),
     "delete exactly the characters of string.punctuation (ASCII punctuation, '_' included); yours deletes "
     "non-word characters instead"),
]


def check_canonical(student, text):
    want = tk.canonicalize(text)
    got = student.canonicalize_text(text)
    if got == want:
        return
    if not isinstance(got, str):
        raise AssertionError(f"canonicalize_text({text!r}) returned a {type(got).__name__}, expected a str")
    for mistake, advice in CANONICAL_MISTAKES:
        if got == mistake(text) != want:
            raise AssertionError(f"canonicalize_text({text!r}) gave {got!r}, expected {want!r}: {advice}")
    raise AssertionError(f"canonicalize_text({text!r}) gave {got!r}, expected {want!r}")


def test_canonicalize_examples(student, reference):
    for text in ("a red circle", "A Red Circle", "a red circle.", "  a   red\tcircle\n", "Hello, World!",
                 "don't stop", "snake_case & C++", "", "!!!", "CAFÉ au lait"):
        check_canonical(student, text)


def test_canonicalize_order_of_steps(student, reference):
    for text in ("a . b", "tea , milk ; sugar", " - leading dash", "x\u00a0\u2003y", "tabs\t\t and\r\nnewlines"):
        check_canonical(student, text)


### BEGIN HIDDEN TESTS
TRICKY = list("aAzZ09 \t\n\r\x0b\x0c") + list(string.punctuation) + list("\u00a0\u2003\u3000\u2028ÉßİΣ_é€«»")


@PROPERTIES
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=40))
def check_tricky_texts(student, text):
    check_canonical(student, text)


@PROPERTIES
@given(st.text(max_size=30))
def check_any_texts(student, text):
    check_canonical(student, text)


def test_canonicalize_property_tricky_alphabet(student, reference):
    check_tricky_texts(student)


def test_canonicalize_property_any_unicode(student, reference):
    check_any_texts(student)
### END HIDDEN TESTS


# token_ids -------------------------------------------------------------------------------------------------------

def check_row(student, ids, max_length, eos_id):
    want = tk.append_eos(list(ids[: max_length - 1]), eos_id)
    got = student.truncate_with_eos(list(ids), max_length, eos_id)
    call = f"truncate_with_eos({ids}, max_length={max_length}, eos_id={eos_id})"
    if got is None or not hasattr(got, "__len__"):
        raise AssertionError(f"{call} returned {got!r}, expected a list of ints")
    got = [int(i) for i in got]
    if got == want:
        return
    advice = ""
    if got == list(ids[: max_length - 1]) or got == list(ids[:max_length]):
        advice = ": the row must end with eos; append it after truncating"
    elif got == list(ids[: max_length - 1]) + [eos_id]:
        advice = ": the kept ids already end with eos, so no second eos is appended"
    elif len(got) > max_length:
        advice = f": at most max_length = {max_length} ids; keep the first max_length - 1 and leave room for the eos"
    elif got == tk.append_eos(list(ids), eos_id)[: max_length - 1] + [eos_id] or got == tk.append_eos(list(ids), eos_id)[:max_length]:
        advice = ": truncate first, then decide on the eos by the last id kept"
    raise AssertionError(f"{call} gave {got}, expected {want}{advice}")


def test_token_ids_truncate_with_eos(student, reference):
    for ids, max_length in (([5, 6, 7], 8), ([], 4), ([5, 6, 7], 4), ([5, 6, 7, 8, 9], 4), ([5, 6, 1], 8),
                            ([5, 1, 7, 8], 3)):
        check_row(student, ids, max_length, eos_id=1)


def pair(got, what):
    """(ids, mask) of a pad_right or token_ids answer; advice when it is not a pair."""
    if not (isinstance(got, tuple) and len(got) == 2):
        raise AssertionError(f"{what} must return a pair (ids, mask), got {type(got).__name__}")
    return got


def check_padded(student, rows, max_length, pad_id):
    got = student.pad_right([list(r) for r in rows], max_length, pad_id)
    what = f"pad_right({rows}, max_length={max_length}, pad_id={pad_id})"
    ids, mask = pair(got, what)
    want_ids, want_mask = tk.pad_rows(rows, max_length, pad_id)
    left_ids, left_mask = tk.pad_rows(rows, max_length, pad_id, side="left")
    for name, array, want, left in (("ids", ids, want_ids, left_ids), ("mask", mask, want_mask, left_mask)):
        check_shape(array, want.shape, f"{what}: {name}")
        assert array.dtype == np.int64, f"{what}: {name} has dtype {array.dtype}; the model takes np.int64"
        if np.array_equal(array, left) and not np.array_equal(array, want):
            raise AssertionError(f"{what}: {name} is padded on the left; SiglipTokenizer pads on the right "
                                 f"(the ids first, then pad_id)")
    if np.array_equal(mask, (want_ids != pad_id).astype(np.int64)) and not np.array_equal(mask, want_mask):
        raise AssertionError(f"{what}: your mask is 0 wherever an id equals pad_id, but a row's own eos (SigLIP's "
                             f"pad id is its eos id) must have mask 1: build the mask from the rows' lengths")
    for name, array, want in (("ids", ids, want_ids), ("mask", mask, want_mask)):
        assert np.array_equal(array, want), f"{what}: {name} is\n{array}\nexpected\n{want}"


def test_token_ids_pad_right(student, reference):
    check_padded(student, [[5, 6, 7, 2], [8, 2], [2]], max_length=5, pad_id=0)
    check_padded(student, [[3, 13, 4, 1], [3, 9, 1], [3, 10, 7, 1]], max_length=6, pad_id=1)


def shipped_tokenizer():
    return tk.SiglipTokenizer.from_pretrained(SHIPPED)


def check_batch(got, rows, max_length, eos_id, pad_id, what):
    """token_ids' answer for rows against tokenizer.py's append_eos and pad_rows, with advice for known mistakes."""
    ids, mask = pair(got, what)
    finished = [tk.append_eos(list(row[: max_length - 1]), eos_id) for row in rows]
    want_ids, want_mask = tk.pad_rows(finished, max_length, pad_id)
    for name, array, want in (("ids", ids, want_ids), ("mask", mask, want_mask)):
        check_shape(array, want.shape, f"{what}: {name}")
        assert array.dtype == np.int64, f"{what}: {name} has dtype {array.dtype}; the model takes np.int64"
    if np.array_equal(ids, want_ids) and np.array_equal(mask, want_mask):
        return
    if all(np.array_equal(a, b) for a, b in zip((ids, mask), tk.pad_rows(finished, max_length, pad_id, "left"))):
        raise AssertionError(f"{what}: padded on the left; SiglipTokenizer pads on the right (ids first, then pad)")
    without_eos = tk.pad_rows([list(row[: max_length - 1]) for row in rows], max_length, pad_id)
    if all(np.array_equal(a, b) for a, b in zip((ids, mask), without_eos)):
        raise AssertionError(f"{what}: the rows have no eos: truncate to max_length - 1, then append eos_id")
    for name, array, want in (("ids", ids, want_ids), ("mask", mask, want_mask)):
        assert np.array_equal(array, want), f"{what}: {name} is\n{array}\nexpected\n{want}\n(the rows were {rows})"


def check_tokenizer(student, tokenizer, texts, max_length):
    """student.token_ids on the SentencePiece ids of texts, against SiglipTokenizer(texts) itself."""
    rows = [tokenizer.sp.piece_to_id(tokenizer.tokenize(text)) for text in texts]
    want_ids, want_mask = tokenizer(texts, max_length=max_length, return_attention_mask=True)
    got = student.token_ids([list(row) for row in rows], max_length, tokenizer.eos_id, tokenizer.pad_id)
    what = f"token_ids for {texts} at max_length={max_length}"
    check_batch(got, rows, max_length, tokenizer.eos_id, tokenizer.pad_id, what)
    # check_batch follows tokenizer.py's functions; SiglipTokenizer itself must agree (it does: a check of the oracle)
    assert np.array_equal(got[0], want_ids) and np.array_equal(got[1], want_mask), \
        f"{what}: ids\n{got[0]}\nmask\n{got[1]}\nexpected (SiglipTokenizer's)\n{want_ids}\n{want_mask}"


def test_token_ids_shipped_tokenizer(student, reference):
    tokenizer = shipped_tokenizer()
    check_tokenizer(student, tokenizer, ["a red circle", "A Blue, Square!", "a green triangle</s>"], max_length=8)


def test_token_ids_pad_id_not_eos(student, reference):
    """SigLIP 2's Gemma tokenizer pads with <pad> = 0 and ends with <eos> = 1: the two ids must not be mixed up."""
    rows = [[7, 8, 9], [4], [], [6, 6, 6, 6, 6, 6]]
    got = student.token_ids([list(row) for row in rows], 5, eos_id=1, pad_id=0)
    check_batch(got, rows, 5, 1, 0, f"token_ids({rows}, max_length=5, eos_id=1, pad_id=0)")


### BEGIN HIDDEN TESTS
def test_token_ids_edge_rows(student, reference):
    for ids, max_length in (([1], 4), ([5, 1], 2), ([5, 6], 1), ([], 1), ([1, 1, 1], 2), (list(range(2, 40)), 16)):
        check_row(student, ids, max_length, eos_id=1)
    check_padded(student, [[], [4, 5, 6]], max_length=3, pad_id=0)


def test_token_ids_random_rows(student, reference):
    rng = np.random.default_rng(11)
    for max_length, eos_id, pad_id in ((7, 1, 0), (3, 2, 2), (12, 1, 1)):
        rows = [list(map(int, rng.integers(0, 6, rng.integers(0, 15)))) for _ in range(6)]
        got = student.token_ids([list(row) for row in rows], max_length, eos_id, pad_id)
        check_batch(got, rows, max_length, eos_id, pad_id,
                    f"token_ids({rows}, max_length={max_length}, eos_id={eos_id}, pad_id={pad_id})")


def test_token_ids_shipped_tokenizer_truncated(student, reference):
    tokenizer = shipped_tokenizer()
    texts = ["a purple star and a white square", "a black triangle</s>", "", "</s>", "an orange</s> circle"]
    for max_length in (1, 4, 16):
        check_tokenizer(student, tokenizer, texts, max_length)
### END HIDDEN TESTS


# normalize -------------------------------------------------------------------------------------------------------

def random_pixels(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)


def oracle_normalize(pixels, rescale_factor, mean, std):
    """preprocess.py's lookup table applied to pixels: float32 (3, H, W)."""
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)  # (3, H, W)
    pp.rescale_and_normalize(pixels, pp.pixel_lookup_table(rescale_factor, mean, std), out)
    return out


def float32_normalized(values, mean, std):
    """(values - mean) / std per channel of (H, W, 3) float32 values, channels first: for the known mistakes."""
    return ((values - np.float32(mean)) / np.float32(std)).astype(np.float32).transpose(2, 0, 1)  # (3, H, W)


def check_normalize(student, pixels, rescale_factor, mean, std, exact=False):
    height, width = pixels.shape[:2]
    what = f"normalize of ({height}, {width}, 3) pixels, rescale_factor={rescale_factor:.6g}, mean={mean}, std={std}"
    got = student.normalize(pixels.copy(), rescale_factor, mean, std)
    want = oracle_normalize(pixels, rescale_factor, mean, std)
    if getattr(got, "shape", None) == (height, width, 3) and (height, width) != (3, 3):
        raise AssertionError(f"{what}: shape (H, W, 3) = {got.shape}; the model takes channels first, (3, H, W): "
                             f"transpose(2, 0, 1) at the end")
    check_shape(got, want.shape, what)
    if matches(got, want, atol=1e-6, rtol=1e-6):
        if exact and not (got.dtype == np.float32 and np.array_equal(got, want)):
            if got.dtype != np.float32:
                raise AssertionError(f"{what}: dtype {got.dtype}; pixel_values are float32")
            raise AssertionError(f"{what}: right to within {np.abs(got - want).max():.2g} but not bit for bit: "
                                 f"rescale in float64 then cast to float32, and normalise in float32 (mean and std "
                                 f"as float32 arrays), as transformers does")
        return
    rescaled = (pixels.astype(np.float64) * rescale_factor).astype(np.float32)  # (H, W, 3)
    mistakes = [
        (float32_normalized(pixels.astype(np.float32), mean, std),
         "the pixels are not rescaled: multiply by rescale_factor before normalising"),
        (float32_normalized(rescaled, std, mean), "mean and std are swapped: it is (x - mean) / std"),
        (float32_normalized(rescaled, mean[::-1], std[::-1]),
         "the channels' means and stds are reversed: channel 0 is red, the last axis of (H, W, 3) pixels"),
        (float32_normalized(rescaled, [0.0] * 3, [1.0] * 3), "the values are rescaled but not normalised"),
        (float32_normalized((pixels.astype(np.float64) / 255).astype(np.float32), mean, std),
         f"rescale by the rescale_factor given ({rescale_factor:.6g}), not by 1/255"),
        (((rescaled - np.float32(mean)) / np.float32(std)).reshape(3, height, width),
         "channels first needs a transpose, not a reshape: reshape(3, H, W) keeps the memory order and scrambles "
         "the pixels"),
    ]
    for mistake, advice in mistakes:
        if matches(got, mistake, atol=1e-6, rtol=1e-6) and not matches(mistake, want, atol=1e-6, rtol=1e-6):
            raise AssertionError(f"{what}: {advice}")
    check_close(got, want, what, atol=1e-6, rtol=1e-6)


def test_normalize_siglip(student, reference):
    check_normalize(student, random_pixels(5, 7, seed=0), 1 / 255, [0.5] * 3, [0.5] * 3)


def test_normalize_clip_statistics(student, reference):
    check_normalize(student, random_pixels(6, 4, seed=1), 1 / 255, CLIP_MEAN, CLIP_STD)


def test_normalize_bit_for_bit(student, reference):
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)  # (16, 16, 3)
    check_normalize(student, every_value, 1 / 255, [0.5] * 3, [0.5] * 3, exact=True)
    check_normalize(student, every_value, 1 / 255, CLIP_MEAN, CLIP_STD, exact=True)


### BEGIN HIDDEN TESTS
def test_normalize_other_settings(student, reference):
    check_normalize(student, random_pixels(9, 2, seed=2), 1 / 127.5, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], exact=True)
    check_normalize(student, random_pixels(1, 11, seed=3), 1 / 255, [0.1, 0.2, 0.7], [0.9, 0.3, 0.05], exact=True)
    check_normalize(student, random_pixels(3, 3, seed=4), 0.00392156862745098, CLIP_MEAN, CLIP_STD, exact=True)
### END HIDDEN TESTS


# preprocess ------------------------------------------------------------------------------------------------------

def shipped_config():
    return json.loads((SHIPPED / "preprocessor_config.json").read_text())


def config_of(height, width, resample, mean, std, rescale_factor=1 / 255):
    return {"size": {"height": height, "width": width}, "resample": resample, "rescale_factor": rescale_factor,
            "image_mean": mean, "image_std": std}


def picture(height, width, seed):
    """uint8 (H, W, 3): smooth gradients plus noise, so that resizing filters give visibly different values."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]  # (H, W) each
    smooth = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 100 * np.sin(x / 3 + y / 5)], -1)
    return np.clip(smooth + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)  # (H, W, 3)


def reopened(image, **save):
    """image saved as PNG and opened again: how a palette image gets its transparency entry, as from a file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    buffer.seek(0)
    return Image.open(buffer)


def images_of_every_mode(seed):
    """[(mode name, PIL image)]: RGB, RGBA, LA, L, P, P with a transparent colour, of different sizes."""
    rng = np.random.default_rng(seed)
    rgb = picture(20, 30, seed)
    alpha = rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)  # (H, W, 1)
    alpha[:5] = 0  # a fully transparent band
    palette = Image.fromarray(picture(17, 13, seed + 1)).quantize(colors=16)
    return [("RGB", Image.fromarray(rgb)),
            ("RGBA", Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA")),
            ("LA", Image.fromarray(np.concatenate([rgb[:, :, :1], alpha], axis=2), mode="LA")),
            ("L", Image.fromarray(picture(31, 9, seed + 2)[:, :, 0])),
            ("P", palette),
            ("P with transparency", reopened(palette, transparency=int(np.asarray(palette)[0, 0])))]


def check_rgb(student, name, image):
    got = student.to_rgb(image.copy())
    assert isinstance(got, Image.Image), f"to_rgb of the {name} image returned a {type(got).__name__}, expected a PIL image"
    assert got.mode == "RGB" and got.size == image.size, \
        f"to_rgb of the {name} image {image.size}: gave mode {got.mode} size {got.size}, expected RGB {image.size}"
    got, want = np.asarray(got), np.asarray(pp.pil_to_rgb(image, name))
    if np.array_equal(got, want):
        return
    if np.array_equal(got, np.asarray(image.convert("RGB"))):
        raise AssertionError(f"to_rgb of the {name} image: convert(\"RGB\") drops the transparency and keeps the "
                             f"colours under it; composite the image on white (Image.alpha_composite)")
    black = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image.convert("RGBA"))
    if np.array_equal(got, np.asarray(black.convert("RGB"))):
        raise AssertionError(f"to_rgb of the {name} image: composited on black; transformers composites on white")
    raise AssertionError(f"to_rgb of the {name} image: {int((got != want).any(axis=2).sum())} of {got.shape[0] * got.shape[1]} "
                         f"pixels differ from transformers' convert_to_rgb")


def test_preprocess_to_rgb(student, reference):
    for name, image in images_of_every_mode(seed=0):
        check_rgb(student, name, image)


def check_preprocess(student, reference, images, config, what):
    oracle = pp.SiglipImageProcessor(size=config["size"], resample=config["resample"],
                                     rescale_factor=config["rescale_factor"], image_mean=config["image_mean"],
                                     image_std=config["image_std"])
    want = oracle([image.copy() for image in images])  # (B, 3, H, W)
    height, width = config["size"]["height"], config["size"]["width"]
    with from_reference(student, reference, "normalize"):
        got = student.preprocess([image.copy() for image in images], dict(config))
    what = f"preprocess of {what} to {height}x{width} (height x width), resample {config['resample']}"
    if getattr(got, "shape", None) == (len(images), 3, width, height) and height != width:
        raise AssertionError(f"{what}: shape {got.shape}, expected {want.shape}: PIL's resize takes "
                             f"(width, height), in that order")
    check_shape(got, want.shape, what)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}; pixel_values are float32"
    if matches(got, want, atol=1e-6, rtol=0):
        return
    for resample in Image.Resampling:
        other = pp.SiglipImageProcessor(size=config["size"], resample=int(resample), rescale_factor=config["rescale_factor"],
                                        image_mean=config["image_mean"], image_std=config["image_std"])
        if resample != config["resample"] and matches(got, other([image.copy() for image in images]), atol=1e-6, rtol=0):
            raise AssertionError(f"{what}: resized with {resample.name.lower()} ({int(resample)}); use the config's "
                                 f"resample, {config['resample']} ({Image.Resampling(config['resample']).name.lower()})")
    for index, image in enumerate(images):
        if not np.array_equal(np.asarray(student.to_rgb(image.copy())), np.asarray(pp.pil_to_rgb(image, "image"))):
            raise AssertionError(f"{what}: image {index} (mode {image.mode}) comes out wrong because to_rgb gives the "
                                 f"wrong colours for it: see test_preprocess_to_rgb")
    check_close(got, want, what, atol=1e-6, rtol=0)


def test_preprocess_shipped_config(student, reference):
    images = [Image.fromarray(picture(64, 64, seed=5)), Image.fromarray(picture(30, 50, seed=6))]
    check_preprocess(student, reference, images, shipped_config(), "two RGB pictures (64x64, 30x50)")


def test_preprocess_every_mode(student, reference):
    images = [image for _, image in images_of_every_mode(seed=7)]
    config = config_of(24, 40, 2, CLIP_MEAN, CLIP_STD)  # bilinear, as SigLIP 2's fixed-resolution checkpoints
    check_preprocess(student, reference, images, config, "RGB, RGBA, LA, L, P and transparent P images")


### BEGIN HIDDEN TESTS
def test_preprocess_to_rgb_other_images(student, reference):
    for name, image in images_of_every_mode(seed=8):
        check_rgb(student, name, image)


def test_preprocess_other_configs(student, reference):
    modes = images_of_every_mode(seed=9)
    check_preprocess(student, reference, [modes[1][1]], config_of(7, 5, 0, [0.5] * 3, [0.5] * 3), "one RGBA image")
    check_preprocess(student, reference, [image for _, image in modes[::-1]],
                     config_of(33, 33, 3, [0.1, 0.2, 0.7], [0.9, 0.3, 0.05]), "images of every mode")
    check_preprocess(student, reference, [Image.fromarray(picture(3, 200, seed=10))],
                     config_of(48, 48, 1, CLIP_MEAN, CLIP_STD, rescale_factor=1 / 127.5), "a 3x200 strip")
### END HIDDEN TESTS
