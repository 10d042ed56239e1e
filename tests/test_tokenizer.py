"""tokenizer.py against transformers.SiglipTokenizer (the oracle), on SentencePiece models trained here.

Two models: a unigram one without byte fallback and with the dummy prefix (what google/siglip-* ship),
and a BPE one with byte fallback, no dummy prefix and whitespace kept as written, so that none of
these choices is baked in.
"""
import json
import os
import random
import string
import subprocess
import sys
import unicodedata
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sentencepiece as spm  # noqa: E402
import transformers  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tokenizer import SiglipTokenizer, canonicalize  # noqa: E402

transformers.logging.set_verbosity_error()
REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "a photo of the cat dog sitting on table red blue green house car bird tree sky water two 42 2024 "
    "ein bild der katze und hund straße über café naïve élève "
    "фото кошка собака дом красный синий "
    "φωτογραφία γάτα σκύλος σπίτι "
    "صورة قطة كلب منزل "
    "猫 犬 写真 家 赤 青 "
    "बिल्ली कुत्ता"
).split()
WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()] + ["\u200b", "\u2581"]
SPECIAL = ["</s>", "<unk>", "<pad>"]
MODELS = {
    "unigram": dict(model_type="unigram", byte_fallback=False, add_dummy_prefix=True),
    "bpe_byte_fallback": dict(model_type="bpe", byte_fallback=True, add_dummy_prefix=False,
                              remove_extra_whitespaces=False),
}
quick = settings(max_examples=60, deadline=None)


def training_sentences(count=2000, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10))) for _ in range(count)]


def train_spiece(folder, options):
    """spiece.model in folder, ids as SigLIP's: pad 0, eos 1, unk 2, no bos."""
    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences()), model_prefix=str(folder / "spiece"), vocab_size=700,
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2, **options,
    )
    return folder


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_dir(request, tmp_path_factory):
    return train_spiece(tmp_path_factory.mktemp(request.param), MODELS[request.param])


@pytest.fixture(scope="module")
def ours(model_dir):
    return SiglipTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def theirs(model_dir):
    return transformers.SiglipTokenizer.from_pretrained(model_dir)


def hf_ids(tok, texts, max_length):
    with warnings.catch_warnings():  # "This sequence already has </s>" for a literal </s>
        warnings.simplefilter("ignore")
        out = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return out["input_ids"], out["attention_mask"]


def cased_word(word, case):
    return {"lower": word, "upper": word.upper(), "title": word.title()}[case]


covered_words = st.builds(cased_word, st.sampled_from(WORDS), st.sampled_from(["lower", "upper", "title"]))
fragments = st.one_of(
    covered_words,
    st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=3),
    st.text(st.sampled_from(string.punctuation), min_size=1, max_size=3),
    st.text(st.sampled_from("0123456789٠१１"), min_size=1, max_size=4),  # ASCII, Arabic, Devanagari, full-width
    st.sampled_from(SPECIAL),
    st.text(max_size=5),  # any code points: other scripts, combining marks, controls
)
any_text = st.one_of(
    st.lists(fragments, max_size=20),
    st.lists(fragments, min_size=60, max_size=120),  # long enough to truncate at 64
).map("".join)
covered_text = st.lists(
    st.one_of(covered_words, st.text(st.sampled_from(WHITESPACE[:-2] + list(string.punctuation)), max_size=2)),
    max_size=30,
).map(" ".join)


@quick
@given(texts=st.lists(any_text, min_size=1, max_size=4), max_length=st.sampled_from([64, 16]))
@example(texts=["a photo of a cat", "", " ", "A Photo, of a CAT!!"], max_length=64)
@example(texts=["hello </s> world", "</s>", "</s> cat", "cat</s>dog", "!! </s>", "\u2581</s>"], max_length=16)
@example(texts=["x <unk> y", "<unk></s><unk>", "cat \u2581 dog", "\u2581cat", "ＡＢＣ ﬁ ½"], max_length=16)
@example(texts=["cat " * 14 + "</s> dog dog", "cat " * 15 + "</s> dog", "cat " * 30], max_length=16)
@example(texts=["cat " * 15, "cat " * 16, "cat " * 17], max_length=16)
def test_ids_and_attention_mask_match_transformers(ours, theirs, texts, max_length):
    ids, mask = ours(texts, max_length=max_length, return_attention_mask=True)
    expected_ids, expected_mask = hf_ids(theirs, texts, max_length)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


@quick
@given(text=any_text)
def test_encode_matches_transformers(ours, theirs, text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours.encode(text) == theirs.encode(text)


@quick
@given(text=covered_text)
def test_decode_of_encode_is_the_canonical_text(ours, theirs, text):
    canonical = canonicalize(text)
    assert unicodedata.normalize("NFKC", canonical) == canonical  # SentencePiece decodes NFKC text
    ids = ours.encode(text)
    assert ours.decode(ids) == canonical
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


@quick
@given(data=st.data())
def test_decode_matches_transformers_on_any_ids(ours, theirs, data):
    special_ids = st.sampled_from([0, ours.eos_id, ours.unk_id])
    ids = data.draw(st.lists(special_ids | st.integers(0, ours.sp.get_piece_size() - 1), max_size=40))
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


@quick
@given(text=any_text, lowercase=st.booleans())
def test_canonicalize_is_idempotent(text, lowercase):
    once = canonicalize(text, lowercase)
    assert canonicalize(once, lowercase) == once


@quick
@given(text=any_text)
def test_canonicalize_matches_transformers(theirs, text):
    assert canonicalize(text) == theirs.canonicalize_text(text)


def test_shapes_and_dtype(ours):
    assert ours("a cat").shape == (1, 64) and ours("a cat").dtype == np.int64
    assert ours(["a cat", "a dog", ""], max_length=16).shape == (3, 16)
    assert ours(("a cat",)).shape == (1, 64)
    ids, mask = ours([], return_attention_mask=True)
    assert ids.shape == mask.shape == (0, 64) and mask.dtype == np.int64
    assert ours("a cat", max_length=1).tolist() == [[ours.eos_id]]


@pytest.mark.parametrize("bad", [None, b"a cat", 3, 2.5, ["a cat", None], ["a cat", b"x"], {"a cat"}])
def test_rejects_what_is_not_text_naming_its_type(ours, bad):
    culprit = bad[1] if isinstance(bad, list) else bad
    with pytest.raises(TypeError, match=type(culprit).__name__):
        ours(bad)


@pytest.mark.parametrize("bad", [None, b"a cat", 3])
def test_encode_rejects_what_is_not_text(ours, bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        ours.encode(bad)


@pytest.mark.parametrize("bad", [0, -3, 2.0])
def test_rejects_a_bad_max_length(ours, bad):
    with pytest.raises(ValueError, match="max_length"):
        ours("a cat", max_length=bad)


def test_tokenizer_config_sets_max_length_and_case(model_dir, tmp_path):
    (tmp_path / "spiece.model").write_bytes((model_dir / "spiece.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16, "do_lower_case": False}))
    ours, theirs = SiglipTokenizer.from_pretrained(tmp_path), transformers.SiglipTokenizer.from_pretrained(tmp_path)
    assert (ours.model_max_length, ours.do_lower_case) == (theirs.model_max_length, theirs.do_lower_case) == (16, False)
    texts = ["A Photo of the CAT", "Ein Bild der KATZE und Hund " * 3]
    np.testing.assert_array_equal(ours(texts), hf_ids(theirs, texts, 16)[0])
    ours.save_pretrained(tmp_path / "saved")  # keeps the length and case it loaded, and the vocabulary's bytes
    assert (tmp_path / "saved" / "spiece.model").read_bytes() == (model_dir / "spiece.model").read_bytes()
    resaved = transformers.SiglipTokenizer.from_pretrained(tmp_path / "saved")
    assert (resaved.model_max_length, resaved.do_lower_case) == (16, False)
    np.testing.assert_array_equal(ours(texts), hf_ids(resaved, texts, 16)[0])


def test_hub_id_is_found_in_the_hugging_face_cache(model_dir, tmp_path, monkeypatch):
    snapshot = tmp_path / "models--google--siglip-test" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "spiece.model").write_bytes((model_dir / "spiece.model").read_bytes())
    (tmp_path / "models--google--siglip-test" / "refs").mkdir()
    (tmp_path / "models--google--siglip-test" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from_cache = SiglipTokenizer.from_pretrained("google/siglip-test")
    from_file = SiglipTokenizer(snapshot / "spiece.model")
    np.testing.assert_array_equal(from_cache(["a photo of a cat"]), from_file(["a photo of a cat"]))


def test_missing_spiece_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        SiglipTokenizer.from_pretrained(tmp_path)


def test_does_not_import_torch():
    code = "import sys, tokenizer; assert 'torch' not in sys.modules, 'tokenizer.py imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
