"""Assignment 1: SigLIP's inputs, text and image, in plain Python and NumPy (no torch).

Fill in every `raise NotImplementedError()`; the comment above each says what the piece does and the shapes it
takes. The model never sees text or pictures: it sees int64 token ids (B, L) and float32 pixel values (B, 3, H, W).
Turning a caption and a picture into those, exactly as SigLIP was trained, is this assignment. Check your work with
`python course/grade.py 01_inputs FOLDER --public`.

References: transformers' SiglipTokenizer (models/siglip/tokenization_siglip.py: canonicalize_text, which comes from
big_vision's prompt_engineering.canonicalize_text, and _add_eos_if_not_present) and SiglipImageProcessorPil
(models/siglip/image_processing_pil_siglip.py, with image_transforms.convert_to_rgb, rescale and normalize).
The repository's tokenizer.py and preprocess.py give the same values and are what the grader compares with.
"""
import re
import string

import numpy as np
from PIL import Image


# canonicalize ----------------------------------------------------------------------------------------------------

def canonicalize_text(text):
    """SigLIP's text canonicalisation: lowercase, drop every character of string.punctuation, collapse each run of
    whitespace (spaces, tabs, newlines, any Unicode space) to one space, strip the ends. In that order.

    transformers SiglipTokenizer.canonicalize_text (from big_vision's prompt_engineering.canonicalize_text).
    "A  red,\tcircle!" -> "a red circle".
    """
    # str.lower; str.translate with str.maketrans("", "", string.punctuation) deletes the punctuation (deletes: "a.b"
    # becomes "ab", not "a b"); re.sub(r"\s+", " ", ...) collapses runs of any whitespace; then strip.
    ### BEGIN SOLUTION
    text = text.lower()
    text = text.translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()
    ### END SOLUTION


# token_ids -------------------------------------------------------------------------------------------------------

def truncate_with_eos(ids, max_length, eos_id):
    """One row of token ids, a list of ints -> a list of at most max_length ints that ends with eos_id.

    Keep the first max_length - 1 ids (room for the eos), then append eos_id unless what is kept already ends with
    it (a text that spelled out "</s>" has its eos already). [] -> [eos_id].

    transformers PythonBackend.prepare_for_model (truncation) and SiglipTokenizer._add_eos_if_not_present.
    """
    # Truncate first, then look at the last id kept: the check is on the truncated row.
    ### BEGIN SOLUTION
    kept = list(ids[: max_length - 1])
    return kept if kept and kept[-1] == eos_id else kept + [eos_id]
    ### END SOLUTION


def pad_right(rows, max_length, pad_id):
    """Rows of ids (lists of ints, each at most max_length long) -> (ids, mask), both np.int64 (B, max_length).

    ids: each row followed by pad_id up to max_length (padding on the right, as SiglipTokenizer pads).
    mask: 1 where ids holds a row's own id (its eos included), 0 over the padding: transformers' attention_mask.
    """
    # Start from arrays full of pad_id and of 0, then copy each row in at its start. Build the mask from the rows'
    # lengths, not by comparing ids with pad_id: SigLIP's pad id is its eos id.
    ### BEGIN SOLUTION
    ids = np.full((len(rows), max_length), pad_id, dtype=np.int64)  # (B, L)
    mask = np.zeros((len(rows), max_length), dtype=np.int64)  # (B, L)
    for row, sequence in enumerate(rows):
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
    return ids, mask
    ### END SOLUTION


def token_ids(rows, max_length, eos_id, pad_id):
    """Rows of SentencePiece ids, one list per text -> (ids, mask), np.int64 (B, max_length) each: what
    SiglipTokenizer(texts, padding="max_length", truncation=True) returns as input_ids and attention_mask.
    """
    # truncate_with_eos on each row, then pad_right (the grader swaps in its own two to test this alone).
    ### BEGIN SOLUTION
    return pad_right([truncate_with_eos(ids, max_length, eos_id) for ids in rows], max_length, pad_id)
    ### END SOLUTION


# normalize -------------------------------------------------------------------------------------------------------

def normalize(pixels, rescale_factor, image_mean, image_std):
    """uint8 pixels (H, W, 3) -> float32 (3, H, W): rescaled, normalised per channel, channels first.

    rescale as transformers does: pixels * rescale_factor in float64, then cast to float32. normalize in float32:
    (x - mean[c]) / std[c] for channel c, with mean and std as float32 arrays. Then (H, W, 3) -> (3, H, W).
    transformers image_transforms.rescale and normalize, as SiglipImageProcessorPil calls them; with SigLIP's
    rescale_factor 1/255 and mean = std = 0.5 the values run from -1 to 1.
    """
    # Broadcasting a (3,) mean against (H, W, 3) pixels subtracts it channel by channel. Channels first is a
    # transpose, not a reshape: a reshape keeps the memory order and scrambles the pixels.
    ### BEGIN SOLUTION
    rescaled = (pixels.astype(np.float64) * rescale_factor).astype(np.float32)  # (H, W, 3)
    mean = np.asarray(image_mean, dtype=np.float32)  # (3,)
    std = np.asarray(image_std, dtype=np.float32)  # (3,)
    return ((rescaled - mean) / std).transpose(2, 0, 1)  # (3, H, W)
    ### END SOLUTION


# preprocess ------------------------------------------------------------------------------------------------------

def to_rgb(image):
    """A PIL image of any mode (RGB, RGBA, LA, L, P, ...) -> an RGB PIL image of the same size.

    An image with an alpha band ("A" in image.getbands()) or a transparent colour (image.info["transparency"],
    as palette PNGs have) is composited on white: transparent pixels become white, not whatever colour they hide.
    Every other mode is image.convert("RGB"). transformers image_transforms.convert_to_rgb.
    """
    # Composite: image.convert("RGBA"), Image.alpha_composite(a white RGBA image of the same size, it), then
    # .convert("RGB"). convert("RGB") alone drops the alpha band and keeps the hidden colours.
    ### BEGIN SOLUTION
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
    ### END SOLUTION


def preprocess(images, config):
    """A list of PIL images (any modes and sizes) -> np.float32 pixel_values (B, 3, height, width).

    config: a preprocessor_config.json as a dict, as in the model's folder: size {"height", "width"}, resample
    (PIL's filter number: 3 bicubic for SigLIP), rescale_factor, image_mean, image_std. Each image: to_rgb, resized
    with PIL to exactly height x width (no crop: the aspect ratio is not kept) with config's resample, then
    normalize. transformers SiglipImageProcessorPil.__call__ (do_convert_rgb, do_resize, do_rescale, do_normalize).
    """
    # PIL's image.resize takes (width, height), in that order; np.asarray of an RGB image is uint8 (H, W, 3). Use
    # to_rgb and normalize (the grader swaps in its own to test this part alone).
    ### BEGIN SOLUTION
    height, width = config["size"]["height"], config["size"]["width"]
    batch = []
    for image in images:
        rgb = to_rgb(image).resize((width, height), resample=config["resample"])
        pixels = np.asarray(rgb)  # (H, W, 3) uint8
        batch.append(normalize(pixels, config["rescale_factor"], config["image_mean"], config["image_std"]))  # (3, H, W)
    return np.stack(batch)  # (B, 3, H, W)
    ### END SOLUTION
