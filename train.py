"""Train SigLIP with the sigmoid loss on CPU: synthetic "a {colour} {shape}" pictures, or a folder of captioned images.

    python train.py                                  # the shipped model's recipe, into runs/siglip-tiny-shapes
    python train.py --steps 3 --out /tmp/smoke       # a quick smoke run
    python train.py --data photos --out my-siglip    # photos/captions.jsonl: {"image": "cat.jpg", "caption": "..."}
    python train.py --init checkpoints/siglip-tiny-shapes --data photos --out tuned   # fine-tune any SigLIP
    torchrun --nproc_per_node=2 train.py --threads 1 --out runs/two   # the same run across 2 processes

The synthetic data is shapes.py's. Every batch holds each caption at most once: the sigmoid loss ([1] §3) takes
every off-diagonal pair for a negative, so a repeated caption would teach the model that a red circle is not a red
circle. With 32 captions, a batch of 32 is all of them in a random order.

The run is driven by TrainOptions (Python callers build one; the command line only fills it) and starts from
siglip_min's own from-scratch initialisation. Ids and pixels come from tokenizer.py and preprocess.py, exactly as at
inference, and each file of the output folder is written by the class that reads it (config.json and
model.safetensors by the model, spiece.model and tokenizer_config.json by the tokenizer, preprocessor_config.json by
the image processor): siglip_min and transformers load it alike.

Under torchrun (gloo: CPU processes) every rank draws the same global batch from the same seed and keeps its share
of the rows; the loss is siglip_min.distributed_sigmoid_loss, whose text embeddings travel round the ranks, and
DistributedDataParallel averages the gradients. Rank 0 logs, evaluates and saves. The run takes the same steps as
one process with the same --batch-size and --seed, to float32 rounding.

References
  [1] Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, arXiv:2303.15343.
  [2] Li et al., "Scaling Language-Image Pre-training via Masking" (FLIP), CVPR 2023: patch dropout.
"""
import argparse
import copy
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import shapes
import siglip_min as sm
from hub import InputError, resolve_model_dir
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

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
    vision = sm.SiglipVisionConfig(hidden_size=s["width"], intermediate_size=4 * s["width"],
                                   num_hidden_layers=s["depth"], num_attention_heads=s["heads"],
                                   image_size=s["image_size"], patch_size=s["patch_size"])
    text = sm.SiglipTextConfig(vocab_size=vocab_size, hidden_size=s["width"], intermediate_size=4 * s["width"],
                               num_hidden_layers=s["text_depth"], num_attention_heads=s["heads"],
                               max_position_embeddings=text_length)
    return sm.SiglipConfig(text_config=text, vision_config=vision)


def learning_rate(step, steps, peak, warmup):
    """Linear warm-up to `peak`, then cosine decay to 0 (the schedule of [1] §4)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


# ----------------------------------------------------------------------------------------------------------------
# Zero-shot evaluation: every image against all 32 captions; colour and shape scored apart.

def zero_shot_accuracy(model, tok, proc, images, classes):
    """shapes.accuracy of the model's logits against the 32 captions, each caption its own prompt."""
    return shapes.accuracy(sm.zero_shot_logits(model, tok, proc, images, shapes.CAPTIONS, template="{}"), classes)


# ----------------------------------------------------------------------------------------------------------------
# Batches: (images, captions), images as anything preprocess.py takes (arrays or paths).

def synthetic_batches(rng, batch_size, image_size, classes=None, repeats=False):
    """Batches of shapes.draw_batch: from `classes` (all 32 by default), each caption once a batch unless repeats."""
    while True:
        images, captions, _ = shapes.draw_batch(rng, batch_size, image_size, classes, repeats)
        yield images, captions


def read_captions(folder):
    """[(image path, caption)] from folder/captions.jsonl, one {"image": ..., "caption": ...} a line, all checked
    before training starts: every line an object with two strings, every image there and decodable."""
    path = Path(folder) / "captions.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: --data needs a captions.jsonl of {{\"image\": ..., \"caption\": ...}} lines")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    decoder, pairs = SiglipImageProcessor(size=8), []  # decoding at 8 x 8 is enough to know an image reads
    for number, line in enumerate(lines, 1):
        if line.strip():
            image, caption = caption_row(line, f"{path}:{number}")
            try:
                decoder(str(Path(folder) / image))
            except (OSError, InputError) as e:
                raise InputError(f"{path}:{number}: image {image!r}: {e}") from None
            pairs.append((Path(folder) / image, caption))
    if not pairs:
        raise InputError(f"{path}: no image-caption pairs")
    return pairs


def caption_row(line, where):
    """(image, caption) of one captions.jsonl line, both non-empty strings."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not a JSON line ({e})") from None
    if not isinstance(row, dict) or not {"image", "caption"} <= set(row):
        raise InputError(f"{where}: needs an object with keys 'image' and 'caption', "
                         f"got {sorted(row) if isinstance(row, dict) else type(row).__name__}")
    for key in ("image", "caption"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise InputError(f"{where}: {key} must be a non-empty string, got {row[key]!r}")
    return row["image"], row["caption"]


def folder_batches(rng, batch_size, pairs):
    """Random batches of pairs, a new permutation each epoch."""
    batch_size = min(batch_size, len(pairs))
    while True:
        order = rng.permutation(len(pairs))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [pairs[i] for i in order[start:start + batch_size]]
            yield [image for image, _ in chosen], [text for _, text in chosen]


# ----------------------------------------------------------------------------------------------------------------
# The output folder: Hugging Face layout, each file written by the class that reads it.

def save_folder(model, tok, proc, folder):
    """config.json + model.safetensors, spiece.model + tokenizer_config.json, preprocessor_config.json.

    The config records the prompt template "{}": the model was trained on bare captions, so the command line
    classifies with the labels as they are (transformers ignores the entry).
    """
    model.config.prompt_template = "{}"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    proc.save_pretrained(folder)


# ----------------------------------------------------------------------------------------------------------------
# Training.

def option(default, help=None):
    """A TrainOptions field; `help` is its command-line help."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainOptions:
    """Everything a run depends on. Python callers build one; the command line fills it (one flag per field)."""
    steps: int = 26000
    batch_size: int = len(shapes.CLASSES)
    size: str = option("tiny", "model size, a key of SIZES (ignored with --init)")
    seed: int = 0
    out: str = option("runs/siglip-tiny-shapes", "the folder to write; an existing one only with --overwrite")
    overwrite: bool = option(False, "write over --out if it exists (e.g. --out checkpoints/siglip-tiny-shapes)")
    data: str = option(None, "a folder with captions.jsonl instead of synthetic shapes")
    init: str = option(None, "a SigLIP checkpoint folder (or cached Hub id) to fine-tune")
    lr: float = 1e-3
    weight_decay: float = option(0.1, "AdamW (decay x lr per step); 0.1 at lr 1e-3 is a big_vision wd of 1e-4")
    warmup: int = 200
    ema: float = option(0.999, "decay of the weight average that is saved")
    threads: int = option(2, "torch threads; results are reproducible for a fixed count")
    patch_dropout: float = option(0.0, "fraction of each image's patches left out in training ([2]); 0 keeps all")
    unmasked_tail: float = option(0.2, "with patch_dropout: the last fraction of steps keeps every patch (FLIP's "
                                       "unmasked tuning)")
    log_every: int = 250
    eval_every: int = option(1000, "zero-shot accuracy on shapes (synthetic data only)")
    loss: str = option("sigmoid", "sigmoid (SigLIP's) or softmax (CLIP's contrastive loss, to compare)")
    init_bias: float = option(-10.0, "the logit bias b a new model starts from ([1] §3: -10; try 0)")
    hold_out: str = option(None, "captions never drawn in training, comma-separated ('a red circle,a blue star'): "
                                 "the zero-shot test of a colour-shape pair never seen")
    repeats: bool = option(False, "draw captions with replacement, so a batch may hold one caption twice (each "
                                  "copy then counts the other as a negative)")
    mask_padding: bool = option(False, "pass the tokenizer's attention mask in training (SigLIP trains without one)")

    def __post_init__(self):
        for name in ("steps", "batch_size", "threads", "log_every", "eval_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup < 0 or not 0 <= self.ema < 1:
            raise InputError(f"need --lr > 0, --weight-decay >= 0, --warmup >= 0 and 0 <= --ema < 1; got {self.lr}, "
                             f"{self.weight_decay}, {self.warmup}, {self.ema}")
        if self.size not in SIZES:
            raise InputError(f"--size {self.size!r}: expected one of {sorted(SIZES)}")
        if not 0 <= self.patch_dropout < 1:
            raise InputError(f"--patch-dropout {self.patch_dropout}: the fraction left out must be in [0, 1)")
        if not 0 <= self.unmasked_tail <= 1:
            raise InputError(f"--unmasked-tail {self.unmasked_tail}: the fraction of steps must be in [0, 1]")
        if self.loss not in LOSSES:
            raise InputError(f"--loss {self.loss!r}: expected one of {sorted(LOSSES)}")
        if not math.isfinite(self.init_bias):
            raise InputError(f"--init-bias must be a finite number, got {self.init_bias}")
        held_out_classes(self.hold_out)  # names the caption that is not one of the 32

    def training_classes(self):
        """The class indices training draws from: all 32 but the held-out ones (None: all)."""
        held = held_out_classes(self.hold_out)
        return [c for c in range(len(shapes.CLASSES)) if c not in held] if held else None


def held_out_classes(hold_out):
    """The class indices of --hold-out's captions; InputError naming one that is not a shapes caption, or all 32."""
    if not hold_out:
        return []
    captions = [caption.strip() for caption in hold_out.split(",") if caption.strip()]
    unknown = [caption for caption in captions if caption not in shapes.CAPTIONS]
    if unknown:
        raise InputError(f"--hold-out {unknown[0]!r} is not one of the 32 captions (e.g. {shapes.CAPTIONS[0]!r})")
    held = sorted({shapes.CAPTIONS.index(caption) for caption in captions})
    if len(held) == len(shapes.CAPTIONS):
        raise InputError("--hold-out leaves no caption to train on")
    return held


def parse_args(argv=None):
    """TrainOptions from the command line: --steps for steps, --batch-size for batch_size, and so on."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action="store_true", help=f.metadata.get("help"))
        else:
            parser.add_argument(flag, type=f.type if f.type in (int, float) else str, default=f.default,
                                help=f.metadata.get("help"))
    return TrainOptions(**vars(parser.parse_args(argv)))


def start_model(options, captions, scratch):
    """(model, tokenizer, processor): loaded from options.init, or new with a vocabulary trained in `scratch`."""
    if options.init:
        folder = resolve_model_dir(options.init)
        return (sm.SiglipModel.from_pretrained(folder).train(), SiglipTokenizer.from_pretrained(folder),
                SiglipImageProcessor.from_pretrained(folder))
    tok = SiglipTokenizer(train_vocabulary(captions, scratch), model_max_length=TEXT_LENGTH)
    model = sm.SiglipModel(model_config(options.size, tok.sp.get_piece_size()))  # the paper's from-scratch init
    with torch.no_grad():
        model.logit_bias.fill_(options.init_bias)
    return model, tok, SiglipImageProcessor(size=SIZES[options.size]["image_size"])


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
    """Train and save; bad input (an option, the data, --out) is one line on stderr and exit status 2."""
    try:
        run(parse_args(argv))
    except (InputError, OSError) as e:
        print("train.py: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    return 0


def check_out(options):
    """--out must not be an existing folder (or file) unless --overwrite: a run never replaces a model by accident."""
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not options.overwrite:
        raise InputError(f"--out {out}: the folder exists and is not empty; pass --overwrite to replace its model")


def run(options):
    """Seed, data, model, training, and the saved folder options.out (checked before anything else is done)."""
    check_out(options)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        check_distributable(options)
        dist.init_process_group("gloo")
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    pairs = read_captions(options.data) if options.data else None
    captions = [text for _, text in pairs] if pairs else shapes.CAPTIONS
    with tempfile.TemporaryDirectory() as scratch:
        model, tok, proc = start_model(options, captions, scratch)
    image_size = model.config.vision_config.image_size
    batches = (folder_batches(rng, options.batch_size, pairs) if pairs
               else synthetic_batches(rng, options.batch_size, image_size, options.training_classes(), options.repeats))
    evaluation = None if pairs else shapes.draw_batch(np.random.default_rng(options.seed + 1), 320, image_size)
    average = train(model, tok, proc, batches, evaluation, options)
    if rank() == 0:
        save_folder(average, tok, proc, options.out)
        print(f"saved {options.out}")
    if dist.is_initialized():
        dist.destroy_process_group()


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def check_distributable(options):
    """What runs across processes: the sigmoid loss (the softmax loss needs every text at once), without patch
    dropout (the model's forward, which DistributedDataParallel wraps, takes no kept patches)."""
    if options.loss != "sigmoid" or options.patch_dropout:
        raise InputError("under torchrun train.py runs the sigmoid loss without --patch-dropout; got "
                         f"--loss {options.loss} --patch-dropout {options.patch_dropout}")


def my_share(images, captions):
    """This rank's rows of the global batch: rank r of W takes the r-th of W near-equal runs (all rows alone)."""
    if not dist.is_initialized():
        return images, captions
    rows = np.array_split(np.arange(len(captions)), dist.get_world_size())[dist.get_rank()]
    return [images[i] for i in rows], [captions[i] for i in rows]


def distributed_loss(ddp, ids, pixels, attention_mask):
    """This rank's share of the global sigmoid loss, through DistributedDataParallel's forward (which arms its
    gradient averaging) and the ring of distributed_sigmoid_loss. The shares of all ranks sum to the global loss."""
    out = ddp(input_ids=ids, pixel_values=pixels, attention_mask=attention_mask)
    model = ddp.module
    return sm.distributed_sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale, model.logit_bias)


def train(model, tok, proc, batches, evaluation, options, on_log=None):
    """AdamW on the sigmoid loss with warm-up and cosine decay; returns the moving average of the weights.

    One progress line every log_every steps; the zero-shot accuracy of the average every eval_every steps.
    on_log, if given, also receives each of them as a dict: {"step", "loss", "images_per_s", "temperature",
    "bias", "seconds"} or {"step", "all", "colour", "shape"}.
    """
    opt = optimizer(model, options.lr, options.weight_decay)
    average = copy.deepcopy(model).eval()
    model.train()
    ddp = DistributedDataParallel(model) if dist.is_initialized() else None
    world = dist.get_world_size() if ddp else 1
    start, last, last_step = time.time(), time.time(), 0
    for step in range(1, options.steps + 1):
        images, captions = my_share(*next(batches))  # the global batch, every rank alike; this rank's rows of it
        ids, mask = map(torch.from_numpy, tok(captions, return_attention_mask=True))
        pixels = torch.from_numpy(proc(images))
        for group in opt.param_groups:
            group["lr"] = learning_rate(step - 1, options.steps, options.lr,
                                        min(options.warmup, options.steps // 10 + 1))
        drop = options.patch_dropout if step <= (1 - options.unmasked_tail) * options.steps else 0.0
        opt.zero_grad(set_to_none=True)
        if ddp is None:
            loss = batch_loss(model, ids, pixels, options.loss, mask if options.mask_padding else None, drop)
            loss.backward()
        else:
            share = distributed_loss(ddp, ids, pixels, mask if options.mask_padding else None)
            # DDP averages each gradient over the W ranks; a rank's share backpropagated W times over makes that
            # average the sum of the shares' gradients: the gradient of the global loss, as in one process.
            (share * world).backward()
            loss = share.detach().clone()
            dist.all_reduce(loss)  # the global loss, for the log
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        update_average(average, model, decay=min(options.ema, step / (step + 10)))
        if rank() != 0:
            continue
        if step % options.log_every == 0 or step == options.steps:
            now = time.time()
            row = {"step": step, "loss": loss.item(), "images_per_s": (step - last_step) * len(captions) * world / (now - last),
                   "temperature": model.logit_scale.exp().item(), "bias": model.logit_bias.item(),
                   "seconds": now - start}
            print(f"step {step:5d}  loss {row['loss']:.4f}  {row['images_per_s']:5.0f} images/s  "
                  f"t {row['temperature']:5.1f}  b {row['bias']:6.2f}  {row['seconds']:6.0f}s", flush=True)
            if on_log:
                on_log(row)
            last, last_step = now, step
        if evaluation and (step % options.eval_every == 0 or step == options.steps):
            acc = zero_shot_accuracy(average, tok, proc, evaluation[0], evaluation[2])
            print(f"eval {step:5d}  all {acc['all']:.3f}  colour {acc['colour']:.3f}  shape {acc['shape']:.3f}",
                  flush=True)
            if on_log:
                on_log({"step": step, **acc})
            last = time.time()  # images/s counts training only
    return average


LOSSES = {"sigmoid": lambda image_embeds, text_embeds, model: sm.sigmoid_loss(image_embeds, text_embeds,
                                                                             model.logit_scale, model.logit_bias),
          "softmax": lambda image_embeds, text_embeds, model: sm.softmax_loss(image_embeds, text_embeds,
                                                                             model.logit_scale)}


def batch_loss(model, ids, pixels, loss="sigmoid", attention_mask=None, drop=0.0):
    """The loss of one batch: the sigmoid loss ([1] §3), or CLIP's softmax loss to compare.

    drop > 0 leaves a random `drop` fraction of each image's patches out before the vision blocks ([2] §3); the MAP
    head pools whatever patches are left, so the model must read a shape from the part it sees.
    """
    kept = None
    if drop:
        B, N = pixels.shape[0], model.vision.embed.grid ** 2
        kept = torch.rand(B, N, device=pixels.device).argsort(dim=1)[:, : max(1, N - round(drop * N))]  # (B, K)
    image_embeds = sm.l2_normalize(model.vision(pixels, kept_patches=kept))  # (B, P)
    text_embeds = sm.l2_normalize(model.text(ids, attention_mask))  # (B, P)
    return LOSSES[loss](image_embeds, text_embeds, model)


@torch.no_grad()
def update_average(average, model, decay):
    """average <- decay * average + (1 - decay) * model, weight by weight (an exponential moving average)."""
    for a, p in zip(average.parameters(), model.parameters()):
        a.lerp_(p, 1 - decay)


if __name__ == "__main__":
    sys.exit(main())
