"""Train SigLIP with the sigmoid loss on CPU: synthetic "a {colour} {shape}" pictures, or a folder of captioned images.

    python train.py                                  # the shipped checkpoints/siglip-tiny-shapes
    python train.py --steps 3 --out /tmp/smoke       # a quick smoke run
    python train.py --data photos --out my-siglip    # photos/captions.jsonl: {"image": "cat.jpg", "caption": "..."}
    python train.py --init checkpoints/siglip-tiny-shapes --data photos --out tuned   # fine-tune any SigLIP

The synthetic data: one shape (circle, square, triangle, star) of one of eight colours at a random position,
size and rotation on a random plain or noisy background, drawn anti-aliased (4x supersampling). Every batch
holds each caption at most once: the sigmoid loss ([1] §3) takes every off-diagonal pair for a negative, so a
repeated caption would teach the model that a red circle is not a red circle. With 32 captions, a batch of 32
is all of them in a random order.

Ids and pixels come from tokenizer.py and preprocess.py, exactly as at inference, and the output folder is in
Hugging Face layout (config.json, model.safetensors, spiece.model, tokenizer_config.json,
preprocessor_config.json): siglip_min and transformers load it alike.

References
  [1] Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, arXiv:2303.15343.
  [2] google-research/big_vision: models/vit.py and models/proj/image_text/two_towers.py (initialisation).
"""
import argparse
import copy
import io
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image, ImageDraw

import siglip_min as sm
from hub import resolve_model_dir
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

# ----------------------------------------------------------------------------------------------------------------
# Synthetic data: "a {colour} {shape}".

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 70, 230), "yellow": (245, 225, 30),
           "purple": (140, 40, 180), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10)}
SHAPES = ("circle", "square", "triangle", "star")
CLASSES = [(colour, shape) for colour in COLOURS for shape in SHAPES]  # 32 (colour, shape) pairs
TRAIN_RADII = (0.22, 0.40)  # circumradius as a fraction of the image side
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges
MIN_CONTRAST = 90  # least RGB distance between a shape's colour and its background's


def caption(colour, shape):
    return f"a {colour} {shape}"


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


def draw_batch(rng, batch_size, image_size, **drawing):
    """(images, captions, classes): captions all distinct while batch_size <= 32 (each round is a permutation)."""
    rounds = math.ceil(batch_size / len(CLASSES))
    classes = np.concatenate([rng.permutation(len(CLASSES)) for _ in range(rounds)])[:batch_size]
    images = [draw_image(rng, *CLASSES[c], image_size, **drawing) for c in classes]
    return images, [caption(*CLASSES[c]) for c in classes], classes


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary and model.

def train_vocabulary(captions, folder):
    """spiece.model for these captions, with SigLIP's ids (pad 0, eos 1, unk 2, no bos): one piece a word.

    A word model, because SentencePiece's unigram trainer, given the 13 words of 32 captions, settles on
    single letters ("a purple triangle" becomes 14 pieces); with words it is 3, and "a cat" is "a <unk>".
    Written through model_writer rather than model_prefix, which the file would record: the same captions give
    the same bytes wherever the folder is.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sorted(set(captions))), model_writer=model, model_type="word",
        vocab_size=8000, hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2)
    path = Path(folder) / "spiece.model"
    path.write_bytes(model.getvalue())
    return path


SIZES = {  # vision: image side, patch, width, depth, heads; text: width = vision width (it is also P), depth
    "tiny": dict(image_size=48, patch_size=12, width=128, depth=4, heads=4, text_depth=2),
    "small": dict(image_size=48, patch_size=6, width=192, depth=6, heads=6, text_depth=2),
}
TEXT_LENGTH = 8  # tokens: "a {colour} {shape}" takes 4 or 5 with eos; the text tower costs in proportion


def model_config(size, vocab_size, text_length=TEXT_LENGTH):
    s = SIZES[size]
    vision = sm.VisionConfig(hidden_size=s["width"], intermediate_size=4 * s["width"], num_hidden_layers=s["depth"],
                             num_attention_heads=s["heads"], image_size=s["image_size"], patch_size=s["patch_size"])
    text = sm.TextConfig(vocab_size=vocab_size, hidden_size=s["width"], intermediate_size=4 * s["width"],
                         num_hidden_layers=s["text_depth"], num_attention_heads=s["heads"],
                         max_position_embeddings=text_length)
    return sm.SiglipConfig(text_config=text, vision_config=vision)


def sincos_2d(grid, width, temperature=10000.0):
    """(grid * grid, width) 2-D sine-cosine position embeddings, rows then columns (big_vision posemb_sincos_2d)."""
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                          indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(width // 4) / max(1, width // 4 - 1))  # (D/4,)
    x, y = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega  # (N, D/4)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # (N, D)


def init_weights(model):
    """From-scratch initialisation after big_vision [2]: Xavier-uniform matrices (token embeddings included), zero
    biases, N(0, 1/D) text positions and probe; the learned image positions start from 2-D sine-cosines (big_vision's
    "sincos2d"), so that where a patch lies is plain from the first step (shape accuracy after 2,000 steps: 53%
    against 46% from random positions). logit_scale = log 10 and logit_bias = -10 stay as SigLIP
    sets them ([1] §3)."""
    for name, p in model.named_parameters():
        if name in ("logit_scale", "logit_bias"):
            continue
        if name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif "norm" in name or "ln" in name.split(".")[-2]:
            torch.nn.init.ones_(p)
        elif name.endswith(("embed.pos", "head.probe")):
            torch.nn.init.normal_(p, std=p.shape[-1] ** -0.5)
        else:
            torch.nn.init.xavier_uniform_(p.view(p.shape[0], -1))
    with torch.no_grad():
        model.vision.embed.pos.copy_(sincos_2d(model.vision.embed.grid, model.vision.embed.pos.shape[1]))
    return model


def learning_rate(step, steps, peak, warmup):
    """Linear warm-up to `peak`, then cosine decay to 0 (the schedule of [1] §4)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot evaluation: every image against all 32 captions; colour and shape scored apart.

def zero_shot_accuracy(model, tok, proc, images, classes):
    """{"all", "colour", "shape"}: top-1 accuracy of the best of the 32 captions, and of its colour and shape."""
    logits = sm.zero_shot_logits(model, tok, proc, images, [caption(*c) for c in CLASSES], template="{}")  # (B, 32)
    predicted = [CLASSES[i] for i in logits.argmax(dim=1).tolist()]
    truth = [CLASSES[c] for c in classes]
    return {"all": np.mean([p == t for p, t in zip(predicted, truth)]),
            "colour": np.mean([p[0] == t[0] for p, t in zip(predicted, truth)]),
            "shape": np.mean([p[1] == t[1] for p, t in zip(predicted, truth)])}


# ----------------------------------------------------------------------------------------------------------------
# Batches: (images, captions), images as anything preprocess.py takes (arrays or paths).

def synthetic_batches(rng, batch_size, image_size):
    while True:
        images, captions, _ = draw_batch(rng, batch_size, image_size)
        yield images, captions


def read_captions(folder):
    """[(image path, caption)] from folder/captions.jsonl, one {"image": ..., "caption": ...} a line."""
    path = Path(folder) / "captions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --data needs a captions.jsonl of {{\"image\": ..., \"caption\": ...}} lines")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not {"image", "caption"} <= set(row):
                raise ValueError(f"{path}:{number}: needs keys 'image' and 'caption', has {sorted(row)}")
            pairs.append((Path(folder) / row["image"], row["caption"]))
    if not pairs:
        raise ValueError(f"{path}: no image-caption pairs")
    return pairs


def folder_batches(rng, batch_size, pairs):
    """Random batches of pairs, a new permutation each epoch."""
    batch_size = min(batch_size, len(pairs))
    while True:
        order = rng.permutation(len(pairs))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [pairs[i] for i in order[start:start + batch_size]]
            yield [image for image, _ in chosen], [text for _, text in chosen]


# ----------------------------------------------------------------------------------------------------------------
# The output folder: Hugging Face layout, loadable by siglip_min and transformers alike.

def save_folder(model, vocab_file, tok, proc, folder, template="{}"):
    """config.json + model.safetensors + spiece.model + tokenizer_config.json + preprocessor_config.json.

    config.json also gets {"siglip_min": {"template": ...}}, the zero-shot prompt template of this model's CLI;
    transformers and SiglipConfig.from_hf ignore the key.
    """
    folder = Path(folder)
    model.save_pretrained(folder)
    if Path(vocab_file).resolve() != (folder / "spiece.model").resolve():
        shutil.copyfile(vocab_file, folder / "spiece.model")
    config = json.loads((folder / "config.json").read_text())
    write_json(folder / "config.json", {**config, "siglip_min": {"template": template}})
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "SiglipTokenizer", "model_max_length": tok.model_max_length,
        "do_lower_case": tok.do_lower_case, "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"})
    height, width = proc.size
    write_json(folder / "preprocessor_config.json", {
        "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
        "do_resize": True, "size": {"height": height, "width": width}, "resample": int(proc.resample),
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True})


def write_json(path, value):
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Training.

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=26000)
    p.add_argument("--batch-size", type=int, default=len(CLASSES))
    p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="model size (ignored with --init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="checkpoints/siglip-tiny-shapes")
    p.add_argument("--data", help="a folder with captions.jsonl instead of synthetic shapes")
    p.add_argument("--init", help="a SigLIP checkpoint folder (or cached Hub id) to fine-tune")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1,
                   help="AdamW (decay x lr per step); 0.1 at lr 1e-3 is a big_vision wd of 1e-4")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999, help="decay of the weight average that is saved")
    p.add_argument("--threads", type=int, default=2, help="torch threads; results are reproducible for a fixed count")
    p.add_argument("--patch-dropout", type=float, default=0.0,
                   help="fraction of each image's patch tokens left out in training (FLIP); 0 keeps all")
    p.add_argument("--unmasked-tail", type=float, default=0.2,
                   help="with --patch-dropout: the last fraction of steps keeps every token (FLIP's unmasked tuning)")
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=1000, help="zero-shot accuracy on shapes (synthetic data only)")
    args = p.parse_args(argv)
    if not 0 <= args.patch_dropout < 1:
        p.error(f"--patch-dropout {args.patch_dropout}: the fraction of tokens left out must be in [0, 1)")
    if not 0 <= args.unmasked_tail <= 1:
        p.error(f"--unmasked-tail {args.unmasked_tail}: the fraction of steps must be in [0, 1]")
    return args


def start_model(args, captions, scratch):
    """(model, tokenizer, processor, spiece.model path): loaded from --init, or new with a vocabulary trained here."""
    if args.init:
        folder = resolve_model_dir(args.init)
        return (sm.SigLIP.from_pretrained(folder).train(), SiglipTokenizer.from_pretrained(folder),
                SiglipImageProcessor.from_pretrained(folder), folder / "spiece.model")
    vocab_file = train_vocabulary(captions, scratch)
    tok = SiglipTokenizer(vocab_file, model_max_length=TEXT_LENGTH)
    model = init_weights(sm.SigLIP(model_config(args.size, tok.sp.get_piece_size())))
    return model, tok, SiglipImageProcessor(size=SIZES[args.size]["image_size"]), vocab_file


def optimizer(model, lr, weight_decay):
    """AdamW with weight decay on the kernels of linear and patch layers only, as big_vision's default
    wd_mults (".*/kernel$"): not on biases, norms, embedding tables, positions, the probe, logit scale and bias.

    torch's AdamW multiplies the decay by the learning rate; big_vision (optax.py) scales it by the schedule
    alone. A big_vision wd = 1e-4 at lr = 1e-3 is therefore weight_decay = 1e-4 / 1e-3 = 0.1 here.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    is_kernel = {name: name.endswith(".weight") and p.dim() >= 2 for name, p in named}  # (out, in), (out, 3, p, p)
    kernels = [p for name, p in named if is_kernel[name]]
    others = [p for name, p in named if not is_kernel[name]]
    return torch.optim.AdamW([{"params": kernels, "weight_decay": weight_decay},
                              {"params": others, "weight_decay": 0.0}], lr=lr)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pairs = read_captions(args.data) if args.data else None
    captions = [text for _, text in pairs] if pairs else [caption(*c) for c in CLASSES]
    with tempfile.TemporaryDirectory() as scratch:
        model, tok, proc, vocab_file = start_model(args, captions, scratch)
        image_size = model.config.vision_config.image_size
        batches = (folder_batches(rng, args.batch_size, pairs) if pairs
                   else synthetic_batches(rng, args.batch_size, image_size))
        evaluation = None if pairs else draw_batch(np.random.default_rng(args.seed + 1), 320, image_size)
        average = train(model, tok, proc, batches, evaluation, args)
        save_folder(average, vocab_file, tok, proc, args.out)
    print(f"saved {args.out}")


def train(model, tok, proc, batches, evaluation, args, on_log=None):
    """AdamW on the sigmoid loss with warm-up and cosine decay; returns the moving average of the weights.

    One progress line every log_every steps; the zero-shot accuracy of the average every eval_every steps.
    on_log, if given, also receives each of them as a dict: {"step", "loss", "images_per_s", "temperature",
    "bias", "seconds"} or {"step", "all", "colour", "shape"}.
    """
    opt = optimizer(model, args.lr, args.weight_decay)
    average = copy.deepcopy(model).eval()
    model.train()
    start, last, last_step = time.time(), time.time(), 0
    for step in range(1, args.steps + 1):
        images, captions = next(batches)
        ids, pixels = torch.from_numpy(tok(captions)), torch.from_numpy(proc(images))
        for group in opt.param_groups:
            group["lr"] = learning_rate(step - 1, args.steps, args.lr, min(args.warmup, args.steps // 10 + 1))
        if args.patch_dropout and step <= (1 - args.unmasked_tail) * args.steps:
            loss = patch_dropout_loss(model, ids, pixels, args.patch_dropout)
        else:
            loss = model(ids, pixels, return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        update_average(average, model, decay=min(args.ema, step / (step + 10)))
        if step % args.log_every == 0 or step == args.steps:
            now = time.time()
            row = {"step": step, "loss": loss.item(), "images_per_s": (step - last_step) * len(captions) / (now - last),
                   "temperature": model.logit_scale.exp().item(), "bias": model.logit_bias.item(),
                   "seconds": now - start}
            print(f"step {step:5d}  loss {row['loss']:.4f}  {row['images_per_s']:5.0f} images/s  "
                  f"t {row['temperature']:5.1f}  b {row['bias']:6.2f}  {row['seconds']:6.0f}s", flush=True)
            if on_log:
                on_log(row)
            last, last_step = now, step
        if evaluation and (step % args.eval_every == 0 or step == args.steps):
            acc = zero_shot_accuracy(average, tok, proc, evaluation[0], evaluation[2])
            print(f"eval {step:5d}  all {acc['all']:.3f}  colour {acc['colour']:.3f}  shape {acc['shape']:.3f}",
                  flush=True)
            if on_log:
                on_log({"step": step, **acc})
            last = time.time()  # images/s counts training only
    return average


def patch_dropout_loss(model, ids, pixels, drop):
    """The sigmoid loss with a random `drop` fraction of each image's patch tokens left out before the vision
    blocks (FLIP: Li et al., "Scaling Language-Image Pre-training via Masking", CVPR 2023, §3). The MAP head
    pools whatever tokens are left, so the model must read a shape from the part of it that it sees."""
    vision = model.vision
    x = vision.embed(pixels)  # (B, N, D)
    B, N, D = x.shape
    kept = max(1, N - round(drop * N))
    keep = torch.rand(B, N, device=x.device).argsort(dim=1)[:, :kept]  # (B, K): a fresh random subset per image
    x = x.gather(1, keep[:, :, None].expand(B, kept, D))  # (B, K, D)
    for block in vision.blocks:
        x = block(x)  # (B, K, D)
    image_embeds = sm.l2_normalize(vision.head(vision.norm(x)))  # (B, P)
    text_embeds = sm.l2_normalize(model.text(ids))  # (B, P)
    return sm.sigmoid_loss(image_embeds, text_embeds, model.logit_scale, model.logit_bias)


@torch.no_grad()
def update_average(average, model, decay):
    """average <- decay * average + (1 - decay) * model, weight by weight (an exponential moving average)."""
    for a, p in zip(average.parameters(), model.parameters()):
        a.lerp_(p, 1 - decay)


if __name__ == "__main__":
    main()
