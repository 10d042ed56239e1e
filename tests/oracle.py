"""The oracle: random transformers SigLIP checkpoints, saved with save_pretrained, that tests load with both.

No weights can be downloaded here, so every test builds its own model from a config and random weights.
transformers initialises logit_scale and logit_bias to 0; we give them non-zero values so that the
scale and bias paths are exercised.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

SMALL_TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=16)
SMALL_VISION = dict(hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                    patch_size=8)


def hf_config(text=None, vision=None):
    """A transformers SiglipConfig; projection_size defaults to the vision width so the towers can meet."""
    text, vision = {**SMALL_TEXT, **(text or {})}, {**SMALL_VISION, **(vision or {})}
    text.setdefault("projection_size", vision["hidden_size"])
    return transformers.SiglipConfig(text_config=text, vision_config=vision)


def save_random_siglip(folder, config, seed=0, logit_scale=2.3, logit_bias=-4.7):
    """Build a random transformers.SiglipModel, save it with save_pretrained, return the folder."""
    torch.manual_seed(seed)
    model = transformers.SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        model.logit_bias.fill_(logit_bias)
    model.save_pretrained(folder)
    return folder


def load_hf(folder, attn_implementation="eager", model_class=None):
    model_class = model_class or transformers.SiglipModel
    return model_class.from_pretrained(folder, attn_implementation=attn_implementation).eval()


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def train_sentencepiece(folder, sentences, vocab_size):
    """spiece.model in folder with SigLIP's special ids (pad 0, eos 1, unk 2, no bos), trained on the spot."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_prefix=str(folder / "spiece"),
                                   vocab_size=vocab_size, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, minloglevel=2)
    return folder / "spiece.model"


def save_checkpoint_folder(folder, captions, text_length=64, vocab_size=60):
    """A random SigLIP folder as users have one: weights and config, a spiece.model trained on `captions`, and
    tokenizer_config.json (text_length tokens) and preprocessor_config.json (32 x 32) beside them."""
    import json

    save_random_siglip(folder, hf_config(text=dict(max_position_embeddings=text_length, vocab_size=vocab_size)))
    train_sentencepiece(folder, captions * 20, vocab_size=vocab_size)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": text_length}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}}))
    return folder
