"""The shipped checkpoints/siglip-tiny-shapes really works: zero-shot accuracy on freshly drawn shapes, in and out
of the training distribution, and transformers reads the same folder to the same ids, pixels and logits.

Images are drawn with shapes.py's drawing code (what train.py trains on) under seeds train.py never uses (it
draws with --seed 0 and evaluates with seed 1). The accuracy is computed here from the logits, not by train.py.
"""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import siglip_min as sm  # noqa: E402
from preprocess import SiglipImageProcessor  # noqa: E402
from tokenizer import SiglipTokenizer  # noqa: E402
from test_train import assert_transformers_agrees  # noqa: E402
from shapes import CLASSES, caption, draw_image  # noqa: E402
from train import train_vocabulary  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "siglip-tiny-shapes"
FRESH_SEED = 20240611  # never used in training
DRAWINGS = {  # name: draw_image options; "in distribution" is what training draws, the others it never saw
    "in distribution": {},
    "smaller shapes": {"radii": (0.15, 0.21)},  # training draws circumradii of 0.22..0.40 of the side
    "larger shapes": {"radii": (0.41, 0.46)},
    "colour jitter": {"colour_jitter": 25},  # every channel off by up to 25 of 255
    "noisy grey background": {"backgrounds": ("noisy_grey",)},  # grey noise, stronger than training's colour noise
}
SHORT_OF_TARGET = {  # drawings where the shipped model misses top-1 >= 90%, with what it measured
    "smaller shapes": "top-1 0.656, colour 0.998, shape 0.656",
}


def fresh_drawings(count, seed, **options):
    """count images with their (colour, shape), the classes in turn so that each appears count / 32 times."""
    image_size = json.loads((SHIPPED / "config.json").read_text())["vision_config"]["image_size"]
    rng = np.random.default_rng(seed)
    classes = [CLASSES[i % len(CLASSES)] for i in range(count)]
    return [draw_image(rng, colour, shape, image_size, **options) for colour, shape in classes], classes


@pytest.fixture(scope="module")
def shipped():
    return (sm.SiglipModel.from_pretrained(SHIPPED), SiglipTokenizer.from_pretrained(SHIPPED),
            SiglipImageProcessor.from_pretrained(SHIPPED))


def test_shipped_folder_is_small_and_complete():
    names = {"config.json", "model.safetensors", "spiece.model", "tokenizer_config.json", "preprocessor_config.json"}
    assert names <= {p.name for p in SHIPPED.iterdir()}
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 8e6
    assert json.loads((SHIPPED / "config.json").read_text())["siglip_min"] == {"template": "{}"}


def test_shipped_vocabulary_is_what_train_py_writes(tmp_path):
    """train.py's vocabulary file has the same bytes wherever it is written, and the shipped one is it."""
    captions = [caption(*c) for c in CLASSES]
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    written = train_vocabulary(captions, first).read_bytes()
    assert train_vocabulary(captions[::-1], second).read_bytes() == written
    assert (SHIPPED / "spiece.model").read_bytes() == written


def marked(drawing):
    """The drawing as a test parameter; a known shortfall is a strict xfail, so that it is reported, not hidden."""
    if drawing not in SHORT_OF_TARGET:
        return drawing
    reason = f"short of target: {SHORT_OF_TARGET[drawing]}"
    return pytest.param(drawing, marks=pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(scope="module")
def predictions(shipped):
    """{drawing: (predicted, true) (colour, shape) pairs} on 500 fresh drawings each, every image against all 32."""
    model, tok, proc = shipped
    texts = torch.from_numpy(tok([caption(*c) for c in CLASSES]))
    result = {}
    for index, drawing in enumerate(sorted(DRAWINGS)):
        images, truth = fresh_drawings(500, FRESH_SEED + index, **DRAWINGS[drawing])
        with torch.no_grad():
            logits = model(texts, torch.from_numpy(proc(images))).logits_per_image  # (500, 32)
        result[drawing] = [(CLASSES[i], t) for i, t in zip(logits.argmax(dim=1).tolist(), truth)]
    return result


@pytest.mark.parametrize("drawing", [marked(d) for d in sorted(DRAWINGS)])
def test_top1_over_all_captions(predictions, drawing):
    top1 = np.mean([p == t for p, t in predictions[drawing]])
    assert top1 >= 0.90, f"{drawing}: top-1 {top1:.3f}"


@pytest.mark.parametrize("drawing", sorted(DRAWINGS))
def test_colour_alone(predictions, drawing):
    colour = np.mean([p[0] == t[0] for p, t in predictions[drawing]])
    assert colour >= 0.95, f"{drawing}: colour {colour:.3f}"


def test_transformers_gives_the_same_logits():
    images, _ = fresh_drawings(64, FRESH_SEED - 1)
    assert_transformers_agrees(SHIPPED, images, [caption(*c) for c in CLASSES] + ["A Purple  star!", "a cat"])
