"""preprocess.py against transformers.SiglipImageProcessorPil (the oracle) on the same images.

Arrays are (H, W, C): transformers is told so (input_data_format="channels_last"), since it guesses
channels-first for shapes such as (3, W, 3). It takes no (H, W) array, so it gets (H, W, 1). Float
arrays in [0, 1] are already rescaled: transformers gets do_rescale=False for them.
"""
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import transformers  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from preprocess import SiglipImageProcessor  # noqa: E402

transformers.logging.set_verbosity_error()
REPO = Path(__file__).resolve().parents[1]
PIL_MODES = ["1", "L", "LA", "P", "P+transparency", "PA", "RGB", "RGBA", "CMYK"]  # I;16: scaled, see below
ATOL = 1e-6
quick = settings(max_examples=50, deadline=None)
ours = SiglipImageProcessor()
theirs = transformers.SiglipImageProcessorPil()


def hf_pixels(images, processor=theirs, **kwargs):
    return processor(images, return_tensors="np", **kwargs)["pixel_values"]


def hf_array_pixels(array):
    """transformers on an array as this module reads it: (H, W, C), floats already in [0, 1]."""
    array = array[:, :, None] if array.ndim == 2 else array
    return hf_pixels(array, input_data_format="channels_last", do_rescale=array.dtype == np.uint8)


def noise(seed, height, width, channels, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return rng.random((height, width, channels)).astype(dtype)


def picture(mode, seed, height, width):
    """A random PIL image in any of PIL_MODES."""
    rgba = noise(seed, height, width, 4)
    if mode == "I;16":
        return Image.fromarray(noise(seed, height, width, 2).view(np.uint16)[:, :, 0])
    if mode == "CMYK":
        return Image.frombytes("CMYK", (width, height), rgba.tobytes())
    if mode == "P+transparency":
        image = Image.fromarray(rgba[:, :, :3]).convert("P")
        image.info["transparency"] = int(np.asarray(image)[0, 0])
        return image
    return Image.fromarray(rgba, "RGBA").convert(mode)


sides = st.integers(1, 600)
seeds = st.integers(0, 2**32 - 1)


@quick
@given(mode=st.sampled_from(PIL_MODES), seed=seeds, height=sides, width=sides)
def test_pil_images_match_transformers(mode, seed, height, width):
    image = picture(mode, seed, height, width)
    np.testing.assert_allclose(ours(image), hf_pixels(image), rtol=0, atol=ATOL)


@quick
@given(seed=seeds, height=st.integers(1, 300), width=st.integers(1, 300), as_file=st.booleans())
def test_sixteen_bit_grey_is_scaled_to_eight_bits(seed, height, width, as_file):
    """transformers (PIL's convert) clips 16-bit grey at 255, which makes most such pictures white. Here the rule is
    v8 = round(v16 / 257): the pixels equal transformers' on that 8-bit picture, from a PIL image or a PNG file."""
    wide = noise(seed, height, width, 2).view(np.uint16)[:, :, 0]  # (H, W) uint16
    image = Image.fromarray(wide)
    assert image.mode == "I;16"
    narrow = Image.fromarray(np.round(wide / 257).astype(np.uint8))
    with tempfile.TemporaryDirectory() as folder:
        if as_file:
            image.save(Path(folder) / "grey.png")
            assert Image.open(Path(folder) / "grey.png").mode == "I;16"
        pixels = ours(str(Path(folder) / "grey.png") if as_file else image)
    np.testing.assert_allclose(pixels, hf_pixels(narrow), rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_thirty_two_bit_images_are_refused(mode, tmp_path):
    image = Image.fromarray(noise(1, 8, 9, 4).view(np.int32 if mode == "I" else np.float32)[:, :, 0])
    assert image.mode == mode
    with pytest.raises(ValueError, match=f"image: mode {mode} image \\(32-bit pixels\\) has no one 8-bit scale"):
        ours(image)


@quick
@given(seed=seeds, height=sides, width=sides, channels=st.sampled_from([None, 1, 3, 4]),
       dtype=st.sampled_from([np.uint8, np.float32, np.float64]))
def test_arrays_match_transformers(seed, height, width, channels, dtype):
    array = noise(seed, height, width, channels or 1, dtype)
    array = array[:, :, 0] if channels is None else array
    np.testing.assert_allclose(ours(array), hf_array_pixels(array), rtol=0, atol=ATOL)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_float_array_of_only_zeros_and_ones_is_read_as_zero_to_one(channels):
    """transformers would read it as 0..255 values; this equals transformers on the same picture in uint8."""
    binary = (noise(7, 40, 50, channels, np.float32) > 0.5).astype(np.float32)
    np.testing.assert_allclose(ours(binary), hf_array_pixels((binary * 255).astype(np.uint8)), rtol=0, atol=ATOL)


FILE_MODES = [mode for mode in PIL_MODES if mode != "PA"]  # no common format stores PA


def save_picture(mode, path, seed=3):
    image = picture(mode, seed, 61, 83)
    image.save(path, **({"transparency": image.info["transparency"]} if "transparency" in image.info else {}))
    return path


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """One file per mode (PNG, CMYK as JPEG), and a JPEG with an EXIF rotation."""
    folder = tmp_path_factory.mktemp("images")
    files = {mode: save_picture(mode, folder / f"{mode.replace(';', '').replace('+', '_')}."
                                              f"{'jpg' if mode == 'CMYK' else 'png'}") for mode in FILE_MODES}
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    files["exif"] = folder / "rotated.jpg"
    picture("RGB", 4, 61, 83).save(files["exif"], exif=exif)
    return files


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # PIL's, on load_image's convert("RGB")
@pytest.mark.parametrize("kind", FILE_MODES + ["exif"])
def test_paths_match_transformers(image_files, kind):
    """transformers loads a path with load_image: EXIF rotation applied, alpha dropped (not composited)."""
    path = image_files[kind]
    np.testing.assert_allclose(ours(path), hf_pixels(str(path)), rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours(str(path)), ours(path), rtol=0, atol=0)


@quick
@given(seed=seeds, height=st.integers(1, 80), width=st.integers(1, 80))
def test_path_array_and_pil_image_of_one_picture_agree(seed, height, width):
    array = noise(seed, height, width, 3)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "picture.png"
        Image.fromarray(array).save(path)
        from_path, from_array, from_pil = ours([path, array, Image.fromarray(array)])
    np.testing.assert_array_equal(from_path, from_array)
    np.testing.assert_array_equal(from_pil, from_array)


@quick
@given(data=st.data(), height=st.integers(1, 64), width=st.integers(1, 64))
def test_shape_dtype_and_range_of_a_batch(data, height, width):
    processor = SiglipImageProcessor(size=(height, width))
    items = data.draw(st.lists(st.one_of(
        st.builds(picture, st.sampled_from(PIL_MODES), seeds, st.integers(1, 50), st.integers(1, 50)),
        st.builds(noise, seeds, st.integers(1, 50), st.integers(1, 50), st.sampled_from([1, 3, 4]),
                  st.sampled_from([np.uint8, np.float32])),
    ), min_size=1, max_size=4))
    pixels = processor(items)
    assert pixels.shape == (len(items), 3, height, width) and pixels.dtype == np.float32
    assert pixels.min() >= -1 and pixels.max() <= 1


@pytest.mark.parametrize("size", [(32, 48), (50, 17), 31])
def test_size_matches_transformers(size):
    height, width = (size, size) if isinstance(size, int) else size
    reference = transformers.SiglipImageProcessorPil(size={"height": height, "width": width})
    image = picture("RGB", 5, 70, 90)
    np.testing.assert_allclose(SiglipImageProcessor(size=size)(image), hf_pixels(image, reference), rtol=0, atol=ATOL)


def test_preprocessor_config_matches_transformers(tmp_path):
    config = {"size": {"height": 40, "width": 56}, "resample": 2, "rescale_factor": 1 / 255,
              "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
              "do_resize": True, "do_rescale": True, "do_normalize": True,
              "image_processor_type": "SiglipImageProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    reference = transformers.SiglipImageProcessorPil.from_pretrained(tmp_path)
    images = [picture("RGBA", 6, 90, 70), picture("L", 7, 33, 120)]
    pixels = SiglipImageProcessor.from_pretrained(tmp_path)(images)
    np.testing.assert_allclose(pixels, hf_pixels(images, reference), rtol=0, atol=ATOL)
    SiglipImageProcessor.from_pretrained(tmp_path).save_pretrained(tmp_path / "saved")  # keeps what it loaded
    resaved = transformers.SiglipImageProcessorPil.from_pretrained(tmp_path / "saved")
    np.testing.assert_allclose(pixels, hf_pixels(images, resaved), rtol=0, atol=ATOL)


def test_folder_without_preprocessor_config_takes_the_model_image_size(tmp_path):
    """No preprocessor_config.json: SigLIP's defaults at config.json's vision_config.image_size."""
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {"image_size": 48}}))
    image = picture("RGB", 9, 30, 40)
    np.testing.assert_array_equal(SiglipImageProcessor.from_pretrained(tmp_path)(image),
                                  hf_pixels(image, transformers.SiglipImageProcessorPil(size={"height": 48,
                                                                                              "width": 48})))


def test_folder_without_config_gets_the_defaults(tmp_path):
    image = picture("RGB", 8, 30, 40)
    np.testing.assert_array_equal(SiglipImageProcessor.from_pretrained(tmp_path)(image), ours(image))


def test_switched_off_step_in_config_is_refused(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_resize": False}))
    with pytest.raises(ValueError, match="do_resize"):
        SiglipImageProcessor.from_pretrained(tmp_path)


def test_hub_id_is_found_in_the_hugging_face_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--google--siglip-test" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 20, "width": 30}}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert SiglipImageProcessor.from_pretrained("google/siglip-test")(picture("RGB", 9, 5, 5)).shape == (1, 3, 20, 30)


def bomb_png(path, width=50_000, height=50_000):
    """A tiny PNG whose header claims width x height pixels."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR checksum
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, image_files):
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.png"
    text.write_text("not an image")
    truncated = {}
    for suffix in ("png", "jpg"):
        whole = folder / f"whole.{suffix}"
        Image.fromarray(noise(1, 64, 64, 3)).save(whole)
        truncated[suffix] = folder / f"truncated.{suffix}"
        truncated[suffix].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return {"text": text, "truncated.png": truncated["png"], "truncated.jpg": truncated["jpg"],
            "bomb": bomb_png(folder / "bomb.png"), "folder": folder}


@pytest.mark.parametrize("name, error, message", [
    ("missing", FileNotFoundError, "no such file"),
    ("text", ValueError, "not an image"),
    ("truncated.png", ValueError, "truncated or corrupt"),
    ("truncated.jpg", ValueError, "truncated or corrupt"),
    ("bomb", ValueError, "decompression-bomb"),
    ("folder", ValueError, "not a file"),
])
def test_bad_files_are_named_with_the_problem(bad_files, image_files, name, error, message):
    path = bad_files["folder"] / "missing.png" if name == "missing" else bad_files[name]
    with pytest.raises(error, match=message) as raised:
        ours([image_files["RGB"], path])
    assert str(raised.value).startswith(str(path))


def test_image_over_the_pixel_limit_is_refused_before_decoding(image_files, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 61 * 83 - 1)  # PIL itself only warns up to twice this
    with pytest.raises(ValueError, match="decompression-bomb"):
        ours(image_files["RGB"])
    with pytest.raises(ValueError, match="image 0: .*decompression-bomb"):
        ours([picture("RGB", 1, 61, 83)])
    with pytest.raises(ValueError, match=f"^{image_files['RGB']}: .*decompression-bomb"):
        ours(image_files["RGB"])  # a single image is named by its path alone


@pytest.mark.parametrize("array, message", [
    (np.zeros((4,), np.uint8), "shape"),
    (np.zeros((2, 4, 5, 3), np.uint8), "shape"),
    (np.zeros((4, 5, 2), np.uint8), "2 channels"),
    (np.zeros((4, 5, 5), np.uint8), "5 channels"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((4, 5, 3), np.int32), "dtype int32"),
    (np.full((4, 5, 3), 1.5, np.float32), r"outside \[0, 1\]"),
    (np.full((4, 5, 3), np.nan, np.float32), r"outside \[0, 1\]"),
])
def test_bad_arrays_are_named_with_the_problem(array, message):
    with pytest.raises(ValueError, match="image 1: .*" + message):
        ours([np.zeros((4, 5, 3), np.uint8), array])


def test_empty_pil_image_is_refused():
    with pytest.raises(ValueError, match="image 0: the image is empty"):
        ours([Image.new("RGB", (0, 4))])


def test_pil_conversion_failure_is_named(monkeypatch):
    def unsupported(mode):
        raise ValueError(f"conversion to {mode} not supported")

    image = picture("RGB", 2, 4, 4)
    monkeypatch.setattr(image, "convert", unsupported)
    with pytest.raises(ValueError, match="image 0: PIL cannot convert this mode RGB image"):
        ours([image])


def test_empty_list_is_refused():
    with pytest.raises(ValueError, match="empty list"):
        ours([])


@pytest.mark.parametrize("item", [None, 3, b"\x89PNG", {"pixels": 1}])
def test_other_types_are_refused_naming_the_type(item):
    with pytest.raises(TypeError, match=f"image 1 is a {type(item).__name__}"):
        ours([np.zeros((4, 5, 3), np.uint8), item])
    with pytest.raises(TypeError, match=f"^image is a {type(item).__name__}"):
        ours(item)  # a single image has no index to name


def test_does_not_import_torch():
    code = "import sys, preprocess; assert 'torch' not in sys.modules, 'preprocess.py imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
