"""Assignment 5's tests: the NumPy port against golden activations of siglip_min, compared by parity.py.

The golden is what a porter gets: parity.trace of siglip_min on a checkpoint and seeded inputs, written with
parity.write_golden and read back with parity.read_golden. Each stage is teacher-forced: it gets the golden
activation that comes before it (the encoder_layer part gets golden vision.embeddings for vision block 0, ...), with
the reference's helpers of the other parts swapped in, and parity.compare checks the names it writes; the feedback
is parity's first mismatching row: the first wrong layer, its error and parity's hint. The primitives are checked
against torch's own functions. Public: the shipped siglip-tiny-shapes model, seed 0; hidden: another seed, and a
random SiglipModel of another config (heads, layers, patch size, widths) saved in a temporary folder.
"""
import functools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

import parity
import siglip_min as sm
from grading import check_close, check_shape, from_reference, matches

MODULE = "numpy_siglip.py"
PARTS = [("primitives", 2), ("patch_embeddings", 2), ("encoder_layer", 3), ("heads", 3), ("forward", 2)]

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "checkpoints" / "siglip-tiny-shapes"
PRIMITIVES = ("linear", "layer_norm", "gelu_tanh", "softmax")
PATCH = ("patchify", "vision_embeddings")
LAYER = ("multi_head_attention", "mlp", "encoder_layer")
HEADS = ("map_head", "vision_pool", "text_pool", "similarity")
FORWARD = ("text_embeddings", "encoder", "forward")


def others(part_names):
    """Every stage function not of this part: swapped for the reference's while the part is graded."""
    return tuple(name for name in PRIMITIVES + PATCH + LAYER + HEADS + FORWARD if name not in part_names)


# Goldens ---------------------------------------------------------------------------------------------------------

class Golden:
    """A checkpoint's weights and config as the port reads them, and the golden activations of seeded inputs."""

    def __init__(self, folder, seed):
        self.weights = {name: a.astype(np.float64) for name, a in load_file(str(folder / "model.safetensors")).items()}
        self.config = json.loads((folder / "config.json").read_text())
        model = sm.SiglipModel.from_pretrained(folder).eval()
        pixel_values, input_ids = parity.seeded_inputs(model.config.vision_config, model.config.text_config, 2, seed)
        traced = parity.trace(model, pixel_values=torch.from_numpy(pixel_values),
                              input_ids=torch.from_numpy(input_ids))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "golden.safetensors"
            parity.write_golden(path, {"pixel_values": pixel_values, "input_ids": input_ids, **traced},
                                {"model_folder": str(folder), "seed": seed})
            self.a, _ = parity.read_golden(path)  # float64 activations, int64 input_ids
        self.vision, self.text = self.config["vision_config"], self.config["text_config"]
        self.heads = {"vision": self.vision["num_attention_heads"], "text": self.text["num_attention_heads"]}
        self.about = f"{folder.name if folder == TINY else 'a random checkpoint'}, seed {seed}"


@functools.lru_cache(maxsize=None)
def golden(kind="tiny", seed=0):
    if kind == "tiny":
        return Golden(TINY, seed)
    # Another shape of SigLIP: 3 vision heads of 16, patch 8 on a 5 x 5 grid, 2 vision and 3 text layers, text 2 x 16.
    config = sm.SiglipConfig(
        text_config=sm.SiglipTextConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=2, max_position_embeddings=6, projection_size=48),
        vision_config=sm.SiglipVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=3, image_size=40, patch_size=8))
    torch.manual_seed(5)
    model = sm.SiglipModel(config)
    with torch.no_grad():  # from-scratch init leaves biases at 0 and LayerNorms at 1: move every parameter off it
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return Golden(Path(folder), seed)


def check_stage(trace, g, names, what):
    """parity.compare of the names a stage wrote against the golden; the first mismatch is the feedback."""
    if not isinstance(trace, dict):
        raise AssertionError(f"{what}: expected a dict of activations, got {type(trace).__name__}")
    for name in names:
        if name not in trace or trace[name] is None:
            raise AssertionError(f"{what}: wrote no trace[{name!r}]; it should hold {tuple(g.a[name].shape)}")
        if not isinstance(trace[name], (np.ndarray, np.generic)) or trace[name].dtype.kind not in "fiu":
            raise AssertionError(f"{what}: trace[{name!r}] is a {type(trace[name]).__name__}, expected a float "
                                 f"NumPy array")
    rows = parity.compare(g.a, {name: np.asarray(trace[name], dtype=np.float64) for name in names},
                          heads=g.heads)
    failed = [row for row in rows if row["result"] not in parity.PASSING]
    if failed:
        row = failed[0]
        raise AssertionError(f"{what} ({g.about}): first wrong layer {row['name']}: {parity.describe(row)} "
                             f"[A is the golden, siglip_min]")


def layer_names(tower, i):
    return [f"{tower}.layers.{i}.{part}" for part in parity.BLOCK_PARTS] + [f"{tower}.layers.{i}"]


# primitives ------------------------------------------------------------------------------------------------------

def randn(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def check_primitives(student, seed, scale):
    x, w, b = randn(2, 3, 8, seed=seed, scale=scale), randn(5, 8, seed=seed + 1), randn(5, seed=seed + 2)
    check_close(student.linear(x, w, b), F.linear(t(x), t(w), t(b)), "linear(x (2, 3, 8), weight (5, 8), bias (5,))")
    small = randn(2, 4, 16, seed=seed + 3, scale=0.003 * scale)  # small activations: there eps shows
    gamma, beta = 1 + randn(16, seed=seed + 4, scale=0.1), randn(16, seed=seed + 5, scale=0.1)
    for x in (small, randn(2, 4, 16, seed=seed + 6, scale=scale)):
        got, want = student.layer_norm(x, gamma, beta), F.layer_norm(t(x), (16,), t(gamma), t(beta), eps=1e-6)
        if matches(got, F.layer_norm(t(x), (16,), t(gamma), t(beta), eps=1e-5)) and not matches(got, want):
            raise AssertionError("layer_norm: your eps is 1e-5 (torch's default); SigLIP's is 1e-6, the default "
                                 "argument eps=1e-6")
        if matches(got, (t(x) - t(x).mean(-1, keepdim=True)) / (t(x).var(-1, keepdim=True) + 1e-6).sqrt() * t(gamma)
                   + t(beta)) and not matches(got, want):
            raise AssertionError("layer_norm: you divide by the unbiased variance (D - 1); LayerNorm's is biased "
                                 "(divide by D: np.var's default)")
        check_close(got, want, "layer_norm (eps 1e-6)")
    x = np.linspace(-6, 6, 241) * scale
    got = student.gelu_tanh(x)
    if matches(got, F.gelu(t(x)), atol=1e-7, rtol=0):
        raise AssertionError("gelu_tanh: this is the exact (erf) GELU; SigLIP uses the tanh approximation "
                             "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))")
    check_close(got, F.gelu(t(x), approximate="tanh"), "gelu_tanh", atol=1e-7, rtol=1e-7)
    scores = randn(2, 3, 4, 5, seed=seed + 7, scale=scale)
    for axis in (-1, 1):
        check_close(student.softmax(scores, axis=axis), torch.softmax(t(scores), dim=axis),
                    f"softmax over axis {axis} of a (2, 3, 4, 5) array")


def test_primitives_match_torch(student, reference):
    check_primitives(student, seed=0, scale=1.0)


def test_primitives_softmax_large_scores(student, reference):
    scores = np.array([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1010.0]])  # (2, 3)
    with np.errstate(all="ignore"):
        got = student.softmax(scores)
    check_close(got, torch.softmax(t(scores), dim=-1), "softmax of scores near +-1000 (exp overflows unless you "
                "subtract the maximum first)")


### BEGIN HIDDEN TESTS
def test_primitives_other_values(student, reference):
    check_primitives(student, seed=10, scale=4.0)
    x = randn(3, 7, seed=11)
    check_close(student.linear(x, randn(2, 7, seed=12), np.zeros(2)), F.linear(t(x), t(randn(2, 7, seed=12))),
                "linear of a (3, 7) array")
### END HIDDEN TESTS


# patch_embeddings ------------------------------------------------------------------------------------------------

def check_patchify(student, B, C, H, W, p, seed):
    x = randn(B, C, H, W, seed=seed)
    got = student.patchify(x, p)
    rows, cols = H // p, W // p
    check_shape(got, (B, rows * cols, C * p * p), f"patchify of a {(B, C, H, W)} image into {p} x {p} patches")
    want = F.unfold(t(x), p, stride=p).transpose(1, 2)  # (B, N, C*p*p): torch's own patch order and flattening
    if not matches(got, want):
        transposed = want.reshape(B, rows, cols, -1).transpose(1, 2).reshape(B, rows * cols, -1)
        if matches(got, transposed):
            raise AssertionError("patchify: your patches come column by column (the patch grid transposed); SigLIP "
                                 "takes them row by row: patch 1 is the one right of patch 0, not below it")
        channels_last = F.unfold(t(x), p, stride=p).reshape(B, C, p * p, -1).transpose(1, 2).reshape(B, -1, rows * cols)
        if matches(got, channels_last.transpose(1, 2)):
            raise AssertionError("patchify: each patch is flattened channels last (p, p, C); the conv kernel is "
                                 "(D, C, p, p), so flatten (C, p, p)")
    check_close(got, want, f"patchify of a {(B, C, H, W)} image, patch {p}")


def test_patch_embeddings_patchify(student, reference):
    check_patchify(student, B=2, C=3, H=6, W=6, p=2, seed=20)


def check_vision_embeddings(student, reference, g):
    trace = {}
    with from_reference(student, reference, *others(PATCH)):
        student.vision_embeddings(g.weights, g.vision, g.a["pixel_values"], trace)
    check_stage(trace, g, ("vision.patch_embeds", "vision.embeddings"),
                "vision_embeddings fed the golden pixel_values")


def test_patch_embeddings_golden(student, reference):
    check_vision_embeddings(student, reference, golden("tiny", 0))


### BEGIN HIDDEN TESTS
def test_patch_embeddings_other_seed_and_checkpoint(student, reference):
    check_patchify(student, B=1, C=2, H=9, W=6, p=3, seed=21)  # 3 x 2 patches: rows and columns differ
    check_patchify(student, B=2, C=3, H=10, W=10, p=4, seed=22)  # the conv drops the last 2 rows and columns
    check_vision_embeddings(student, reference, golden("tiny", 1))
    check_vision_embeddings(student, reference, golden("random", 2))
### END HIDDEN TESTS


# encoder_layer ---------------------------------------------------------------------------------------------------

def check_attention(student, B, Tq, Tk, D, H, seed):
    q, k, v = randn(B, Tq, D, seed=seed), randn(B, Tk, D, seed=seed + 1), randn(B, Tk, D, seed=seed + 2)
    got = student.multi_head_attention(q, k, v, H)
    split = lambda x: sm.split_heads(t(x), H)  # noqa: E731
    want = sm.merge_heads(sm.attend(split(q), split(k), split(v), None, "eager"))  # (B, Tq, D)
    check_shape(got, (B, Tq, D), f"multi_head_attention of q {q.shape}, k and v {k.shape}, {H} heads")
    if not matches(got, want):
        unscaled = sm.merge_heads(sm.attend(split(q) * math.sqrt(D // H), split(k), split(v), None, "eager"))
        if matches(got, unscaled):
            raise AssertionError(f"multi_head_attention: the scores are not divided by sqrt(head_dim) = "
                                 f"sqrt({D // H}) before the softmax")
    check_close(got, want, f"multi_head_attention, {H} heads of {D // H}, {Tq} queries and {Tk} keys")


def test_encoder_layer_attention_one_query(student, reference):
    with from_reference(student, reference, *others(LAYER)):
        check_attention(student, B=2, Tq=1, Tk=5, D=8, H=2, seed=30)  # one query: the MAP head's probe


def check_layers(student, reference, g, layers):
    """Vision and text block i fed the golden input of block i (embeddings for block 0), for each i in layers."""
    for tower, config in (("vision", g.vision), ("text", g.text)):
        for i in layers(config["num_hidden_layers"]):
            trace = {}
            given = f"{tower}.embeddings" if i == 0 else f"{tower}.layers.{i - 1}"
            with from_reference(student, reference, *others(LAYER)):
                student.encoder_layer(g.weights, config, tower, i, g.a[given], trace)
            check_stage(trace, g, layer_names(tower, i), f"encoder_layer({tower!r}, {i}) fed the golden {given}")


def test_encoder_layer_golden_first_block(student, reference):
    check_layers(student, reference, golden("tiny", 0), lambda n: [0])


def test_encoder_layer_golden_last_block(student, reference):
    check_layers(student, reference, golden("tiny", 0), lambda n: [n - 1])


### BEGIN HIDDEN TESTS
def test_encoder_layer_other_seed_and_checkpoint(student, reference):
    with from_reference(student, reference, *others(LAYER)):
        check_attention(student, B=1, Tq=4, Tk=4, D=12, H=3, seed=31)
        check_attention(student, B=2, Tq=3, Tk=3, D=6, H=1, seed=32)
    check_layers(student, reference, golden("tiny", 1), range)
    check_layers(student, reference, golden("random", 2), range)
### END HIDDEN TESTS


# heads -----------------------------------------------------------------------------------------------------------

def check_heads(student, reference, g):
    with from_reference(student, reference, *others(HEADS)):
        trace = {}
        last = f"vision.layers.{g.vision['num_hidden_layers'] - 1}"
        student.vision_pool(g.weights, g.vision, g.a[last], trace)
        check_stage(trace, g, ("vision.post_layernorm", "vision.pooled"), f"vision_pool fed the golden {last}")
        trace = {}
        last = f"text.layers.{g.text['num_hidden_layers'] - 1}"
        student.text_pool(g.weights, g.text, g.a[last], trace)
        check_stage(trace, g, ("text.final_layer_norm", "text.pooled", "text.features"),
                    f"text_pool fed the golden {last}")
        trace = {}
        student.similarity(g.weights, g.a["vision.pooled"], g.a["text.features"], trace)
        check_stage(trace, g, parity.OUTPUT_NAMES, "similarity fed the golden vision.pooled and text.features")


def test_heads_golden(student, reference):
    check_heads(student, reference, golden("tiny", 0))


### BEGIN HIDDEN TESTS
def test_heads_other_seed_and_checkpoint(student, reference):
    check_heads(student, reference, golden("tiny", 1))
    check_heads(student, reference, golden("random", 2))
### END HIDDEN TESTS


# forward ---------------------------------------------------------------------------------------------------------

def check_forward(student, reference, g):
    with from_reference(student, reference, *others(FORWARD)):
        trace = student.forward(g.weights, g.config, g.a["pixel_values"], g.a["input_ids"])
    names = [name for name in parity.in_pipeline_order(g.a) if name not in parity.INPUT_NAMES]
    check_stage(trace, g, names, "forward fed the golden pixel_values and input_ids")


def test_forward_golden(student, reference):
    check_forward(student, reference, golden("tiny", 0))


### BEGIN HIDDEN TESTS
def test_forward_other_seed_and_checkpoint(student, reference):
    check_forward(student, reference, golden("tiny", 1))
    check_forward(student, reference, golden("random", 2))
### END HIDDEN TESTS
