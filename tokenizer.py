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

SigLIP 2's fixed-resolution checkpoints (google/siglip2-base-patch16-224 and kin, model_type "siglip") ship
Gemma's tokenizer instead: tokenizer.model (a BPE model, 256k pieces, byte fallback, no normalization) and a
tokenizer_config.json naming GemmaTokenizer. SiglipTokenizer.from_pretrained hands such a folder to
Siglip2Tokenizer, which gives the ids of transformers' GemmaTokenizer on lowercased text: SigLIP 2 was trained on
lowercased text, and GemmaTokenizer does not lowercase. Its settings (no bos, eos appended, right padding with
<pad> = 0, text length 64) are read from the folder's files, as transformers reads them.
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


def load_sentencepiece(vocab_file):
    """(the file's bytes, a SentencePieceProcessor on them); InputError naming a git-lfs pointer or a file that does
    not parse."""
    check_not_lfs_pointer(vocab_file)
    vocab_bytes = Path(vocab_file).read_bytes()
    try:
        return vocab_bytes, spm.SentencePieceProcessor(model_proto=vocab_bytes)
    except RuntimeError:
        raise InputError(f"{vocab_file}: not a SentencePiece model (the file does not parse)") from None


def checked_max_length(max_length, default):
    """max_length, or the default when None; ValueError unless a positive int."""
    max_length = default if max_length is None else max_length
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    return max_length


def pad_rows(rows, max_length, pad_id, side="right"):
    """np.int64 ids and attention mask, both (B, max_length): each row of ids padded with pad_id on `side`
    ("right": after the ids, "left": before them), the mask 1 over the ids and 0 over the padding."""
    ids = np.full((len(rows), max_length), pad_id, dtype=np.int64)  # (B, L)
    mask = np.zeros((len(rows), max_length), dtype=np.int64)  # (B, L)
    for row, sequence in enumerate(rows):
        columns = slice(0, len(sequence)) if side == "right" else slice(max_length - len(sequence), max_length)
        ids[row, columns] = sequence
        mask[row, columns] = 1
    return ids, mask


def tokenizer_class(model_dir):
    """tokenizer_config.json's tokenizer_class, or None when the folder has no such file or key."""
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return None
    name = read_json(path).get("tokenizer_class")
    if name is not None and not isinstance(name, str):
        raise InputError(f"{path}: tokenizer_class must be a string, got {name!r}")
    return name


class SiglipTokenizer:
    """Text -> np.int64 ids (B, max_length), always padded; mirrors transformers.SiglipTokenizer. For SigLIP 2
    folders, from_pretrained gives a Siglip2Tokenizer, which has the same calls."""

    def __init__(self, vocab_file, model_max_length=64, do_lower_case=True):
        check_settings(model_max_length, do_lower_case)
        self.vocab_file = vocab_file
        self.vocab_bytes, self.sp = load_sentencepiece(vocab_file)  # save_pretrained writes these bytes back
        self.model_max_length = model_max_length
        self.do_lower_case = do_lower_case
        self.eos_id = self.known_piece_id(EOS_TOKEN)
        self.unk_id = self.known_piece_id(UNK_TOKEN)
        self.pad_id = self.eos_id
        self.unk_piece_count = len(self.sp.encode(UNK_TOKEN, out_type=str))

    @classmethod
    def from_pretrained(cls, path_or_repo_id):
        """A local folder or a cached Hub id with spiece.model (+ tokenizer_config.json); a Siglip2Tokenizer instead
        when its tokenizer_config.json names a Gemma tokenizer (SigLIP 2's), as AutoTokenizer picks by that key."""
        model_dir = resolve_model_dir(path_or_repo_id)
        if tokenizer_class(model_dir) in GEMMA_CLASSES:
            return Siglip2Tokenizer.from_pretrained(model_dir)
        vocab_file = model_dir / "spiece.model"
        if not vocab_file.is_file():
            hint = (" (its tokenizer.model is SigLIP 2's Gemma tokenizer: tokenizer_config.json must then say "
                    "\"tokenizer_class\": \"GemmaTokenizer\")") if (model_dir / "tokenizer.model").is_file() else ""
            raise FileNotFoundError(f"{vocab_file}: no spiece.model in {path_or_repo_id}{hint}")
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
        max_length = checked_max_length(max_length, self.model_max_length)
        rows = [append_eos(self.sp.piece_to_id(self.tokenize(text))[: max_length - 1], self.eos_id) for text in texts]
        ids, mask = pad_rows(rows, max_length, self.pad_id)
        return (ids, mask) if return_attention_mask else ids


# SigLIP 2: Gemma's SentencePiece tokenizer, on lowercased text.

GEMMA_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")  # tokenizer_class of a SigLIP 2 folder
SIGLIP2_TEXT_LENGTH = 64  # what SigLIP 2 was trained with: its text_config.max_position_embeddings
NO_LENGTH_LIMIT = int(1e30)  # transformers' VERY_LARGE_INTEGER, the model_max_length of a tokenizer that sets none
SIDES = ("left", "right")
TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")
GEMMA_TOKENS = dict(zip(TOKEN_KEYS, ("<bos>", "<eos>", "<pad>", "<unk>", "<mask>")))
GEMMA_DEFAULTS = {"add_bos_token": False, "add_eos_token": False, "padding_side": "left", "truncation_side": "right"}
NORMAL_PIECE, CONTROL_PIECE, USER_DEFINED_PIECE = 1, 3, 4  # sentencepiece ModelProto.SentencePiece.Type
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_content(value, where):
    """A token's text, from a string or an AddedToken object ({"content": ...}); InputError naming `where`."""
    content = value.get("content") if isinstance(value, dict) else value
    if not isinstance(content, str) or not content:
        raise InputError(f"{where} must be a token (a string, or an object with a \"content\" string), got {value!r}")
    return content


def special_token_names(config, model_dir):
    """The five named tokens: tokenizer_config.json's, else Gemma's. special_tokens_map.json overrides them when
    tokenizer_config.json has no added_tokens_decoder, the one case transformers reads that file in
    (PreTrainedTokenizerBase._from_pretrained)."""
    names = dict(GEMMA_TOKENS)
    sources = [(model_dir / "tokenizer_config.json", config)]
    legacy = model_dir / "special_tokens_map.json"
    if "added_tokens_decoder" not in config and legacy.is_file():
        sources.append((legacy, read_json(legacy)))
    for path, values in sources:
        names.update({key: token_content(values[key], f"{path}: {key}") for key in TOKEN_KEYS if key in values})
    return names


def read_added_tokens_decoder(entries, path, key="added_tokens_decoder"):
    """{id: {"content", "special"}} from an added_tokens_decoder object ({"5": {"content": ...}}). siglip-min
    matches added tokens as written, so entries that strip the spaces beside them or match whole words only are
    refused."""
    if not isinstance(entries, dict):
        raise InputError(f"{path}: {key} must be an object of id: token, got {entries!r}")
    decoder = {}
    for token_id, entry in entries.items():
        where = f"{path}: {key}[{token_id!r}]"
        if not (token_id.isdigit() and isinstance(entry, dict)):
            raise InputError(f"{where}: expected an id and a token object, got {token_id!r}: {entry!r}")
        for flag in ("lstrip", "rstrip", "single_word"):
            if entry.get(flag):
                raise InputError(f"{where}: {flag} true is not supported (siglip-min matches added tokens as written)")
        decoder[int(token_id)] = {"content": token_content(entry, where), "special": entry.get("special") is True}
    return decoder


def read_tokenizer_json(model_dir, config):
    """tokenizer.json, where transformers reads more than the vocabulary from it (the vocabulary is tokenizer.model's,
    read instead): its added_tokens when tokenizer_config.json has no added_tokens_decoder, its post_processor when
    it sets neither add_bos_token nor add_eos_token (as transformers 5's save_pretrained writes them). {} elsewhere,
    or without the file. Padding and truncation set in the file are refused."""
    path = model_dir / "tokenizer.json"
    sets_all = "added_tokens_decoder" in config and ("add_bos_token" in config or "add_eos_token" in config)
    if sets_all or not path.is_file():
        return {}
    fast = read_json(path)
    for key in ("padding", "truncation"):
        if fast.get(key) is not None:
            raise InputError(f"{path}: {key} is set, which siglip-min does not mirror (give max_length in the call)")
    return fast


def read_added_tokens(config, fast, model_dir):
    """The added tokens transformers reads: tokenizer_config.json's added_tokens_decoder, else tokenizer.json's
    added_tokens (PreTrainedTokenizerBase._from_pretrained), else none."""
    if "added_tokens_decoder" in config:
        return read_added_tokens_decoder(config["added_tokens_decoder"], model_dir / "tokenizer_config.json")
    path, tokens = model_dir / "tokenizer.json", fast.get("added_tokens", [])
    if not (isinstance(tokens, list) and all(isinstance(token, dict) for token in tokens)):
        raise InputError(f"{path}: added_tokens must be a list of token objects")
    return read_added_tokens_decoder({str(token.get("id")): token for token in tokens}, path, "added_tokens")


def template_bos_eos(post_processor, names, path):
    """(add_bos_token, add_eos_token) of a tokenizer.json post_processor: a TemplateProcessing whose single
    template is [bos] $A [eos], each optional (TokenizersBackend.update_post_processor writes these); none adds
    neither."""
    if post_processor is None:
        return False, False
    try:
        assert post_processor["type"] == "TemplateProcessing"
        template = [item["SpecialToken"]["id"] if "SpecialToken" in item else "$" + item["Sequence"]["id"]
                    for item in post_processor["single"]]
    except (AssertionError, KeyError, TypeError):
        raise InputError(f"{path}: post_processor {json.dumps(post_processor)[:200]} is not supported "
                         f"(a TemplateProcessing is)") from None
    for add_bos, add_eos in ((False, False), (False, True), (True, False), (True, True)):
        if template == [names["bos_token"]] * add_bos + ["$A"] + [names["eos_token"]] * add_eos:
            return add_bos, add_eos
    raise InputError(f"{path}: post_processor template {template} is not supported (bos, text, eos, the first "
                     f"and last optional, are)")


def read_extra_special_tokens(config, path):
    """The extra special tokens as transformers 5 reads them: additional_special_tokens when extra_special_tokens
    is unset or empty, else extra_special_tokens. None when the config has neither (or an empty object): transformers
    then takes the model's control and user-defined pieces (SentencePieceExtractor.extract), and so does
    Siglip2Tokenizer; a list replaces them."""
    extra = config.get("extra_special_tokens")
    if "additional_special_tokens" in config and not extra:
        key, values = "additional_special_tokens", config["additional_special_tokens"]
    elif isinstance(extra, dict):
        if extra:
            raise InputError(f"{path}: extra_special_tokens: named tokens ({', '.join(extra)}) are not supported")
        return None
    elif "extra_special_tokens" in config:
        key, values = "extra_special_tokens", extra
    else:
        return None
    values = [] if values is None else values
    if not isinstance(values, list):
        raise InputError(f"{path}: {key} must be a list of tokens, got {values!r}")
    return [token_content(value, f"{path}: {key}") for value in values]


def text_length(model_max_length):
    """model_max_length, except transformers' "no limit" (the SigLIP 2 checkpoints' 1e30): then SigLIP 2's 64."""
    is_number = isinstance(model_max_length, (int, float)) and not isinstance(model_max_length, bool)
    return SIGLIP2_TEXT_LENGTH if is_number and model_max_length >= NO_LENGTH_LIMIT else model_max_length


def read_gemma_config(model_dir):
    """Siglip2Tokenizer's arguments from a folder's tokenizer_config.json (and special_tokens_map.json and
    tokenizer.json where transformers reads them). For keys they leave out, the defaults of transformers'
    GemmaTokenizer (no bos, no eos, left padding), not SigLIP 2's. Errors name the file and key."""
    path = model_dir / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    settings = {key: config.get(key, default) for key, default in GEMMA_DEFAULTS.items()}
    settings["model_max_length"] = text_length(config.get("model_max_length", NO_LENGTH_LIMIT))
    settings["do_lower_case"] = config.get("do_lower_case", True)
    try:
        check_gemma_settings(**settings)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    names, fast = special_token_names(config, model_dir), read_tokenizer_json(model_dir, config)
    if fast and not ("add_bos_token" in config or "add_eos_token" in config):
        bos_eos = template_bos_eos(fast.get("post_processor"), names, model_dir / "tokenizer.json")
        settings["add_bos_token"], settings["add_eos_token"] = bos_eos
    return {**settings, **names, "added_tokens_decoder": read_added_tokens(config, fast, model_dir),
            "extra_special_tokens": read_extra_special_tokens(config, path)}


def check_gemma_settings(model_max_length, do_lower_case, add_bos_token, add_eos_token, padding_side,
                         truncation_side):
    """check_settings, true/false bos and eos, and "left" or "right" sides; InputError naming the setting."""
    check_settings(model_max_length, do_lower_case)
    for name, value in (("add_bos_token", add_bos_token), ("add_eos_token", add_eos_token)):
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
    for name, value in (("padding_side", padding_side), ("truncation_side", truncation_side)):
        if value not in SIDES:
            raise InputError(f"{name} must be \"left\" or \"right\", got {value!r}")


def read_model_proto(vocab_bytes):
    """The SentencePiece ModelProto: piece types and normalizer settings, which the processor does not expose.
    Needs protobuf, as transformers' own reading of tokenizer.model does."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(vocab_bytes)
    return proto


def check_encodes_as_gemma(proto, vocab_file):
    """InputError unless SentencePiece encodes with this model as transformers' GemmaTokenizer does: a BPE model with
    byte fallback (GemmaTokenizer builds a byte-fallback BPE from any model) and without SentencePiece's own
    normalization (GemmaTokenizer ignores it: it only writes spaces as '▁'). Gemma's tokenizer.model is all that."""
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type != trainer.BPE:
        raise InputError(f"{vocab_file}: trainer_spec.model_type is {trainer.ModelType.Name(trainer.model_type)}; "
                         f"SigLIP 2's Gemma tokenizer is BPE")
    if not trainer.byte_fallback:
        raise InputError(f"{vocab_file}: trainer_spec.byte_fallback is false; SigLIP 2's Gemma tokenizer has it")
    for field, wanted in (("add_dummy_prefix", False), ("remove_extra_whitespaces", False),
                          ("escape_whitespaces", True)):
        if getattr(normalizer, field) != wanted:
            raise InputError(f"{vocab_file}: normalizer_spec.{field} is {not wanted}; transformers' GemmaTokenizer "
                             f"ignores it, so siglip-min reads only models where it is {wanted} (as Gemma's)")
    if normalizer.precompiled_charsmap:
        raise InputError(f"{vocab_file}: normalizer_spec.name is {normalizer.name!r}; transformers' GemmaTokenizer "
                         f"ignores it, so siglip-min reads only models without one (\"identity\", as Gemma's)")


def without_user_defined_matching(proto):
    """The model's bytes with its user-defined pieces made normal ones. SentencePiece matches user-defined pieces
    whole wherever they are written; transformers' GemmaTokenizer matches only its added tokens (which Siglip2Tokenizer
    splits off before SentencePiece) and reaches any other piece by BPE merges alone, as SentencePiece does a normal
    one."""
    for piece in proto.pieces:
        if piece.type == USER_DEFINED_PIECE:
            piece.type = NORMAL_PIECE
    return proto.SerializeToString()


def bytes_as_text(run):
    """Text of a run of byte-fallback bytes: their UTF-8, or one U+FFFD per byte when they are not valid UTF-8, as
    the tokenizers library's decoders.ByteFallback does."""
    try:
        return bytes(run).decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd" * len(run)


def join_pieces(pieces):
    """Text of pieces as transformers' Gemma decoder writes it: '▁' as a space, runs of byte pieces (<0xE2>) as
    bytes_as_text (decoders Replace, ByteFallback, Fuse)."""
    parts, run = [], []
    for piece in pieces:
        byte = BYTE_PIECE.fullmatch(piece)
        if byte:
            run.append(int(byte.group(1), 16))
            continue
        parts += [bytes_as_text(run), piece.replace(WORD_START, " ")]
        run = []
    return "".join(parts) + bytes_as_text(run)


class Siglip2Tokenizer:
    """Text -> np.int64 ids (B, max_length), always padded, for SigLIP 2: transformers' GemmaTokenizer
    (models/gemma/tokenization_gemma.py, on TokenizersBackend) called on text.lower().

    SigLIP 2 was trained on lowercased text, and GemmaTokenizer, which the fixed-resolution checkpoints name, does
    not lowercase (transformers' SigLIP 2 docs tell users to); this tokenizer does, first: "<EOS>" is the eos too.
    With do_lower_case=False it is GemmaTokenizer on the text as given. One text goes through:

        lowercase                  text.lower()
        split on added tokens      as collect_added_tokens lists them, matched as written, longest first
                                   (tokenizers' AddedVocabulary)
        SentencePiece              each other part, encoded as GemmaTokenizer's BPE does (checked by
                                   check_encodes_as_gemma: BPE, byte fallback, no normalization but ' ' -> '▁')
        truncate, bos and eos      to max_length less the bos and eos it adds, on truncation_side
        pad                        with the pad id, on padding_side

    The defaults are SigLIP 2's settings (no bos, eos appended, right padding, "<pad>" = 0, text length 64, from
    transformers' convert_siglip2_to_hf.py); from_pretrained takes what the folder's files say.
    """

    def __init__(self, vocab_file, model_max_length=SIGLIP2_TEXT_LENGTH, do_lower_case=True, add_bos_token=False,
                 add_eos_token=True, padding_side="right", truncation_side="right", bos_token="<bos>",
                 eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                 added_tokens_decoder=None, extra_special_tokens=None):
        check_gemma_settings(model_max_length, do_lower_case, add_bos_token, add_eos_token, padding_side,
                             truncation_side)
        self.vocab_file = vocab_file
        self.vocab_bytes, self.sp = load_sentencepiece(vocab_file)  # save_pretrained writes these bytes back
        proto = read_model_proto(self.vocab_bytes)
        check_encodes_as_gemma(proto, vocab_file)
        self.model_max_length, self.do_lower_case = model_max_length, do_lower_case
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.tokens = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (self.known_piece_id(token, key)
                                                              for key, token in self.tokens.items())
        if mask_token is not None and self.sp.id_to_piece(self.sp.piece_to_id(mask_token)) == mask_token:
            self.tokens["mask_token"] = mask_token  # transformers would add a missing one as a new id; here it is not
        self.extra_special_tokens = list(extra_special_tokens or [])
        self.added_tokens = self.collect_added_tokens(proto, added_tokens_decoder or {}, extra_special_tokens)
        longest_first = sorted(self.added_tokens, key=len, reverse=True)
        self.added_token_split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
        self.special_ids = {token_id for token_id, special in self.added_tokens.values() if special}
        self.sp = spm.SentencePieceProcessor(model_proto=without_user_defined_matching(proto))

    @classmethod
    def from_pretrained(cls, path_or_repo_id):
        """A local folder or a cached Hub id with tokenizer.model and tokenizer_config.json (+ special_tokens_map.json
        and tokenizer.json where transformers reads settings from them: read_gemma_config)."""
        model_dir = resolve_model_dir(path_or_repo_id)
        vocab_file = model_dir / "tokenizer.model"
        if not vocab_file.is_file():
            raise InputError(f"{vocab_file}: missing; tokenizer_config.json's tokenizer_class "
                             f"{tokenizer_class(model_dir)} (SigLIP 2's) is read from this SentencePiece model "
                             f"(siglip-min does not read the vocabulary from tokenizer.json)")
        return cls(vocab_file, **read_gemma_config(model_dir))

    def save_pretrained(self, folder):
        """tokenizer.model (the bytes it was loaded from) and tokenizer_config.json, which transformers'
        AutoTokenizer reads to the same ids (on lowercased text: transformers ignores do_lower_case here). Every added
        token is in added_tokens_decoder; extra_special_tokens, a list even when empty, keeps transformers from adding
        the model's pieces again."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.model").write_bytes(self.vocab_bytes)
        added = {str(token_id): {"content": content, "special": special, "lstrip": False, "rstrip": False,
                                 "single_word": False, "normalized": False}
                 for content, (token_id, special) in sorted(self.added_tokens.items(), key=lambda item: item[1])}
        config = {"tokenizer_class": "GemmaTokenizer", "model_max_length": self.model_max_length,
                  "do_lower_case": self.do_lower_case, "add_bos_token": self.add_bos_token,
                  "add_eos_token": self.add_eos_token, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side, **self.tokens, "added_tokens_decoder": added,
                  "extra_special_tokens": self.extra_special_tokens}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    def known_piece_id(self, piece, key):
        """The id of a piece the vocabulary must have; InputError naming the setting when it has not."""
        piece_id = self.sp.piece_to_id(piece)
        if self.sp.id_to_piece(piece_id) != piece:
            raise InputError(f"{self.vocab_file}: the SentencePiece model has no {piece!r} piece (the {key})")
        return piece_id

    def collect_added_tokens(self, proto, added_tokens_decoder, extra_special_tokens):
        """{text: (id, special)}: the tokens matched in the text before SentencePiece, as transformers adds them.

        Without extra_special_tokens (None), the model's control pieces (special) and user-defined pieces (not)
        (SentencePieceExtractor.extract); then added_tokens_decoder's entries, each the piece of its id; then the
        named and extra tokens, special always. Special tokens are the ones decode drops."""
        added = {}
        if extra_special_tokens is None:
            added = {piece.piece: (index, piece.type == CONTROL_PIECE) for index, piece in enumerate(proto.pieces)
                     if piece.type in (CONTROL_PIECE, USER_DEFINED_PIECE)}
        for token_id, entry in sorted(added_tokens_decoder.items()):
            if not (0 <= token_id < self.sp.get_piece_size() and self.sp.id_to_piece(token_id) == entry["content"]):
                raise InputError(f"{self.vocab_file}: added_tokens_decoder's {token_id}: {entry['content']!r} is not "
                                 f"piece {token_id} of the SentencePiece model (new tokens are not supported)")
            added[entry["content"]] = (token_id, entry["special"])
        named = list(self.tokens.items()) + [("extra_special_tokens", token) for token in extra_special_tokens or []]
        added.update({token: (self.known_piece_id(token, key), True) for key, token in named})
        return added

    def content_ids(self, text):
        """Ids of one text before truncation, bos and eos: lowercased, split on the added tokens, the rest
        SentencePiece."""
        check_is_text(text)
        parts = self.added_token_split.split(text.lower() if self.do_lower_case else text)
        ids = []
        for index, part in enumerate(parts):  # odd indices: the added tokens split on
            if index % 2:
                ids.append(self.added_tokens[part][0])
            elif part:
                ids += self.sp.encode(part)
        return ids

    def with_special_ids(self, ids):
        """[bos] + ids + [eos], each as the settings say (TokenizersBackend.update_post_processor's template)."""
        return [self.bos_id] * self.add_bos_token + ids + [self.eos_id] * self.add_eos_token

    def truncate(self, ids, room):
        """At most `room` ids, cut from the truncation side."""
        return ids[:room] if self.truncation_side == "right" else ids[max(len(ids) - room, 0):]

    def encode(self, text):
        """Ids of one text, bos and eos as set, neither truncated nor padded: transformers' encode(text.lower())."""
        return self.with_special_ids(self.content_ids(text))

    def decode(self, ids):
        """Text of ids, special tokens dropped: transformers' decode(ids, skip_special_tokens=True)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.sp.get_piece_size():
                raise ValueError(f"id {i} is outside the vocabulary (0..{self.sp.get_piece_size() - 1})")
        return join_pieces([self.sp.id_to_piece(i) for i in ids if i not in self.special_ids])

    def __call__(self, texts, max_length=None, return_attention_mask=False):
        """np.int64 ids (B, max_length) padded with the pad id on padding_side, and the attention mask when asked
        (1 over the ids, bos and eos, 0 over the padding, as transformers returns it)."""
        texts = as_text_list(texts)
        max_length = checked_max_length(max_length, self.model_max_length)
        room = max_length - self.add_bos_token - self.add_eos_token
        if room < 0:
            raise ValueError(f"max_length {max_length} leaves no room for the bos and eos ids this tokenizer adds")
        rows = [self.with_special_ids(self.truncate(self.content_ids(text), room)) for text in texts]
        ids, mask = pad_rows(rows, max_length, self.pad_id, self.padding_side)
        return (ids, mask) if return_attention_mask else ids
