"""SigLIP 2 fixed-resolution inputs (google/siglip2-base-patch16-224 and kin) against transformers: tokenizer.py's
Siglip2Tokenizer against AutoTokenizer (a GemmaTokenizer) on lowercased text, and preprocess.py with bilinear
resizing against SiglipImageProcessorPil.

The tokenizer.model is Gemma-like and trained here: BPE, byte fallback, split digits, no normalization, no dummy
prefix, whitespace kept, pad 0, eos 1, bos 2, unk 3, <mask> 4. The folders' tokenizer_config.json files are the
real checkpoints' (transformers' convert_siglip2_to_hf.py: GemmaTokenizerFast with add_bos_token=False,
add_eos_token=True, padding_side="right", model_input_names=["input_ids"]) and some variations on it.
"""
import json
import os
import random
import shutil
import string
import subprocess
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sentencepiece as spm  # noqa: E402
import transformers  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from hub import InputError  # noqa: E402
from preprocess import SiglipImageProcessor  # noqa: E402
from tokenizer import Siglip2Tokenizer, SiglipTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()
REPO = Path(__file__).resolve().parents[1]
quick = settings(max_examples=50, deadline=None)

# Tokenizer ---------------------------------------------------------------------------------------------------------

WORDS = (
    "a photo of the cat dog sitting on table red blue green house car bird tree sky water two 42 2024 "
    "ein bild der katze und hund straße über café naïve élève фото кошка собака дом "
    "φωτογραφία γάτα σπίτι صورة قطة منزل 猫 犬 写真 家 बिल्ली कुत्ता"
).split()
WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\u00a0", "\u2009", "\u3000", "\u200b", "\u2581"]  # runs drawn below
CONTROL, USER_DEFINED = ["<mask>"], ["<start_of_turn>", "<end_of_turn>", "<h1>"]  # as Gemma's, fewer
TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<EOS>", "<Pad>", "<0x41>", "</s>", *CONTROL, *USER_DEFINED]
EMOJI = ["😀", "🐈\u200d⬛", "👍🏽", "🇩🇪", "🦜"]  # not in the training text: byte fallback
NO_LIMIT = 1000000000000000019884624838656  # transformers' VERY_LARGE_INTEGER, as the checkpoints' JSON has it


def training_sentences(count=1500, seed=0):
    rng = random.Random(seed)
    words = WORDS + ["1", "2", "3", "2024", "  ", "\t", "\n"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(count)]


def train_gemma_like(folder):
    """tokenizer.model in folder, trained as Gemma's was (trainer options from its ModelProto), much smaller."""
    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences()), model_prefix=str(folder / "tokenizer"), vocab_size=600,
        hard_vocab_limit=False, character_coverage=1.0, model_type="bpe", byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
        eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", control_symbols=CONTROL,
        user_defined_symbols=USER_DEFINED, minloglevel=2,
    )
    return folder / "tokenizer.model"


def real_tokenizer_config(model_file):
    """tokenizer_config.json as google/siglip2-* have it (saved by transformers 4.x): the added tokens listed."""
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", *CONTROL, *USER_DEFINED]
    decoder = {str(sp.piece_to_id(piece)): {"content": piece, "lstrip": False, "normalized": False, "rstrip": False,
                                            "single_word": False, "special": piece != "<h1>"} for piece in pieces}
    return {"add_bos_token": False, "add_eos_token": True, "added_tokens_decoder": decoder,
            "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"], "bos_token": "<bos>",
            "clean_up_tokenization_spaces": False, "eos_token": "<eos>", "extra_special_tokens": {},
            "mask_token": "<mask>", "model_input_names": ["input_ids"], "model_max_length": NO_LIMIT,
            "pad_token": "<pad>", "padding_side": "right", "processor_class": "SiglipProcessor", "sp_model_kwargs": {},
            "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer", "unk_token": "<unk>",
            "use_default_system_prompt": False}


def write_folder(folder, model_file, tokenizer_config, **files):
    """A tokenizer folder: tokenizer.model, tokenizer_config.json and any other JSON files named."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, folder / "tokenizer.model")
    for name, content in {"tokenizer_config": tokenizer_config, **files}.items():
        (folder / f"{name}.json").write_text(json.dumps(content))
    return folder


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    return train_gemma_like(tmp_path_factory.mktemp("gemma_like"))


def saved_by_transformers(folder, model_file):
    """What AutoTokenizer.save_pretrained writes (tokenizer.json, a v5 tokenizer_config.json), and tokenizer.model."""
    transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(folder / "saved")
    shutil.copy(model_file, folder / "saved" / "tokenizer.model")
    return folder / "saved"


def make_variant(name, folder, model_file):
    real = real_tokenizer_config(model_file)
    if name == "real":  # with the checkpoints' config.json model_type and special_tokens_map.json
        return write_folder(folder, model_file, real, config={"model_type": "siglip"}, special_tokens_map={
            key: real[key] for key in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")})
    if name == "gemma_defaults":  # no settings: GemmaTokenizer's, left padding and no eos
        return write_folder(folder, model_file, {"tokenizer_class": "GemmaTokenizer"})
    if name == "bos_left":  # no added_tokens_decoder: the tokens come from the model and special_tokens_map.json
        settings = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": True,
                    "padding_side": "left", "truncation_side": "left", "model_max_length": 16,
                    "extra_special_tokens": ["und"]}
        return write_folder(folder, model_file, settings, special_tokens_map={"pad_token": {"content": "<unk>"}})
    return saved_by_transformers(make_variant("real", folder, model_file), model_file)


@pytest.fixture(scope="session", params=["real", "gemma_defaults", "bos_left", "saved_by_transformers"])
def tokenizer_dir(request, tmp_path_factory, model_file):
    return make_variant(request.param, tmp_path_factory.mktemp(request.param), model_file)


@pytest.fixture(scope="session")
def ours(tokenizer_dir):
    return SiglipTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def theirs(tokenizer_dir):
    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


def hf_ids(tok, texts, max_length):
    """transformers' ids and mask for the texts as SigLIP 2 is used: lowercased, padded, truncated."""
    out = tok([text.lower() for text in texts], padding="max_length", max_length=max_length, truncation=True,
              return_attention_mask=True, return_tensors="np")
    return out["input_ids"], out["attention_mask"]


def cased(word, case):
    return {"lower": word, "upper": word.upper(), "title": word.title()}[case]


fragments = st.one_of(
    st.builds(cased, st.sampled_from(WORDS), st.sampled_from(["lower", "upper", "title"])),
    st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=4),
    st.text(st.sampled_from("0123456789٣१１"), min_size=1, max_size=6),  # ASCII, Arabic, Devanagari, full-width
    st.text(st.sampled_from(string.punctuation), min_size=1, max_size=3),
    st.sampled_from(TOKENS + EMOJI),
    st.text(max_size=5),  # any code points: byte fallback for most
)
any_text = st.one_of(
    st.lists(fragments, max_size=20),
    st.lists(fragments, min_size=40, max_size=90),  # long enough to truncate at 64
).map("".join)


@quick
@given(texts=st.lists(any_text, min_size=1, max_size=4), max_length=st.sampled_from([64, 9]))
@example(texts=["a photo of a cat", "", " ", "A Photo of a CAT!!"], max_length=64)
@example(texts=["2024 was 12345", "٣١ and １２", "cat 😀 🐈\u200d⬛ 🇩🇪", "x\u0000y"], max_length=64)
@example(texts=["a  b   c", " lead", "trail ", "tab\tnew\nline", "\u2581cat", "\u00a0cat"], max_length=64)
@example(texts=["<eos>", "<EOS> cat", "cat<pad>dog", "<bos><mask>", "<start_of_turn>hi<h1>", "<unk>"], max_length=9)
@example(texts=["cat " * 70, "cat " * 7, "cat " * 8, "dog " * 9], max_length=9)
def test_ids_and_attention_mask_match_transformers(ours, theirs, texts, max_length):
    ids, mask = ours(texts, max_length=max_length, return_attention_mask=True)
    expected_ids, expected_mask = hf_ids(theirs, texts, max_length)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


@quick
@given(text=any_text)
def test_encode_matches_transformers(ours, theirs, text):
    assert ours.encode(text) == theirs.encode(text.lower())


@quick
@given(data=st.data())
def test_decode_matches_transformers_on_any_ids(ours, theirs, data):
    byte_pieces = st.integers(ours.sp.piece_to_id("<0x00>"), ours.sp.piece_to_id("<0xFF>"))
    ids = data.draw(st.lists(st.integers(0, 12) | byte_pieces | st.integers(0, ours.sp.get_piece_size() - 1),
                             max_size=30))
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


def test_settings_are_the_files(tokenizer_dir, ours, theirs):
    """Read as transformers reads them, except the "no limit" model_max_length, which is SigLIP 2's 64."""
    assert type(ours) is Siglip2Tokenizer
    assert (ours.padding_side, ours.truncation_side) == (theirs.padding_side, theirs.truncation_side)
    assert (ours.pad_id, ours.eos_id, ours.bos_id) == (theirs.pad_token_id, theirs.eos_token_id, theirs.bos_token_id)
    assert ours.model_max_length == (64 if theirs.model_max_length == NO_LIMIT else theirs.model_max_length)
    assert ours("a cat").shape == (1, ours.model_max_length)


def test_the_real_settings(model_file, tmp_path):
    """The checkpoints' files: <eos> appended, no <bos>, <pad> (0) on the right, 64 ids."""
    ours = SiglipTokenizer.from_pretrained(make_variant("real", tmp_path, model_file))
    ids, mask = ours(["A photo of a CAT.", ""], return_attention_mask=True)
    content = ours.sp.encode("a photo of a cat.")
    assert ids.shape == (2, 64) and ids.dtype == np.int64
    assert ids[0].tolist() == content + [1] + [0] * (63 - len(content))
    assert ids[1].tolist() == [1] + [0] * 63
    assert mask[0].sum() == len(content) + 1 and mask[1].tolist() == [1] + [0] * 63
    built = Siglip2Tokenizer(model_file)  # the constructor's defaults are these settings
    np.testing.assert_array_equal(built(["A photo of a CAT.", ""]), ids)


def test_lowercases_where_transformers_gemma_tokenizer_does_not(model_file, tmp_path):
    folder = make_variant("real", tmp_path, model_file)
    ours, theirs = SiglipTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    assert ours.encode("A Photo of the CAT") == theirs.encode("a photo of the cat") != theirs.encode("A Photo of "
                                                                                                       "the CAT")
    assert ours.encode("<EOS>") == [1, 1]  # lowercased first: the eos token, then the eos appended
    cased = Siglip2Tokenizer(folder / "tokenizer.model", do_lower_case=False)
    assert cased.encode("A Photo of the CAT") == theirs.encode("A Photo of the CAT")


def test_digits_are_split_and_unknown_characters_fall_back_to_bytes(ours):
    assert ours.content_ids("2024") == ours.sp.piece_to_id(list("2024"))
    parrot = ours.encode("🦜")  # F0 9F A6 9C
    assert ours.sp.id_to_piece(ours.content_ids("🦜")) == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    assert ours.decode(parrot) == "🦜"


@pytest.mark.parametrize("max_length", [0, 1])
def test_max_length_without_room_for_bos_and_eos_is_refused(model_file, tmp_path, max_length):
    """transformers returns such rows untruncated (longer than max_length); here it is a ValueError."""
    tok = SiglipTokenizer.from_pretrained(make_variant("bos_left", tmp_path, model_file))
    with pytest.raises(ValueError, match="max_length"):
        tok("a cat", max_length=max_length)
    assert tok("a cat", max_length=2).tolist() == [[tok.bos_id, tok.eos_id]]


@pytest.mark.parametrize("variant", ["real", "bos_left"])
def test_save_pretrained_round_trips_through_transformers(model_file, tmp_path, variant):
    ours = SiglipTokenizer.from_pretrained(make_variant(variant, tmp_path / "in", model_file))
    ours.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.model").read_bytes() == model_file.read_bytes()
    reread, theirs = (SiglipTokenizer.from_pretrained(tmp_path / "out"),
                      transformers.AutoTokenizer.from_pretrained(tmp_path / "out"))
    texts = ["A photo of a CAT", "und <EOS> 😀 12", "<start_of_turn><h1>", "dog " * 80, ""]
    for length in (64, 9):
        ids, mask = ours(texts, max_length=length, return_attention_mask=True)
        np.testing.assert_array_equal(reread(texts, max_length=length), ids)
        expected_ids, expected_mask = hf_ids(theirs, texts, length)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(mask, expected_mask)
    assert (theirs.padding_side, theirs.truncation_side) == (ours.padding_side, ours.truncation_side)
    assert (reread.model_max_length, reread.added_tokens) == (ours.model_max_length, ours.added_tokens)


CONFIG_BREAKS = {  # tokenizer_config.json setting: (value, what the error says)
    "padding_side": ("top", 'padding_side must be "left" or "right"'),
    "truncation_side": (None, 'truncation_side must be "left" or "right"'),
    "add_eos_token": ("yes", "add_eos_token must be true or false"),
    "add_bos_token": (1, "add_bos_token must be true or false"),
    "model_max_length": (-1, "model_max_length must be a positive int"),
    "do_lower_case": ("no", "do_lower_case must be true or false"),
    "pad_token": (5, "pad_token must be a token"),
    "eos_token": ({"text": "<eos>"}, "eos_token must be a token"),
    "tokenizer_class": (7, "tokenizer_class must be a string"),
    "added_tokens_decoder": ([], "added_tokens_decoder must be an object"),
    "additional_special_tokens": ("<mask>", "additional_special_tokens must be a list"),
}


@pytest.mark.parametrize("key", sorted(CONFIG_BREAKS))
def test_malformed_tokenizer_config_is_named(model_file, tmp_path, key):
    value, says = CONFIG_BREAKS[key]
    config = {**real_tokenizer_config(model_file), key: value}
    write_folder(tmp_path, model_file, config)
    with pytest.raises(InputError, match=f"{tmp_path / 'tokenizer_config.json'}: .*{says}"):
        SiglipTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("entry, says", [
    ({"content": "<mask>", "lstrip": True}, r"added_tokens_decoder\['4'\]: lstrip true is not supported"),
    ("<mask>", r"added_tokens_decoder\['4'\]: expected an id and a token object"),
    ({"content": "<eos>"}, "added_tokens_decoder's 4: '<eos>' is not piece 4"),
])
def test_added_tokens_siglip_min_does_not_mirror_are_refused(model_file, tmp_path, entry, says):
    config = real_tokenizer_config(model_file)
    config["added_tokens_decoder"]["4"] = entry
    write_folder(tmp_path, model_file, config)
    with pytest.raises(InputError, match=says):
        SiglipTokenizer.from_pretrained(tmp_path)


def test_named_token_missing_from_the_model_is_named(model_file, tmp_path):
    write_folder(tmp_path, model_file, {**real_tokenizer_config(model_file), "pad_token": "[PAD]"})
    with pytest.raises(InputError, match=r"tokenizer.model: the SentencePiece model has no '\[PAD\]' piece "
                                         r"\(the pad_token\)"):
        SiglipTokenizer.from_pretrained(tmp_path)


def test_missing_tokenizer_model_is_named(model_file, tmp_path):
    write_folder(tmp_path, model_file, real_tokenizer_config(model_file))
    (tmp_path / "tokenizer.model").unlink()
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(InputError, match="tokenizer.model: missing; tokenizer_config.json's tokenizer_class "
                                         "GemmaTokenizer .*not read the vocabulary from tokenizer.json"):
        SiglipTokenizer.from_pretrained(tmp_path)


def test_tokenizer_model_without_a_gemma_tokenizer_class_is_not_guessed(model_file, tmp_path):
    write_folder(tmp_path, model_file, {"model_max_length": 64})
    with pytest.raises(FileNotFoundError, match="no spiece.model .*tokenizer_class"):
        SiglipTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("options, says", [
    (dict(model_type="unigram"), "trainer_spec.model_type is UNIGRAM"),
    (dict(byte_fallback=False), "trainer_spec.byte_fallback is false"),
    (dict(add_dummy_prefix=True), "normalizer_spec.add_dummy_prefix is True"),
    (dict(normalization_rule_name="nmt_nfkc"), "normalizer_spec.name is 'nmt_nfkc'"),
])
def test_models_that_transformers_would_encode_otherwise_are_refused(tmp_path, options, says):
    """GemmaTokenizer builds a byte-fallback BPE without normalization from any tokenizer.model."""
    gemma = dict(model_type="bpe", byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
                 remove_extra_whitespaces=False)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences(300)), model_prefix=str(tmp_path / "tokenizer"), vocab_size=400,
        hard_vocab_limit=False, character_coverage=0.98, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
        eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", minloglevel=2, **{**gemma, **options})
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GemmaTokenizer"}))
    with pytest.raises(InputError, match=f"tokenizer.model: {says}"):
        SiglipTokenizer.from_pretrained(tmp_path)


def test_loading_siglip2_does_not_import_torch(model_file, tmp_path):
    folder = make_variant("real", tmp_path, model_file)
    code = (f"import sys, tokenizer; tokenizer.SiglipTokenizer.from_pretrained({str(folder)!r})('a cat'); "
            f"assert 'torch' not in sys.modules, 'loading a SigLIP 2 tokenizer imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# Image preprocessing -----------------------------------------------------------------------------------------------

ATOL = 1e-6  # as tests/test_preprocess.py: a float32 lookup table against transformers' float arithmetic
BILINEAR = int(Image.Resampling.BILINEAR)  # 2, the SigLIP 2 checkpoints' resample
REAL_PREPROCESSOR_CONFIG = {  # as transformers 4.4x saved SigLIP 2's (do_convert_rgb null), smaller images
    "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5] * 3,
    "image_processor_type": "SiglipImageProcessor", "image_std": [0.5] * 3, "processor_class": "SiglipProcessor",
    "resample": BILINEAR, "rescale_factor": 0.00392156862745098, "size": {"height": 64, "width": 64},
}


def picture(mode, seed, height, width):
    rgba = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    return Image.fromarray(rgba, "RGBA").convert(mode)


def hf_pixels(processor, images, **kwargs):
    return processor(images, return_tensors="np", **kwargs)["pixel_values"]


@settings(max_examples=40, deadline=None)
@given(mode=st.sampled_from(["RGB", "RGBA", "L", "P"]), seed=st.integers(0, 2**32 - 1),
       height=st.integers(1, 300), width=st.integers(1, 300), size=st.sampled_from([64, 37]))
@example(mode="RGB", seed=0, height=480, width=640, size=224)  # the checkpoints' size, downscaled
@example(mode="RGB", seed=1, height=50, width=70, size=224)  # upscaled
def test_bilinear_pixels_match_transformers(mode, seed, height, width, size):
    image = picture(mode, seed, height, width)
    reference = transformers.SiglipImageProcessorPil(resample=BILINEAR, size={"height": size, "width": size})
    np.testing.assert_allclose(SiglipImageProcessor(size=size, resample=BILINEAR)(image), hf_pixels(reference, image),
                               rtol=0, atol=ATOL)


@pytest.mark.parametrize("resample", list(Image.Resampling), ids=lambda f: f.name.lower())
def test_every_pil_filter_matches_transformers(resample):
    """transformers' PILImageResampling is PIL's Image.Resampling: every filter it has is accepted."""
    images = [picture("RGB", 1, 97, 301), picture("RGB", 2, 30, 20)]
    reference = transformers.SiglipImageProcessorPil(resample=int(resample), size={"height": 48, "width": 64})
    pixels = SiglipImageProcessor(size=(48, 64), resample=int(resample))(images)
    np.testing.assert_allclose(pixels, hf_pixels(reference, images), rtol=0, atol=ATOL)


def test_siglip2_preprocessor_config_and_save_pretrained_match_transformers(tmp_path):
    """do_convert_rgb null: transformers converts nothing, the same pixels for RGB images and paths."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(REAL_PREPROCESSOR_CONFIG))
    Image.fromarray(np.asarray(picture("RGBA", 3, 50, 70))).save(tmp_path / "rgba.png")
    images = [picture("RGB", 4, 120, 90), picture("RGB", 5, 17, 200), str(tmp_path / "rgba.png")]
    ours = SiglipImageProcessor.from_pretrained(tmp_path)
    assert ours.resample == Image.Resampling.BILINEAR
    expected = hf_pixels(transformers.SiglipImageProcessorPil.from_pretrained(tmp_path), images)
    np.testing.assert_allclose(ours(images), expected, rtol=0, atol=ATOL)
    ours.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())["resample"] == BILINEAR
    resaved = transformers.SiglipImageProcessorPil.from_pretrained(tmp_path / "saved")
    assert resaved.resample == BILINEAR
    np.testing.assert_allclose(hf_pixels(resaved, images), expected, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(SiglipImageProcessor.from_pretrained(tmp_path / "saved")(images), ours(images))


@pytest.mark.parametrize("resample", [42, -1, True, 2.0, "2", None])
def test_unknown_resample_is_refused_naming_file_and_key(tmp_path, resample):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**REAL_PREPROCESSOR_CONFIG, "resample": resample}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=f"^{tmp_path / 'preprocessor_config.json'}: resample must be one of "
                                             f"0 nearest, .*2 bilinear, .*3 bicubic"):
            SiglipImageProcessor.from_pretrained(tmp_path)
