"""SigLIP text tokenizer: SentencePiece plus SigLIP's text canonicalization, in plain Python and NumPy.

No torch: ports in other frameworks feed these ids to their own models. The ids are those of
transformers 5.24 `SiglipTokenizer` (models/siglip/tokenization_siglip.py, on `SentencePieceBackend`
and `PythonBackend`) called with `padding="max_length", truncation=True`. One text goes through
(the transformers method each step mirrors in brackets):

    mark_word_start               "▁" + text, any "▁" in it made a space (SiglipTokenizer.tokenize)
    split_on_special_tokens       "</s>" and "<unk>" written in the text are those tokens
                                  (PythonBackend.tokenize)
    canonicalize                  each other part: lowercase, drop ASCII punctuation, one space,
                                  strip (big_vision prompt_engineering.canonicalize_text)
    encode_without_dummy_prefix   SentencePiece on "<unk>" + part, minus the pieces of "<unk>"
                                  (SiglipTokenizer._tokenize)
    a lone leading "▁" piece before a special token is dropped (SiglipTokenizer.tokenize)
    truncate to max_length - 1, append_eos unless the ids already end with it, pad with the pad id
    (= eos id, 1 for SigLIP) (PythonBackend.prepare_for_model, SiglipTokenizer._add_eos_if_not_present)

The real google/siglip-* spiece.model files are unigram models (T5's c4 vocabulary) with SentencePiece's
dummy prefix on and no byte fallback; nothing here depends on that.
"""
import json
import re
import string
from pathlib import Path

import numpy as np
import sentencepiece as spm

from hub import InputError, check_not_lfs_pointer, read_json, resolve_model_dir

WORD_START = "\u2581"  # "▁": SentencePiece's mark for a space, and so for the start of a word
EOS_TOKEN = "</s>"  # also the pad token: SigLIP pads with eos
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (EOS_TOKEN, UNK_TOKEN)
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WHITESPACE_RUN = re.compile(r"\s+")
_SPECIAL_TOKEN_SPLIT = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")


def canonicalize(text, lowercase=True):
    """Lowercase, remove `string.punctuation`, collapse whitespace runs to one space, strip.

    SiglipTokenizer.canonicalize_text (from big_vision), in its order: lowercase first.
    """
    if lowercase:
        text = text.lower()
    text = text.translate(_DROP_PUNCTUATION)
    return _WHITESPACE_RUN.sub(" ", text).strip()


def mark_word_start(text):
    """'▁' + text with every '▁' in it made a plain space, as SiglipTokenizer.tokenize does."""
    return WORD_START + text.replace(WORD_START, " ")


def split_on_special_tokens(text):
    """The text cut around "</s>" and "<unk>", empty parts dropped.

    PythonBackend.tokenize splits on the tokenizer's special tokens (a trie). Their AddedTokens also
    strip the whitespace beside them, which canonicalize strips from every other part anyway.
    """
    return [part for part in _SPECIAL_TOKEN_SPLIT.split(text) if part]


def append_eos(ids, eos_id):
    """ids + [eos], unless they already end with eos (a literal "</s>" in the text).

    SiglipTokenizer._add_eos_if_not_present. Truncation comes first and keeps max_length - 1 ids,
    as PythonBackend.prepare_for_model leaves room for the one eos it expects to add.
    """
    return ids if ids and ids[-1] == eos_id else ids + [eos_id]


def check_is_text(text, name="text"):
    """TypeError naming the type of anything that is not a str (None, bytes, numbers, ...)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} is a {type(text).__name__}, expected str")


def as_text_list(texts):
    """A list of str from a str or a list/tuple of str; TypeError naming anything else."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"expected a str or a list of str, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        check_is_text(text, f"text {index}")
    return list(texts)


def read_tokenizer_config(model_dir):
    """model_max_length and do_lower_case from tokenizer_config.json, those present, else {}; errors name the file."""
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    config = read_json(path)
    settings = {key: config[key] for key in ("model_max_length", "do_lower_case") if key in config}
    try:
        check_settings(**settings)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    return settings


def check_settings(model_max_length=64, do_lower_case=True):
    """A positive int text length and a true/false lowercasing, else InputError naming the setting."""
    if not (isinstance(model_max_length, int) and not isinstance(model_max_length, bool) and model_max_length > 0):
        raise InputError(f"model_max_length must be a positive int, got {model_max_length!r}")
    if not isinstance(do_lower_case, bool):
        raise InputError(f"do_lower_case must be true or false, got {do_lower_case!r}")


class SiglipTokenizer:
    """Text -> np.int64 ids (B, max_length), always padded; mirrors transformers.SiglipTokenizer."""

    def __init__(self, vocab_file, model_max_length=64, do_lower_case=True):
        check_settings(model_max_length, do_lower_case)
        check_not_lfs_pointer(vocab_file)
        self.vocab_file = vocab_file
        self.vocab_bytes = Path(vocab_file).read_bytes()  # save_pretrained writes these bytes back
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.vocab_bytes)
        except RuntimeError:
            raise InputError(f"{vocab_file}: not a SentencePiece model (the file does not parse)") from None
        self.model_max_length = model_max_length
        self.do_lower_case = do_lower_case
        self.eos_id = self.known_piece_id(EOS_TOKEN)
        self.unk_id = self.known_piece_id(UNK_TOKEN)
        self.pad_id = self.eos_id
        self.unk_piece_count = len(self.sp.encode(UNK_TOKEN, out_type=str))

    @classmethod
    def from_pretrained(cls, path_or_repo_id):
        """A local folder or a cached Hub id with spiece.model (+ tokenizer_config.json)."""
        model_dir = resolve_model_dir(path_or_repo_id)
        vocab_file = model_dir / "spiece.model"
        if not vocab_file.is_file():
            raise FileNotFoundError(f"{vocab_file}: no spiece.model in {path_or_repo_id}")
        return cls(vocab_file, **read_tokenizer_config(model_dir))

    def save_pretrained(self, folder):
        """spiece.model (the bytes it was loaded from) and tokenizer_config.json, as transformers reads them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spiece.model").write_bytes(self.vocab_bytes)
        config = {"tokenizer_class": "SiglipTokenizer", "model_max_length": self.model_max_length,
                  "do_lower_case": self.do_lower_case, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN,
                  "unk_token": UNK_TOKEN}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def known_piece_id(self, piece):
        """The id of a piece the vocabulary must have; InputError when it has not."""
        piece_id = self.sp.piece_to_id(piece)
        if self.sp.id_to_piece(piece_id) != piece:
            raise InputError(f"{self.vocab_file}: the SentencePiece model has no {piece} piece")
        return piece_id

    def encode_without_dummy_prefix(self, text):
        """Pieces of text, its leading '▁' kept as a word start.

        SentencePiece drops leading whitespace, '▁' included, so SiglipTokenizer._tokenize encodes
        "<unk>" + text and removes the pieces "<unk>" alone encodes to.
        """
        pieces = self.sp.encode(UNK_TOKEN + text, out_type=str)
        return pieces[self.unk_piece_count :] if len(pieces) >= self.unk_piece_count else pieces

    def tokenize(self, text):
        """SentencePiece pieces and special tokens of one text, before eos (SiglipTokenizer.tokenize)."""
        check_is_text(text)
        pieces = []
        for part in split_on_special_tokens(mark_word_start(text)):
            if part in SPECIAL_TOKENS:
                pieces.append(part)
            else:
                pieces += self.encode_without_dummy_prefix(canonicalize(part, self.do_lower_case))
        if len(pieces) > 1 and pieces[0] == WORD_START and pieces[1] in SPECIAL_TOKENS:
            del pieces[0]
        return pieces

    def encode(self, text):
        """Ids of one text with eos, neither truncated nor padded (transformers' tok.encode(text))."""
        check_is_text(text)
        return append_eos(self.sp.piece_to_id(self.tokenize(text)), self.eos_id)

    def decode(self, ids):
        """Text of ids, eos/pad and unk dropped: transformers' decode(ids, skip_special_tokens=True)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.sp.get_piece_size():
                raise ValueError(f"id {i} is outside the vocabulary (0..{self.sp.get_piece_size() - 1})")
        return self.sp.decode([i for i in ids if i not in (self.eos_id, self.unk_id)]).strip()

    def __call__(self, texts, max_length=None, return_attention_mask=False):
        """np.int64 ids (B, max_length) padded with the pad id, and the attention mask when asked.

        The mask is 1 over the ids and their eos, 0 over the padding (as transformers returns it).
        """
        texts = as_text_list(texts)
        max_length = self.model_max_length if max_length is None else max_length
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        ids = np.full((len(texts), max_length), self.pad_id, dtype=np.int64)  # (B, L)
        mask = np.zeros((len(texts), max_length), dtype=np.int64)  # (B, L)
        for row, text in enumerate(texts):
            content = self.sp.piece_to_id(self.tokenize(text))
            sequence = append_eos(content[: max_length - 1], self.eos_id)
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        return (ids, mask) if return_attention_mask else ids
