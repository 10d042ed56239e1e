"""SigLIP image preprocessing: images -> pixel_values, with PIL and NumPy only.

No torch: ports in other frameworks feed these arrays to their own models. The values are those of
transformers 5.24 `SiglipImageProcessorPil` (models/siglip/image_processing_pil_siglip.py, on
`PilBackend`, image_transforms.py and image_utils.load_image). One image goes through:

    open_image        a path: PIL opens it, EXIF rotation applied, .convert("RGB") (load_image: so a
                      path's alpha is dropped, not composited, as transformers does)
    pil_to_rgb        alpha or a transparency colour composited on white, other modes .convert("RGB")
    array_to_rgb      (H, W) and (H, W, 1) repeated to 3 channels, (H, W, 4) composited on white
    float_to_uint8    float arrays in [0, 1]: x * 255 truncated, as transformers' to_pil_image does
    resize            PIL, to exactly (height, width): no crop, aspect not kept; with preprocessor_config.json's
                      resample: bicubic (3) for SigLIP, the default, bilinear (2) for SigLIP 2 (read_resample)
    rescale, normalize, HWC -> CHW   one float32 lookup table per channel, bit-identical to
                      transformers' float64 rescale then float32 normalize

Float arrays are taken as already in [0, 1], like transformers called with `do_rescale=False`
(its default would divide them by 255 twice), except that transformers reads a float array holding
only 0s and 1s as 0..255 values, and this does not.

SigLIP 2's fixed-resolution checkpoints (google/siglip2-base-patch16-224 and kin) use this same processor: their
preprocessor_config.json says "resample": 2 (bilinear). "do_convert_rgb": null, which configs saved by transformers
4.4x hold, is read as true (read_preprocessor_config).

SigLIP 2 NaFlex checkpoints (google/siglip2-base-patch16-naflex: "image_processor_type": "Siglip2ImageProcessor")
get Siglip2ImageProcessor, the values of transformers 5.24 `Siglip2ImageProcessorPil`
(models/siglip2/image_processing_pil_siglip2.py). The same conversion to RGB, then, at the native aspect ratio:

    naflex_size       (height, width) in whole patches, at least one each, about the largest whose grid holds at
                      most max_num_patches patches: get_image_size_for_max_num_patches's bisection on the scale, float
                      for float (it stops within 1e-5, so now and then a row or column short, as transformers is)
    resize, rescale, normalize   as above (PIL, the config's resample: bilinear by default), kept (H, W, 3)
    to_patches        (rows * cols, p * p * 3): patches row by row, each one's pixels row by row, channels last
    padding           zeros up to max_num_patches patches; the mask is 1 for real patches, 0 for padding

The values are bit-identical to Siglip2ImageProcessorPil's. transformers' default "Siglip2ImageProcessor" class
(the torchvision backend, used when torchvision is installed) resizes with torch and gives slightly different
values; that is the one these checkpoints' preprocessor_config.json names, but this module follows the PIL one.
"""
import json
import math
import os
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hub import InputError, read_json, resolve_model_dir


def describe(index, path=None):
    """'photos/cat.jpg' for a path, else 'image 3' (its index in the list), or 'image' alone, for errors.

    A path names the file by itself; an index would count within the caller's batch, not its whole list."""
    if path is not None:
        return path
    return "image" if index is None else f"image {index}"


def check_pixel_limit(image, where):
    """Refuse images over PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) before decoding."""
    width, height = image.size
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise InputError(
            f"{where}: {width}x{height} pixels is over PIL's decompression-bomb limit "
            f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})"
        )


def check_not_empty(width, height, where):
    if width == 0 or height == 0:
        raise InputError(f"{where}: the image is empty ({width}x{height} pixels)")


def open_image(path, where):
    """The image at path, EXIF-rotated and converted to RGB as transformers' load_image does."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: no such file")
    if not os.path.isfile(path):
        raise InputError(f"{where}: not a file")
    try:
        with warnings.catch_warnings():  # check_pixel_limit raises for what PIL only warns about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise InputError(f"{where}: over PIL's decompression-bomb limit ({error})") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: not an image file PIL can read") from None
    except OSError as error:
        raise InputError(f"{where}: cannot be read ({error})") from None
    with image:
        check_pixel_limit(image, where)
        upright = decode_pixels(lambda: ImageOps.exif_transpose(image), image.mode, where)
        return decode_pixels(lambda: to_8_bit(upright, where).convert("RGB"), image.mode, where)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_8_bit(image, where):
    """A 16-bit greyscale image as 8-bit (mode L): v8 = round(v16 / 257), which maps 0..65535 onto 0..255 exactly
    (65535 = 255 * 257). PIL's convert, and so transformers, clip at 255 instead: most 16-bit pictures come out white.
    32-bit modes (I, F) have no one 8-bit scale and are refused. Other modes pass through."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = decode_pixels(lambda: np.asarray(image, dtype=np.float64), image.mode, where)  # (H, W)
        return Image.fromarray(np.round(values / 257).astype(np.uint8))
    if image.mode in ("I", "F"):
        raise InputError(f"{where}: mode {image.mode} image (32-bit pixels) has no one 8-bit scale; "
                         f"save it as 8-bit or 16-bit first")
    return image


def decode_pixels(make_image, mode, where):
    """Run make_image (which makes PIL decode and convert pixels), naming the image if that fails."""
    try:
        return make_image()
    except (OSError, SyntaxError, EOFError) as error:
        raise InputError(f"{where}: truncated or corrupt image data ({error})") from None
    except ValueError as error:
        raise InputError(f"{where}: PIL cannot convert this mode {mode} image to RGB ({error})") from None


def pil_to_rgb(image, where):
    """RGB PIL image; alpha and transparency are composited on white (image_transforms.convert_to_rgb)."""
    check_pixel_limit(image, where)
    check_not_empty(*image.size, where)
    image = to_8_bit(image, where)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = decode_pixels(lambda: image.convert("RGBA"), image.mode, where)
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return decode_pixels(lambda: image.convert("RGB"), image.mode, where)


def check_array(array, where):
    """(H, W) or (H, W, 1|3|4), not empty, uint8 or float with values in [0, 1]."""
    if array.ndim not in (2, 3):
        raise InputError(f"{where}: array of shape {array.shape}; expected (H, W) or (H, W, C)")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise InputError(f"{where}: array with {array.shape[2]} channels; expected 1, 3 or 4 (last axis)")
    check_not_empty(array.shape[1], array.shape[0], where)
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{where}: array of dtype {array.dtype}; expected uint8, or float in [0, 1]")
    if array.dtype != np.uint8 and not (np.all(array >= 0) and np.all(array <= 1)):
        raise InputError(f"{where}: float array with values outside [0, 1] (min {array.min()}, max {array.max()})")


def array_to_rgb(array):
    """(H, W, 3) of the same dtype: gray repeated, RGBA composited on white (convert_to_rgb on NumPy)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 3:
        return array
    white = 255 if array.dtype == np.uint8 else 1.0
    alpha = array[:, :, 3:] / white  # (H, W, 1)
    composite = alpha * array[:, :, :3] + (1 - alpha) * white
    return np.round(composite).astype(np.uint8) if white == 255 else composite.astype(array.dtype)


def float_to_uint8(array):
    """[0, 1] floats -> uint8 as transformers' to_pil_image: float64 * 255, float32, then truncated."""
    return (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)


def resize(image, size, resample):
    """uint8 (height, width, 3) of an RGB PIL image resized to exactly size = (height, width)."""
    height, width = size
    return np.asarray(image.resize((width, height), resample=resample))


def pixel_lookup_table(rescale_factor, image_mean, image_std):
    """float32 (3, 256): value of uint8 v in channel c after rescale and normalize.

    The same operations as transformers' rescale (float64 multiply, then float32) and normalize
    ((x - mean) / std in float32), done once per possible value instead of once per pixel.
    """
    rescaled = (np.arange(256, dtype=np.float64) * rescale_factor).astype(np.float32)  # (256,)
    mean = np.asarray(image_mean, dtype=np.float32)[:, None]  # (3, 1)
    std = np.asarray(image_std, dtype=np.float32)[:, None]  # (3, 1)
    return (rescaled[None, :] - mean) / std  # (3, 256)


def rescale_and_normalize(pixels, lookup_table, out):
    """Fill out (3, H, W) from uint8 pixels (H, W, 3): rescale, normalize and HWC -> CHW in one pass."""
    for channel in range(3):
        np.take(lookup_table[channel], pixels[:, :, channel], out=out[channel], mode="clip")


def read_size(size):
    """(height, width) from an int, a (height, width) pair or a {"height", "width"} dict, both positive ints."""
    if isinstance(size, dict):
        if set(size) != {"height", "width"}:
            raise InputError(f"size {size}: only {{'height', 'width'}} is supported (no shortest_edge)")
        pair = (size["height"], size["width"])
    else:
        pair = (size, size) if isinstance(size, int) else size
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(is_positive_int(v) for v in pair)):
        raise InputError(f"size must be a positive int or a positive height and width, got {size!r}")
    return tuple(pair)


def is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def check_normalization(rescale_factor, image_mean, image_std):
    """A positive rescale factor, and three finite means and three positive stds (one per RGB channel)."""
    if not is_number(rescale_factor) or rescale_factor <= 0:
        raise InputError(f"rescale_factor must be a positive number, got {rescale_factor!r}")
    for name, values in (("image_mean", image_mean), ("image_std", image_std)):
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(is_number(v) for v in values)):
            raise InputError(f"{name} must be three numbers (R, G, B), got {values!r}")
    if min(image_std) <= 0:
        raise InputError(f"image_std must be positive, got {list(image_std)}: normalising divides by it")


def read_resample(resample):
    """A PIL resampling filter from its number, as preprocessor_config.json stores it: any of PIL's Image.Resampling
    (0 nearest, 2 bilinear, 3 bicubic, ...), which transformers' PILImageResampling is. Not a bool or a float."""
    names = ", ".join(f"{f.value} {f.name.lower()}" for f in Image.Resampling)
    if not isinstance(resample, int) or isinstance(resample, bool):
        raise InputError(f"resample must be one of {names}; got {resample!r}")
    try:
        return Image.Resampling(resample)
    except ValueError:
        raise InputError(f"resample must be one of {names}; got {resample!r}") from None


def read_preprocessor_config(model_dir):
    """(constructor arguments, the file they come from) for a model folder: its preprocessor_config.json when it has
    one (switched-off steps refused), else SigLIP's defaults at the image size of its config.json. The one place
    that decides.

    "do_convert_rgb": null, which configs saved by transformers 4.4x hold, is taken as true: transformers then converts
    nothing, which gives the same pixels for RGB images and for paths (load_image converts them) and fails on the
    rest (a grey or RGBA image leaves it 1 or 4 channels to normalise with 3 means)."""
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        model_config = model_dir / "config.json"
        values = read_json(model_config) if model_config.is_file() else {}
        # a two-tower config.json nests the image size in vision_config; a lone vision tower's has it at the top
        vision = values if values.get("model_type") == "siglip_vision_model" else values.get("vision_config") or {}
        return ({"size": vision["image_size"]} if isinstance(vision, dict) and "image_size" in vision else {},
                model_config)
    config = read_json(path)
    check_steps(config, path)
    keys = ("size", "resample", "rescale_factor", "image_mean", "image_std")
    return {key: config[key] for key in keys if key in config}, path


def check_steps(config, path):
    """Refuse a preprocessor_config.json that switches a step off ("do_convert_rgb": null is read as true)."""
    for step in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
        if config.get(step, True) is not True and not (step == "do_convert_rgb" and config[step] is None):
            raise InputError(f"{path}: {step}={config[step]} is not supported (SigLIP does every step)")


def to_rgb_image(item, index):
    """An RGB PIL image from a PIL image, an array or a path; errors name the item (by index, None for a lone one)."""
    if isinstance(item, Image.Image):
        return pil_to_rgb(item, describe(index))
    if isinstance(item, np.ndarray):
        check_array(item, describe(index))
        rgb = array_to_rgb(item)
        return Image.fromarray(np.ascontiguousarray(rgb if rgb.dtype == np.uint8 else float_to_uint8(rgb)))
    if isinstance(item, (str, os.PathLike)):
        where = describe(index, os.fspath(item))
        return pil_to_rgb(open_image(item, where), where)
    raise TypeError(
        f"{describe(index)} is a {type(item).__name__}; expected a PIL image, a NumPy array or a path"
    )


def read_normalization(rescale_factor, image_mean, image_std):
    """(rescale_factor, image_mean and image_std as lists, their (3, 256) lookup table), checked: what both
    processors keep of the rescale and normalise steps."""
    check_normalization(rescale_factor, image_mean, image_std)
    table = pixel_lookup_table(rescale_factor, image_mean, image_std)  # (3, 256)
    return rescale_factor, list(image_mean), list(image_std), table


class SiglipImageProcessor:
    """Images -> np.float32 pixel_values (B, 3, H, W); mirrors transformers.SiglipImageProcessorPil."""

    def __init__(self, size=224, resample=Image.BICUBIC, rescale_factor=1 / 255,
                 image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)):
        self.size = read_size(size)  # (height, width)
        self.resample = read_resample(resample)
        self.rescale_factor, self.image_mean, self.image_std, self.lookup_table = \
            read_normalization(rescale_factor, image_mean, image_std)

    @classmethod
    def from_pretrained(cls, path_or_repo_id):
        """A local folder or a cached Hub id: its preprocessor_config.json, else SigLIP's defaults at the model's
        image size (config.json). A SigLIP 2 NaFlex folder (read_naflex_config) gives a Siglip2ImageProcessor."""
        model_dir = resolve_model_dir(path_or_repo_id)
        if read_naflex_config(model_dir) is not None:
            return Siglip2ImageProcessor.from_pretrained(model_dir)
        settings, source = read_preprocessor_config(model_dir)
        try:
            return cls(**settings)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None

    def to_dict(self):
        """The preprocessor_config.json that transformers' SiglipImageProcessor reads, with these settings."""
        height, width = self.size
        return {"image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
                "do_resize": True, "size": {"height": height, "width": width}, "resample": int(self.resample),
                "do_rescale": True, "rescale_factor": self.rescale_factor, "do_normalize": True,
                "image_mean": self.image_mean, "image_std": self.image_std, "do_convert_rgb": True}

    def save_pretrained(self, folder):
        """preprocessor_config.json in folder."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "preprocessor_config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def to_rgb_image(self, item, index):
        """An RGB PIL image from a PIL image, an array or a path; errors name the item (to_rgb_image)."""
        return to_rgb_image(item, index)

    def __call__(self, images):
        """np.float32 (B, 3, H, W) from one image or a list of them. Errors name the item: by its path
        when it is one, else by its index in the list."""
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if not images:
            raise InputError("no images: got an empty list")
        pixel_values = np.empty((len(images), 3, *self.size), dtype=np.float32)  # (B, 3, H, W)
        for index, item in enumerate(images):
            rgb = self.to_rgb_image(item, None if single else index)
            pixels = resize(rgb, self.size, self.resample)  # (H, W, 3) uint8
            rescale_and_normalize(pixels, self.lookup_table, out=pixel_values[index])
        return pixel_values


# SigLIP 2 NaFlex ---------------------------------------------------------------------------------------------------

NAFLEX_TYPES = ("Siglip2ImageProcessor", "Siglip2ImageProcessorFast", "Siglip2ImageProcessorPil")
NAFLEX_MODEL_TYPES = ("siglip2", "siglip2_vision_model")
RGB = np.arange(3)  # channel index, broadcast against (H, W, 3) pixels

NaflexInputs = namedtuple("NaflexInputs", ["pixel_values", "pixel_attention_mask", "spatial_shapes"])
NaflexInputs.__doc__ = """Siglip2ImageProcessor's output, named as transformers' keys (`._asdict()` gives the dict):
pixel_values np.float32 (B, max_num_patches, 3*p*p), pixel_attention_mask np.int32 (B, max_num_patches),
spatial_shapes np.int64 (B, 2): (rows, cols) of each image's patch grid."""


def read_positive_int(value, key):
    """value when it is a positive int (not a bool, not a float); else InputError naming key."""
    if not is_positive_int(value):
        raise InputError(f"{key} must be a positive int, got {value!r}")
    return value


def scaled_side(side, scale, patch_size):
    """side * scale rounded up to whole patches, at least one: get_scaled_image_size inside transformers'
    get_image_size_for_max_num_patches, with the same float operations in the same order."""
    return max(patch_size, math.ceil(side * scale / patch_size) * patch_size)


def naflex_size(height, width, patch_size, max_num_patches, eps=1e-5):
    """(height, width) to resize to, as transformers' get_image_size_for_max_num_patches: bisect the scale on
    [eps / 10, 100] until the bracket is narrower than eps, keeping the low end, whose patch grid always fits
    max_num_patches. So the result is not always the largest grid that fits (the bisection stops at eps), and a
    tiny image is enlarged at most 100 times."""
    low, high = eps / 10, 100.0
    while high - low >= eps:
        middle = (low + high) / 2
        rows = scaled_side(height, middle, patch_size) // patch_size
        cols = scaled_side(width, middle, patch_size) // patch_size
        if rows * cols <= max_num_patches:  # transformers multiplies floats; exact for whole numbers this small
            low = middle
        else:
            high = middle
    return scaled_side(height, low, patch_size), scaled_side(width, low, patch_size)


def to_patches(values, patch_size):
    """(rows * cols, p * p * C) from (H, W, C) values, H and W whole patches: transformers' convert_image_to_patches.
    Patches row by row; within one, its pixels row by row, each pixel's channels last."""
    height, width, channels = values.shape
    rows, cols = height // patch_size, width // patch_size
    grid = values.reshape(rows, patch_size, cols, patch_size, channels)  # (rows, p, cols, p, C)
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1)  # (rows * cols, p*p*C)


def read_naflex_config(model_dir):
    """(Siglip2ImageProcessor's arguments, the file they come from) when model_dir is a SigLIP 2 NaFlex folder, else
    None. NaFlex is what preprocessor_config.json's image_processor_type says (NAFLEX_TYPES); without that file,
    config.json's model_type (siglip2), with its vision patch_size and transformers' other defaults."""
    path = model_dir / "preprocessor_config.json"
    if path.is_file():
        config = read_json(path)
        if config.get("image_processor_type") not in NAFLEX_TYPES:
            return None
        check_steps(config, path)
        keys = ("patch_size", "max_num_patches", "resample", "rescale_factor", "image_mean", "image_std")
        return {key: config[key] for key in keys if key in config}, path
    path = model_dir / "config.json"
    values = read_json(path) if path.is_file() else {}
    if values.get("model_type") not in NAFLEX_MODEL_TYPES:
        return None
    vision = values if values["model_type"] == "siglip2_vision_model" else values.get("vision_config") or {}
    return ({"patch_size": vision["patch_size"]} if isinstance(vision, dict) and "patch_size" in vision else {},
            path)


def name_of(item, index):
    """How errors name an item of a batch: its path when it is one, else describe(index)."""
    return describe(index, os.fspath(item) if isinstance(item, (str, os.PathLike)) else None)


def check_patch_count(count, max_num_patches, where):
    """Refuse an image whose grid does not fit max_num_patches even at naflex_size's smallest scale (1e-6: a side over
    a million patches; transformers would return a longer, unpadded row)."""
    if count > max_num_patches:
        raise InputError(f"{where}: {count} patches even at the smallest scale, over max_num_patches={max_num_patches}")


class Siglip2ImageProcessor:
    """Images -> NaflexInputs (patches at the native aspect ratio, padded); mirrors
    transformers.Siglip2ImageProcessorPil."""

    def __init__(self, patch_size=16, max_num_patches=256, resample=Image.BILINEAR, rescale_factor=1 / 255,
                 image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)):
        self.patch_size = read_positive_int(patch_size, "patch_size")
        self.max_num_patches = read_positive_int(max_num_patches, "max_num_patches")
        self.resample = read_resample(resample)
        self.rescale_factor, self.image_mean, self.image_std, self.lookup_table = \
            read_normalization(rescale_factor, image_mean, image_std)

    @classmethod
    def from_pretrained(cls, path_or_repo_id):
        """A local folder or a cached Hub id holding a NaFlex preprocessor_config.json (read_naflex_config)."""
        model_dir = resolve_model_dir(path_or_repo_id)
        found = read_naflex_config(model_dir)
        if found is None:
            raise InputError(f"{model_dir}: not a SigLIP 2 NaFlex folder (no preprocessor_config.json with "
                             f"image_processor_type Siglip2ImageProcessor); SiglipImageProcessor reads it")
        settings, source = found
        try:
            return cls(**settings)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None

    def to_dict(self):
        """The preprocessor_config.json that transformers' Siglip2ImageProcessor(Pil) reads, with these settings."""
        return {"image_processor_type": "Siglip2ImageProcessor", "processor_class": "Siglip2Processor",
                "do_resize": True, "resample": int(self.resample), "do_rescale": True,
                "rescale_factor": self.rescale_factor, "do_normalize": True, "image_mean": self.image_mean,
                "image_std": self.image_std, "do_convert_rgb": True, "patch_size": self.patch_size,
                "max_num_patches": self.max_num_patches}

    def save_pretrained(self, folder):
        """preprocessor_config.json in folder."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "preprocessor_config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def image_patches(self, rgb, max_num_patches):
        """(patches (rows * cols, p*p*3) float32, (rows, cols)) of one RGB PIL image: Siglip2ImageProcessorPil's
        _preprocess for one image, before padding."""
        width, height = rgb.size
        size = naflex_size(height, width, self.patch_size, max_num_patches)
        pixels = resize(rgb, size, self.resample)  # (H, W, 3) uint8
        values = self.lookup_table[RGB, pixels]  # (H, W, 3) float32: rescaled and normalised
        return to_patches(values, self.patch_size), (size[0] // self.patch_size, size[1] // self.patch_size)

    def __call__(self, images, max_num_patches=None):
        """NaflexInputs from one image or a list of them, each padded to max_num_patches patches (this call's, else
        the processor's). Errors name the item: by its path when it is one, else by its index in the list."""
        max_num_patches = self.max_num_patches if max_num_patches is None else read_positive_int(
            max_num_patches, "max_num_patches")
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if not images:
            raise InputError("no images: got an empty list")
        patch_values = 3 * self.patch_size ** 2
        pixel_values = np.zeros((len(images), max_num_patches, patch_values), dtype=np.float32)  # (B, N, 3*p*p)
        pixel_attention_mask = np.zeros((len(images), max_num_patches), dtype=np.int32)  # (B, N)
        spatial_shapes = np.zeros((len(images), 2), dtype=np.int64)  # (B, 2): rows, cols
        for index, item in enumerate(images):
            rgb = to_rgb_image(item, None if single else index)
            patches, spatial_shapes[index] = self.image_patches(rgb, max_num_patches)  # (n, 3*p*p)
            check_patch_count(len(patches), max_num_patches, name_of(item, None if single else index))
            pixel_values[index, :len(patches)] = patches
            pixel_attention_mask[index, :len(patches)] = 1
        return NaflexInputs(pixel_values, pixel_attention_mask, spatial_shapes)


def processor_for_checkpoint(location, image_size, patch_size, num_patches=None):
    """The image processor for a checkpoint: its folder's preprocessor_config.json (a SiglipImageProcessor or, as
    it says, a NaFlex Siglip2ImageProcessor); without one (a big_vision .npz, an open_clip folder, a bare model
    folder), SigLIP's own preprocessing for the model: NaFlex patches of patch_size up to num_patches when it is set
    (transformers' default max_num_patches is the position grid's size), else a resize to image_size."""
    if (Path(location) / "preprocessor_config.json").is_file():
        return SiglipImageProcessor.from_pretrained(location)
    if num_patches is not None:
        return Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=num_patches)
    return SiglipImageProcessor(size=image_size)
