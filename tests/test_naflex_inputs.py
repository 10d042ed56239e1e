"""SigLIP 2 NaFlex preprocessing (preprocess.Siglip2ImageProcessor) against transformers.Siglip2ImageProcessorPil.

The pixel values are compared for bit equality: both resize the same uint8 RGB image with PIL, rescale in float64
then cast to float32, normalise in float32 (preprocess.py does the same operations once per uint8 value, in a lookup
table), and cutting into patches and padding only move values. The mask and spatial shapes are compared exactly,
dtypes included. transformers is given do_convert_rgb=True, as preprocess.py always converts (its default, None,
leaves a grey or RGBA image 1 or 4 channels).
"""
import json
import re
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import transformers  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches  # noqa: E402

from hub import InputError  # noqa: E402
from preprocess import NaflexInputs, Siglip2ImageProcessor, SiglipImageProcessor, naflex_size  # noqa: E402

transformers.logging.set_verbosity_error()
quick = settings(max_examples=50, deadline=None)
MODES = ["RGB", "L", "RGBA", "P"]


def picture(seed, height, width, mode="RGB"):
    rgba = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    return Image.fromarray(rgba, "RGBA").convert(mode)


def hf_inputs(images, processor, **kwargs):
    """transformers' three arrays, in NaflexInputs' order."""
    out = processor(images, return_tensors="np", do_convert_rgb=True, **kwargs)
    return out["pixel_values"], out["pixel_attention_mask"], out["spatial_shapes"]


def assert_same_inputs(ours, theirs):
    assert isinstance(ours, NaflexInputs)
    for name, mine, reference in zip(NaflexInputs._fields, ours, theirs):
        assert mine.dtype == reference.dtype and mine.shape == reference.shape, name
        np.testing.assert_array_equal(mine, reference, err_msg=name)


@st.composite
def image_sizes(draw):
    """(height, width): aspect ratio 1:8 to 8:1 with sides up to 1500, or (one time in four) a sliver 1 to 3 pixels
    thin."""
    if draw(st.integers(0, 3)) == 0:
        thin, long = draw(st.integers(1, 3)), draw(st.integers(1, 1500))
        return (thin, long) if draw(st.booleans()) else (long, thin)
    height = draw(st.integers(1, 1500))
    ratio = 2 ** draw(st.floats(-3, 3))
    return height, min(1500, max(1, round(height * ratio)))


naflex_settings = st.fixed_dictionaries({
    "patch_size": st.sampled_from([8, 14, 16]),
    "max_num_patches": st.integers(16, 1024),
    "resample": st.sampled_from([2, 3]),
})


@settings(max_examples=500, deadline=None)
@given(height=st.integers(1, 100_000), width=st.integers(1, 100_000), patch_size=st.integers(1, 64),
       max_num_patches=st.integers(1, 4096))
@example(height=1, width=1, patch_size=16, max_num_patches=1024)  # enlarged at most 100 times
@example(height=1, width=1, patch_size=16, max_num_patches=1)
@example(height=256, width=256, patch_size=16, max_num_patches=256)
def test_naflex_size_matches_transformers(height, width, patch_size, max_num_patches):
    ours = naflex_size(height, width, patch_size, max_num_patches)
    assert ours == get_image_size_for_max_num_patches(height, width, patch_size, max_num_patches)
    assert all(type(side) is int and side % patch_size == 0 and side >= patch_size for side in ours)
    assert (ours[0] // patch_size) * (ours[1] // patch_size) <= max_num_patches


def test_bisection_can_stop_short_of_the_largest_grid():
    """1205 x 1506 at patch 8 fits 5 x 5 = 25 patches (scale 40/1205), but the bisection ends within 1e-5 below that
    scale, at 4 x 5: transformers' answer, kept (about 1 in 7000 random sizes)."""
    assert get_image_size_for_max_num_patches(1205, 1506, 8, 25) == (32, 40)
    assert naflex_size(1205, 1506, 8, 25) == (32, 40)
    assert naflex_size(1205, 1506, 8, 25, eps=1e-9) == (40, 40)


@quick
@given(data=st.data(), config=naflex_settings, sizes=st.lists(image_sizes(), min_size=1, max_size=3))
@example(data=None, config={"patch_size": 16, "max_num_patches": 256, "resample": 2}, sizes=[(1, 1)])
@example(data=None, config={"patch_size": 14, "max_num_patches": 16, "resample": 3}, sizes=[(1, 1500), (1500, 1)])
@example(data=None, config={"patch_size": 16, "max_num_patches": 1024, "resample": 2},
         sizes=[(1500, 1500), (3, 7), (187, 1500)])
def test_batches_match_transformers(data, config, sizes):
    """Mixed sizes in one batch, so each image has its own grid and padding."""
    modes = data.draw(st.lists(st.sampled_from(MODES), min_size=len(sizes), max_size=len(sizes))) if data else \
        ["RGB"] * len(sizes)
    images = [picture(seed, height, width, mode) for seed, ((height, width), mode) in enumerate(zip(sizes, modes))]
    ours = Siglip2ImageProcessor(**config)(images)
    assert_same_inputs(ours, hf_inputs(images, transformers.Siglip2ImageProcessorPil(**config)))
    assert ours.pixel_values.shape == (len(images), config["max_num_patches"], 3 * config["patch_size"] ** 2)
    padding = ours.pixel_attention_mask == 0  # (B, N)
    assert not ours.pixel_values[padding].any()
    assert (ours.pixel_attention_mask.sum(axis=1) == ours.spatial_shapes.prod(axis=1)).all()


@quick
@given(config=naflex_settings, size=image_sizes(), override=st.integers(1, 1024), seed=st.integers(0, 2**32 - 1))
def test_max_num_patches_given_per_call_matches_transformers(config, size, override, seed):
    image = picture(seed, *size)
    ours = Siglip2ImageProcessor(**config)(image, max_num_patches=override)
    assert_same_inputs(ours, hf_inputs(image, transformers.Siglip2ImageProcessorPil(**config),
                                       max_num_patches=override))
    assert ours.pixel_values.shape[1] == override


def test_arrays_paths_and_pil_images_match_transformers(tmp_path):
    array = np.asarray(picture(1, 90, 200))  # (H, W, 3) uint8
    path = tmp_path / "picture.png"
    Image.fromarray(array).save(path)
    grey = np.asarray(picture(2, 50, 20, "L"))  # (H, W)
    processor = Siglip2ImageProcessor(max_num_patches=64)
    reference = transformers.Siglip2ImageProcessorPil(max_num_patches=64)
    ours = processor([array, path, str(path), Image.fromarray(array), grey])
    theirs = hf_inputs([Image.fromarray(array)] * 4 + [Image.fromarray(grey)], reference)
    assert_same_inputs(ours, theirs)


def test_float_arrays_are_read_as_zero_to_one():
    array = np.random.default_rng(3).random((40, 70, 3)).astype(np.float32)
    as_uint8 = (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
    ours = Siglip2ImageProcessor(max_num_patches=32)(array)
    assert_same_inputs(ours, hf_inputs(Image.fromarray(as_uint8), transformers.Siglip2ImageProcessorPil(
        max_num_patches=32)))


def test_single_image_is_a_batch_of_one():
    pixel_values, mask, shapes = Siglip2ImageProcessor(patch_size=8, max_num_patches=20)(picture(4, 30, 60))
    assert pixel_values.shape == (1, 20, 192) and pixel_values.dtype == np.float32
    assert mask.shape == (1, 20) and mask.dtype == np.int32
    assert shapes.tolist() == [[3, 6]] and shapes.dtype == np.int64
    assert mask.tolist() == [[1] * 18 + [0] * 2]
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1


# Folders -----------------------------------------------------------------------------------------------------------

# google/siglip2-base-patch16-naflex's preprocessor_config.json as transformers 4.5x saved it (Fast class, null keys)
NAFLEX_CONFIG = {"do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Siglip2ImageProcessorFast",
                 "image_std": [0.5, 0.5, 0.5], "max_num_patches": 256, "patch_size": 16,
                 "processor_class": "Siglip2Processor", "resample": 2, "rescale_factor": 0.00392156862745098}


def write_config(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({**NAFLEX_CONFIG, **changes}))
    return folder


SETTINGS = ("patch_size", "max_num_patches", "resample", "rescale_factor", "image_mean", "image_std")


def settings_of(processor):
    """Ours or transformers': resample as its number, mean and std as lists (transformers keeps tuples)."""
    values = {key: getattr(processor, key) for key in SETTINGS}
    return {**values, "resample": int(values["resample"]), "image_mean": list(values["image_mean"]),
            "image_std": list(values["image_std"])}


@pytest.mark.parametrize("kind", ["Siglip2ImageProcessor", "Siglip2ImageProcessorFast", "Siglip2ImageProcessorPil"])
def test_from_pretrained_gives_naflex_for_a_naflex_folder(tmp_path, kind):
    changes = {"image_processor_type": kind, "patch_size": 14, "max_num_patches": 100, "resample": 3,
               "image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.25], "rescale_factor": 1 / 256}
    folder = write_config(tmp_path, **changes)
    processor = SiglipImageProcessor.from_pretrained(folder)
    assert type(processor) is Siglip2ImageProcessor
    assert settings_of(processor) == {key: changes[key] for key in SETTINGS}
    assert settings_of(Siglip2ImageProcessor.from_pretrained(folder)) == settings_of(processor)
    images = [picture(5, 100, 37, "RGBA"), picture(6, 20, 300)]
    assert_same_inputs(processor(images), hf_inputs(images, transformers.Siglip2ImageProcessorPil.from_pretrained(
        folder)))


def test_save_pretrained_round_trips_through_transformers(tmp_path):
    ours = Siglip2ImageProcessor(patch_size=8, max_num_patches=77, resample=3, rescale_factor=1 / 255,
                                 image_mean=(0.1, 0.2, 0.3), image_std=(0.7, 0.8, 0.9))
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.Siglip2ImageProcessorPil.from_pretrained(tmp_path / "ours")
    assert settings_of(theirs) == settings_of(ours)
    images = [picture(7, 64, 64), picture(8, 5, 90, "L")]
    assert_same_inputs(ours(images), hf_inputs(images, theirs))
    theirs.save_pretrained(tmp_path / "theirs")  # and back: transformers' file read here
    assert settings_of(SiglipImageProcessor.from_pretrained(tmp_path / "theirs")) == settings_of(ours)
    assert settings_of(Siglip2ImageProcessor.from_pretrained(tmp_path / "ours")) == settings_of(ours)


def test_defaults_are_transformers_defaults(tmp_path):
    reference = transformers.Siglip2ImageProcessorPil()
    assert settings_of(Siglip2ImageProcessor()) == settings_of(reference)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "Siglip2ImageProcessor"}))
    assert settings_of(SiglipImageProcessor.from_pretrained(tmp_path)) == settings_of(reference)


@pytest.mark.parametrize("model_type, config", [
    ("siglip2", {"model_type": "siglip2", "vision_config": {"patch_size": 8, "num_patches": 64}}),
    ("siglip2_vision_model", {"model_type": "siglip2_vision_model", "patch_size": 8}),
])
def test_siglip2_folder_without_preprocessor_config_takes_the_patch_size(tmp_path, model_type, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    processor = SiglipImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is Siglip2ImageProcessor
    assert (processor.patch_size, processor.max_num_patches) == (8, 256)


def test_fixed_resolution_folders_keep_siglip_image_processor(tmp_path):
    config = {"image_processor_type": "SiglipImageProcessor", "size": {"height": 32, "width": 32}, "resample": 2}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    assert type(SiglipImageProcessor.from_pretrained(tmp_path)) is SiglipImageProcessor
    with pytest.raises(InputError, match="not a SigLIP 2 NaFlex folder"):
        Siglip2ImageProcessor.from_pretrained(tmp_path)


# Errors ------------------------------------------------------------------------------------------------------------

BAD_COUNTS = [0, -4, True, False, 16.0, "16", None, [16]]


@pytest.mark.parametrize("value", BAD_COUNTS)
@pytest.mark.parametrize("key", ["max_num_patches", "patch_size"])
def test_bad_counts_are_refused_naming_the_key(key, value):
    with pytest.raises(InputError, match="^" + re.escape(f"{key} must be a positive int, got {value!r}")):
        Siglip2ImageProcessor(**{key: value})


@pytest.mark.parametrize("value", [v for v in BAD_COUNTS if v is not None])
def test_bad_max_num_patches_per_call_is_refused(value):
    with pytest.raises(InputError, match="^" + re.escape(f"max_num_patches must be a positive int, got {value!r}")):
        Siglip2ImageProcessor()(picture(1, 8, 8), max_num_patches=value)


@pytest.mark.parametrize("key, value", [("max_num_patches", 0), ("max_num_patches", -1), ("max_num_patches", True),
                                        ("max_num_patches", 256.0), ("patch_size", 0), ("patch_size", 16.5),
                                        ("patch_size", None), ("resample", 9), ("image_std", [0.5, 0, 0.5])])
def test_bad_values_in_preprocessor_config_name_file_and_key(tmp_path, key, value):
    folder = write_config(tmp_path, **{key: value})
    for load in (SiglipImageProcessor.from_pretrained, Siglip2ImageProcessor.from_pretrained):
        with pytest.raises(InputError, match=f"^{folder / 'preprocessor_config.json'}: {key} must"):
            load(folder)


def test_switched_off_step_is_refused(tmp_path):
    with pytest.raises(InputError, match="preprocessor_config.json: do_normalize=False is not supported"):
        SiglipImageProcessor.from_pretrained(write_config(tmp_path, do_normalize=False))


def test_bad_items_are_named():
    with pytest.raises(InputError, match="^image 1: array with 2 channels"):
        Siglip2ImageProcessor()([picture(1, 8, 8), np.zeros((4, 4, 2), np.uint8)])
    with pytest.raises(InputError, match="empty list"):
        Siglip2ImageProcessor()([])
    with pytest.raises(TypeError, match="^image 0 is a int"):
        Siglip2ImageProcessor()([3])


def test_image_too_long_for_max_num_patches_at_any_scale_is_refused(tmp_path):
    """At naflex_size's smallest scale (1e-6) a side over a million patches is still two; transformers would return a
    longer row than max_num_patches."""
    assert get_image_size_for_max_num_patches(1, 1_000_001, 1, 1) == (1, 2)
    sliver = np.zeros((1, 1_000_001, 3), np.uint8)
    with pytest.raises(InputError, match="^image 1: 2 patches even at the smallest scale, over max_num_patches=1"):
        Siglip2ImageProcessor(patch_size=1, max_num_patches=1)([picture(1, 1, 1), sliver])
