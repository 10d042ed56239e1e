"""The command line of siglip-min: zero-shot classification and embeddings with any SigLIP checkpoint.

    python cli.py classify cat.jpg --labels cat dog "a red star"      # the shipped model by default
    python cli.py embed photos/ --out embeds.npy
    python cli.py --help

`python cli.py classify ...` hands over to this file. Input errors (a missing file, a bad checkpoint, an
unreadable image) are printed as one line and exit 2; anything else is a bug and keeps its traceback.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import siglip_min as sm
from hub import InputError, resolve_model_dir
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

DEFAULT_MODEL = Path(__file__).resolve().parent / "checkpoints" / "siglip-tiny-shapes"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
EXAMPLES = """
scores:
  SigLIP scores each (image, label) pair on its own: sigmoid(logit) is the probability that this
  label fits this image. Scores do not sum to 1 over the labels (several can fit, or none), unlike
  CLIP's softmax. --softmax adds the softmax over the given labels, for comparison.

examples:
  python cli.py classify cat.jpg --labels cat dog "a red star"
  python cli.py classify photos/*.jpg --labels-file labels.txt --top-k 3 --json
  python cli.py classify img.png --labels cat dog --model google/siglip-base-patch16-224
  python cli.py embed photos/ --out embeds.npy          # also writes embeds.txt (the paths)
  python cli.py embed --texts captions.txt --out text_embeds.npy
"""


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=str(DEFAULT_MODEL),
                        help="a checkpoint folder, or a Hub id in the local Hugging Face cache "
                             "(default: the shipped checkpoints/siglip-tiny-shapes)")
    common.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    common.add_argument("--dtype", default="float32", choices=sm.DTYPES)
    common.add_argument("--attn", default="sdpa", choices=sm.ATTN_IMPLEMENTATIONS, help="attention implementation")
    common.add_argument("--batch-size", type=int, default=32)
    parser = argparse.ArgumentParser(prog="cli.py", description="SigLIP zero-shot classification and "
                                     "embeddings.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", parents=[common], epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   help="rank labels for each image by sigmoid probability")
    classify.add_argument("images", nargs="+", metavar="IMAGE")
    classify.add_argument("--labels", nargs="+", default=[], metavar="LABEL")
    classify.add_argument("--labels-file", help="labels, one a line")
    classify.add_argument("--template", help=f"prompt for each label (default: the checkpoint's own, else "
                                             f"{sm.DEFAULT_TEMPLATE!r})")
    classify.add_argument("--top-k", type=int, help="show the best K labels only")
    classify.add_argument("--json", action="store_true", help="one JSON object a line per image")
    classify.add_argument("--softmax", action="store_true", help="also show the softmax over the labels")
    classify.add_argument("--mask-padding", action="store_true",
                          help="mask the text padding, as transformers 5.x's zero-shot pipeline does (its tokenizer "
                               "returns an attention mask); SigLIP was trained without one, so the default is none")
    embed = commands.add_parser("embed", parents=[common], epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                help="write L2-normalised embeddings of images (or texts) to a .npy file")
    embed.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER")
    embed.add_argument("--texts", help="embed these captions instead, one a line")
    embed.add_argument("--out", required=True, help="embeds.npy; the paths (or texts) go to embeds.txt beside it")
    return parser


def load_model(args):
    """Model, tokenizer and image processor for --model/--device/--dtype/--attn; the folder is looked up once."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA GPU is available (torch {torch.__version__})")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    folder = resolve_model_dir(args.model)
    model = sm.SiglipModel.from_pretrained(folder, device=args.device, dtype=sm.DTYPES[args.dtype],
                                           attn_implementation=args.attn)
    return model, SiglipTokenizer.from_pretrained(folder), SiglipImageProcessor.from_pretrained(folder)


def read_lines(path, what):
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path}: cannot read it ({e.__class__.__name__})") from None


def run_classify(args):
    labels = args.labels + (read_lines(args.labels_file, "--labels-file") if args.labels_file else [])
    if not labels:
        raise InputError("no labels: give --labels LABEL ... or --labels-file FILE")
    for image in args.images:
        if not Path(image).is_file():
            raise InputError(f"{image}: no such image file")
    model, tokenizer, processor = load_model(args)
    template = args.template or model.config.prompt_template or sm.DEFAULT_TEMPLATE
    logits = sm.zero_shot_logits(model, tokenizer, processor, args.images, labels, template, args.batch_size,
                              args.mask_padding)  # (B, C)
    softmaxed = sm.ranked_labels(labels, logits.softmax(dim=-1)) if args.softmax else None
    for i, (image, scores) in enumerate(zip(args.images, sm.ranked_labels(labels, logits.sigmoid()))):
        scores = scores[: args.top_k] if args.top_k else scores
        extra = dict(softmaxed[i]) if softmaxed else {}
        if args.json:
            rows = [{"label": label, "score": score, **({"softmax": extra[label]} if extra else {})}
                    for label, score in scores]
            print(json.dumps({"image": image, "scores": rows}))
        else:
            print(image)
            for label, score in scores:
                print(f"  {score:.4f}  " + (f"(softmax {extra[label]:.4f})  " if extra else "") + label)


def embed_inputs(paths):
    """Image files from files and folders (folders walked recursively, sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return [str(f) for f in files]


def progress(done, total, started):
    rate = done / max(time.time() - started, 1e-9)
    eta = (total - done) / rate if rate else float("inf")
    print(f"\rembedded {done}/{total}  {rate:.1f} items/s  ETA {eta:.0f}s", end="", file=sys.stderr, flush=True)


def run_embed(args):
    if bool(args.inputs) == bool(args.texts):
        raise InputError("give images or folders to embed, or --texts FILE, not both")
    items = read_lines(args.texts, "--texts") if args.texts else embed_inputs(args.inputs)
    if not items:
        raise InputError("nothing to embed: no texts in the file, or no images in the folders")
    model, tokenizer, processor = load_model(args)
    rows, kept, skipped, started = [], [], [], time.time()
    for chunk in sm.batches(items, args.batch_size):
        if args.texts:
            rows.append(sm.embed_texts(model, tokenizer, chunk).float().cpu().numpy())
            kept += chunk
        else:
            pixels, readable = read_images(processor, chunk, skipped)
            if readable:
                rows.append(sm.embed_pixels(model, pixels).float().cpu().numpy())
                kept += readable
        progress(len(kept) + len(skipped), len(items), started)
    print(file=sys.stderr)
    out = Path(args.out)
    np.save(out, np.concatenate(rows) if rows else np.zeros((0, model.config.vision_config.hidden_size), np.float32))
    out.with_suffix(".txt").write_text("".join(k.replace("\n", " ") + "\n" for k in kept), encoding="utf-8")
    print(f"wrote {len(kept)} rows to {out} and {out.with_suffix('.txt')}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} unreadable files:\n  " + "\n  ".join(skipped), file=sys.stderr)


def read_images(processor, paths, skipped):
    """pixel_values of the readable paths, and those paths; each unreadable one is reported and added to skipped."""
    pixels, readable = [], []
    for path in paths:
        try:
            pixels.append(processor(path))  # (1, 3, H, W)
            readable.append(path)
        except (OSError, InputError) as e:
            print(f"\nskipping {path}: {e}", file=sys.stderr)
            skipped.append(path)
    return (np.concatenate(pixels) if pixels else None), readable


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run_classify(args) if args.command == "classify" else run_embed(args)
    except (InputError, OSError) as e:  # the user's input; a bug in the code keeps its traceback
        print(f"cli.py {args.command}: error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
