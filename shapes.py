"""The synthetic data of the shipped model: "a {colour} {shape}" pictures, their captions, and zero-shot accuracy.

One shape (circle, square, triangle, star) of one of eight colours at a random position, size and rotation on a
random plain or noisy background, drawn anti-aliased (4x supersampling); 32 captions in all. train.py trains on
these drawings, the tests and the notebooks score models on fresh ones. PIL and NumPy only, no torch.
"""
import math

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 70, 230), "yellow": (245, 225, 30),
           "purple": (140, 40, 180), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10)}
SHAPES = ("circle", "square", "triangle", "star")
CLASSES = [(colour, shape) for colour in COLOURS for shape in SHAPES]  # 32 (colour, shape) pairs
TRAIN_RADII = (0.22, 0.40)  # circumradius as a fraction of the image side
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges
MIN_CONTRAST = 90  # least RGB distance between a shape's colour and its background's


def caption(colour, shape):
    return f"a {colour} {shape}"


CAPTIONS = [caption(*c) for c in CLASSES]  # the 32 captions, in CLASSES order


def outline(shape, centre, radius, angle):
    """Polygon vertices [(x, y), ...] of a shape of circumradius `radius`, turned by `angle` radians."""
    corners = {"square": 4, "triangle": 3, "star": 10}[shape]
    cx, cy = centre
    points = []
    for k in range(corners):
        r = radius * (0.45 if shape == "star" and k % 2 else 1.0)  # a star alternates outer and inner points
        a = angle + 2 * math.pi * k / corners
        points.append((cx + r * math.sin(a), cy - r * math.cos(a)))
    return points


def shape_alpha(shape, image_size, centre, radius, angle):
    """float32 (H, W) coverage in [0, 1] of the shape: drawn at SUPERSAMPLE x, then box-filtered down."""
    big = image_size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = (v * SUPERSAMPLE for v in (*centre, radius))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(outline(shape, (cx, cy), r, angle), fill=255)
    small = mask.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255  # (H, W)


def contrasting_colour(rng, colour, low, high, grey=False):
    """A random colour with channels in [low, high] (all equal if grey) at least MIN_CONTRAST from `colour`."""
    while True:
        base = rng.uniform(low, high, size=1 if grey else 3) * np.ones(3)  # (3,)
        if np.linalg.norm(base - np.asarray(colour)) >= MIN_CONTRAST:
            return base


def background(rng, colour, image_size, kind):
    """float32 (H, W, 3) in 0..255: "plain" or "noisy" (training), or "noisy_grey" (never seen in training)."""
    if kind == "noisy_grey":  # grey level and noise strength outside the training range, one noise for R, G, B
        base = contrasting_colour(rng, colour, 20, 235, grey=True)
        noise = rng.normal(0, rng.uniform(25, 45), size=(image_size, image_size, 1))
    else:  # a muted colour, some with colour noise of its own on every channel
        base = contrasting_colour(rng, colour, 50, 205)
        sigma = rng.uniform(5, 25) if kind == "noisy" else 0.0
        noise = rng.normal(0, sigma, size=(image_size, image_size, 3))
    return np.clip(base + noise, 0, 255).astype(np.float32)  # (H, W, 3)


def draw_image(rng, colour, shape, image_size, radii=TRAIN_RADII, colour_jitter=0, backgrounds=("plain", "noisy"),
               centre=None):
    """uint8 (H, W, 3): one shape at a random position, size and rotation on a random background. centre (x, y) in
    pixels, if given, places the shape instead (to probe the model, e.g. against its patch grid)."""
    rgb = np.clip(np.asarray(COLOURS[colour], dtype=np.float32) + rng.uniform(-colour_jitter, colour_jitter, 3), 0, 255)
    radius = rng.uniform(*radii) * image_size
    margin = radius * (0.8 if shape == "triangle" else 1.0)  # keep most of the shape inside the frame
    if centre is None:
        centre = rng.uniform(margin, image_size - margin, size=2)
    alpha = shape_alpha(shape, image_size, centre, radius, rng.uniform(0, 2 * math.pi))[:, :, None]  # (H, W, 1)
    canvas = background(rng, rgb, image_size, backgrounds[rng.integers(len(backgrounds))])  # (H, W, 3)
    return np.round(alpha * rgb + (1 - alpha) * canvas).astype(np.uint8)  # (H, W, 3)


def draw_batch(rng, batch_size, image_size, classes=None, repeats=False, **drawing):
    """(images, captions, classes): captions all distinct while batch_size <= the classes drawn from (each round is a
    permutation of them). classes: the class indices to draw from (all 32 by default); repeats: draw with
    replacement instead, so that one caption may come twice in a batch."""
    pool = np.arange(len(CLASSES)) if classes is None else np.asarray(classes)
    if repeats:
        chosen = rng.choice(pool, batch_size)
    else:
        rounds = math.ceil(batch_size / len(pool))
        chosen = np.concatenate([pool[rng.permutation(len(pool))] for _ in range(rounds)])[:batch_size]
    images = [draw_image(rng, *CLASSES[c], image_size, **drawing) for c in chosen]
    return images, [caption(*CLASSES[c]) for c in chosen], chosen


def accuracy(logits, classes):
    """{"all", "colour", "shape"}: top-1 accuracy of the best of the 32 captions, and of its colour and shape alone.

    logits (B, 32) score each image against CAPTIONS (in CLASSES order); classes (B,) are the true class indices.
    """
    predicted = [CLASSES[i] for i in np.asarray(logits).argmax(axis=1)]
    truth = [CLASSES[c] for c in classes]
    return {"all": float(np.mean([p == t for p, t in zip(predicted, truth)])),
            "colour": float(np.mean([p[0] == t[0] for p, t in zip(predicted, truth)])),
            "shape": float(np.mean([p[1] == t[1] for p, t in zip(predicted, truth)]))}
