"""The command line of siglip-min: zero-shot classification, embeddings and conversion, any SigLIP checkpoint.

    python cli.py classify cat.jpg --labels cat dog "a red star"      # the shipped model by default
    python cli.py embed photos/ --out embeds.npy
    python cli.py convert webli_en_b16_224_63724782.npz siglip-b16 --tokenizer google/siglip-base-patch16-224
    python cli.py --help

`python cli.py classify ...` hands over to this file. Input errors (a missing file, a bad checkpoint, an
unreadable image) are printed as one line and exit 2; anything else is a bug and keeps its traceback.
"""
import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import siglip_min as sm
from hub import InputError
from preprocess import Siglip2ImageProcessor, processor_for_checkpoint
from tokenizer import SiglipTokenizer

DEFAULT_MODEL = Path(__file__).resolve().parent / "checkpoints" / "siglip-tiny-shapes"
MAX_TEXT_FILE_BYTES = 64 * 2**20  # --labels-file and --texts: a text file, not /dev/zero
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
  python cli.py embed photos/ --out embeds.npy          # also writes embeds.txt: each row's path, as JSON
  python cli.py embed --texts captions.txt --out text_embeds.npy
  python cli.py classify img.png --labels cat dog --model webli_en_b16_224_63724782.npz --tokenizer FOLDER
  python cli.py convert hf-hub:timm/ViT-B-16-SigLIP siglip-b16-hf   # any kind -> a transformers folder
"""
MODEL_HELP = ("a transformers folder, a Hub id in the local Hugging Face cache, a big_vision .npz file or an "
              "open_clip folder (default: the shipped checkpoints/siglip-tiny-shapes)")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    common.add_argument("--tokenizer", help="a folder with the tokenizer files, when the model's has none "
                                            "(a big_vision .npz holds none)")
    common.add_argument("--image-size", type=int, help="a big_vision .npz's image size, when its shapes cannot tell "
                                                       "(so400m/14 at 384: its 27 x 27 patches cover 378 px)")
    common.add_argument("--max-num-patches", type=int, help="NaFlex (SigLIP 2): the patches an image may take at "
                                                            "its own aspect ratio (default: the checkpoint's)")
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
    embed.add_argument("--texts", help="embed these captions instead, one a line (row i is line i, blank ones too)")
    embed.add_argument("--out", required=True, help="embeds.npy; embeds.txt beside it gets each row's path (or text) "
                                                    "as one JSON string a line")
    convert = commands.add_parser("convert", help="write any checkpoint as a transformers folder (config.json, "
                                                  "model.safetensors, tokenizer and preprocessor files)")
    convert.add_argument("source", help=MODEL_HELP.split(" (default")[0])
    convert.add_argument("out", help="the folder to write; must be new or empty unless --overwrite")
    convert.add_argument("--tokenizer", help="a folder with the tokenizer files to copy, when the source has none")
    convert.add_argument("--image-size", type=int, help="a big_vision .npz's image size, when its shapes cannot tell")
    convert.add_argument("--dtype", default="float32", choices=sm.DTYPES, help="the dtype to save in")
    convert.add_argument("--overwrite", action="store_true", help="write into a folder that holds files")
    return parser


def load_model(args, needs):
    """Model, tokenizer and image processor for --model/--device/--dtype/--attn; the folder is looked up once.

    needs: "images", "texts" or both; a checkpoint without that tower is refused, naming what it holds.
    """
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        sm.check_device(args.device)
    except InputError as e:
        raise InputError(f"--device: {e}") from None
    location = sm.checkpoint_location(args.model)
    model = sm.from_pretrained(location, device=args.device, dtype=sm.DTYPES[args.dtype],
                               attn_implementation=args.attn, image_size=args.image_size)
    lacking = [what for what in needs if not can_embed(model, what)]
    if lacking:
        raise InputError(f"--model {args.model}: a {type(model).__name__}, which cannot embed {' or '.join(lacking)}"
                         + (" (it has no MAP head)" if "images" in lacking and hasattr(model, "vision") else ""))
    tokenizer = read_tokenizer(args.tokenizer, location) if "texts" in needs else None
    processor = image_processor(location, model, args.max_num_patches) if "images" in needs else None
    return model, tokenizer, processor


def can_embed(model, what):
    """Whether the model has the tower, with its pooling, that embeds images or texts."""
    if what == "texts":
        return hasattr(model, "text")
    return hasattr(model, "vision") and model.vision.head is not None and not isinstance(model, sm.SiglipClassifier)


def read_tokenizer(tokenizer_folder, location):
    """--tokenizer's folder, else the checkpoint's own; a .npz holds none."""
    if tokenizer_folder is None and location.suffix == ".npz":
        raise InputError(f"{location}: a big_vision .npz holds no tokenizer; give --tokenizer FOLDER (one with the "
                         f"checkpoint's spiece.model)")
    return SiglipTokenizer.from_pretrained(tokenizer_folder or location)


def image_processor(location, model, max_num_patches=None):
    """The folder's preprocessor_config.json; else SigLIP's preprocessing for the model (as transformers does without
    the file, and what .npz files and open_clip's SigLIP configs use: bicubic, mean and std 0.5; NaFlex: patches up
    to num_patches). max_num_patches (--max-num-patches) overrides a NaFlex processor's."""
    config = sm.tower_configs(model)[0]
    processor = processor_for_checkpoint(location, config.image_size, config.patch_size, config.num_patches)
    if max_num_patches is None:
        return processor
    if not isinstance(processor, Siglip2ImageProcessor):
        raise InputError(f"--max-num-patches is for NaFlex models (model_type siglip2); --model {location} takes "
                         f"whole images")
    return functools.partial(processor, max_num_patches=max_num_patches)


def read_lines(path, option):
    """The lines of a UTF-8 text file (a byte-order mark dropped, each line stripped), one entry per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: " + ("not a regular file" if path.exists() else "no such file"))
    if path.stat().st_size > MAX_TEXT_FILE_BYTES:
        raise InputError(f"{option} {path}: {path.stat().st_size} bytes, over the {MAX_TEXT_FILE_BYTES} this reads")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as e:
        raise InputError(f"{option} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_labels(args):
    """--labels, then the non-blank lines of --labels-file; a blank --labels entry is refused by prompt_embeds."""
    labels = args.labels + ([line for line in read_lines(args.labels_file, "--labels-file") if line]
                            if args.labels_file else [])
    if not labels:
        raise InputError("no labels: give --labels LABEL ... or --labels-file FILE")
    return labels


def warn_if_truncated(tokenizer, texts, what):
    """One warning naming the texts longer than the model reads (their end is cut off, as transformers cuts it)."""
    long = [text for text in dict.fromkeys(texts) if len(tokenizer.encode(text)) > tokenizer.model_max_length]
    if long:
        shown = ", ".join(repr(text) for text in long[:3]) + (f" and {len(long) - 3} more" if len(long) > 3 else "")
        print(f"warning: {len(long)} {what} longer than the model's {tokenizer.model_max_length} tokens are cut off: "
              f"{shown}", file=sys.stderr)


def check_image_paths(paths, folders_allowed):
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir() and not folders_allowed:
            raise InputError(f"{path}: a folder, not an image file")


def run_classify(args):
    labels = read_labels(args)
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    template = args.template
    if template is not None:
        sm.check_template(template)
    check_image_paths(args.images, folders_allowed=False)
    model, tokenizer, processor = load_model(args, ("images", "texts"))
    template = template or model.config.prompt_template or sm.DEFAULT_TEMPLATE
    text_embeds = sm.prompt_embeds(model, tokenizer, labels, template, args.batch_size, args.mask_padding)  # (C, D)
    warn_if_truncated(tokenizer, [template.format(label) for label in labels], "prompts")
    skipped = []
    for chunk in sm.batches(args.images, args.batch_size):
        pixels, readable = read_images(processor, chunk, skipped)
        if readable:
            with torch.no_grad():
                logits = model.logits_per_text(sm.embed_pixels(model, *pixels), text_embeds).T.float()  # (b, C)
            print_scores(args, readable, labels, logits)
    report_skipped(skipped, len(args.images))


def print_scores(args, images, labels, logits):
    """Each image's labels, best first, as text or one JSON object a line; NaN or infinite scores are refused."""
    if not torch.isfinite(logits).all():
        raise InputError(f"the model gave NaN or infinite scores for {images[0]} (--dtype {args.dtype})"
                         + (": try --dtype float32" if args.dtype != "float32" else ""))
    softmaxed = sm.ranked_labels(labels, logits.softmax(dim=-1)) if args.softmax else None
    for i, (image, scores) in enumerate(zip(images, sm.ranked_labels(labels, logits.sigmoid()))):
        scores = scores[: args.top_k] if args.top_k else scores
        extra = dict(softmaxed[i]) if softmaxed else {}
        if args.json:
            rows = [{"label": label, "score": score, **({"softmax": extra[label]} if extra else {})}
                    for label, score in scores]
            print(json.dumps({"image": image, "scores": rows}, allow_nan=False))
        else:
            print(image)
            for label, score in scores:
                print(f"  {score:.4f}  " + (f"(softmax {extra[label]:.4f})  " if extra else "") + label)


def embed_inputs(paths):
    """Image files from files and folders (folders walked recursively, sorted)."""
    check_image_paths(paths, folders_allowed=True)
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return [str(f) for f in files]


def output_paths(out, inputs):
    """(rows.npy, sidecar.txt) for --out, checked before any work: never an input, and the folder writable.

    np.save adds .npy to a name without it; the paths say where the rows really go.
    """
    rows = Path(out) if Path(out).suffix == ".npy" else Path(str(out) + ".npy")
    sidecar = rows.with_suffix(".txt")
    for path in (rows, sidecar):
        if path.is_dir():
            raise InputError(f"--out {out}: {path} is a folder")
        if any(path.exists() and path.samefile(given) for given in inputs if Path(given).exists()):
            raise InputError(f"--out {out}: would write over the input {path}")
    folder = rows.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputError(f"--out {out}: cannot write into {folder}" + ("" if folder.is_dir() else " (no such folder)"))
    return rows, sidecar


def progress(done, total, started):
    """One self-overwriting line on a terminal; nothing when stderr is a file or a pipe."""
    if not sys.stderr.isatty():
        return
    rate = done / max(time.time() - started, 1e-9)
    eta = (total - done) / rate if rate else float("inf")
    print(f"\rembedded {done}/{total}  {rate:.1f} items/s  ETA {eta:.0f}s", end="", file=sys.stderr, flush=True)


def run_embed(args):
    if bool(args.inputs) == bool(args.texts):
        raise InputError("give images or folders to embed, or --texts FILE, not both")
    items = read_lines(args.texts, "--texts") if args.texts else embed_inputs(args.inputs)
    if not items:
        raise InputError("nothing to embed: no lines in the file, or no images in the folders")
    rows_path, sidecar = output_paths(args.out, [args.texts] if args.texts else items)
    model, tokenizer, processor = load_model(args, ("texts",) if args.texts else ("images",))
    if args.texts:
        warn_if_truncated(tokenizer, items, "texts")
    rows, kept, skipped, started = [], [], [], time.time()
    for chunk in sm.batches(items, args.batch_size):
        if args.texts:
            rows.append(sm.embed_texts(model, tokenizer, chunk).float().cpu().numpy())
            kept += chunk
        else:
            pixels, readable = read_images(processor, chunk, skipped)
            if readable:
                rows.append(sm.embed_pixels(model, *pixels).float().cpu().numpy())
                kept += readable
        progress(len(kept) + len(skipped), len(items), started)
    if sys.stderr.isatty():
        print(file=sys.stderr)  # end the progress line
    report_skipped(skipped, len(items))
    write_both(rows_path, np.concatenate(rows), sidecar, kept)
    print(f"wrote {len(kept)} rows to {rows_path}, and what each row is to {sidecar}", file=sys.stderr)


def run_convert(args):
    """The source checkpoint, any kind, written as a transformers folder with its tokenizer and preprocessor files."""
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise InputError(f"{out}: " + ("holds files; give --overwrite to write into it" if out.is_dir()
                                       else "a file, not a folder"))
    location = sm.checkpoint_location(args.source)
    model = sm.from_pretrained(location, dtype=sm.DTYPES[args.dtype], image_size=args.image_size)
    tokenizer = tokenizer_to_copy(args.tokenizer, location) if hasattr(model, "text") else None
    processor = image_processor(location, model) if hasattr(model, "vision") else None
    model.save_pretrained(out)
    for part in (tokenizer, processor):
        if part is not None:
            part.save_pretrained(out)
    print(f"wrote a {type(model).__name__} to {out}" + (", with its tokenizer" if tokenizer else ""), file=sys.stderr)


def tokenizer_to_copy(tokenizer_folder, location):
    """The tokenizer convert writes beside the weights, or None, said on stderr, when there is none to read."""
    try:
        return read_tokenizer(tokenizer_folder, location)
    except (InputError, FileNotFoundError) as e:
        print(f"cli.py convert: note: no tokenizer written ({' '.join(str(e).split())})", file=sys.stderr)
        return None


def write_both(rows_path, rows, sidecar, items):
    """The rows (.npy) and the sidecar, one JSON string a line, ASCII (so any path or text, line breaks of every kind
    included, reads back with json.loads per line): both or neither, each written to a temporary file first and
    renamed into place."""
    temporary = [rows_path.with_name(rows_path.name + ".partial"), sidecar.with_name(sidecar.name + ".partial")]
    try:
        with open(temporary[0], "wb") as f:
            np.save(f, rows)
        temporary[1].write_text("".join(json.dumps(item) + "\n" for item in items),
                                encoding="utf-8")
        os.replace(temporary[1], sidecar)
        os.replace(temporary[0], rows_path)
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)


def read_images(processor, paths, skipped):
    """The image arrays of the readable paths (pixel_values, or NaFlex's three arrays), and those paths; why each
    other one cannot be read goes to skipped."""
    pixels, readable = [], []
    for path in paths:
        try:
            pixels.append(processor(path))  # (1, 3, H, W), or NaflexInputs of (1, N, 3*p*p), (1, N), (1, 2)
            readable.append(path)
        except (OSError, InputError) as e:  # the message names the file
            skipped.append(" ".join(str(e).split()))
    if not pixels:
        return None, readable
    if isinstance(pixels[0], tuple):  # NaFlex: each array joined over the images
        return tuple(np.concatenate(arrays) for arrays in zip(*pixels)), readable
    return (np.concatenate(pixels),), readable


def report_skipped(skipped, total):
    """classify and embed alike: the unreadable files and why, after the work; an error when none could be read."""
    if len(skipped) == total:
        raise InputError(f"none of the {total} images could be read: {skipped[0]}"
                         + (f" (and {total - 1} more)" if total > 1 else ""))
    if skipped:
        print(f"skipped {len(skipped)} unreadable files:\n  " + "\n  ".join(skipped), file=sys.stderr)


def main(argv=None):
    """Run one command: 0 done, 2 bad input (one line on stderr), 130 interrupted, 141 when the reader of the output
    went away (`| head`: quietly, as a Unix tool stopped by SIGPIPE); a bug keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        {"classify": run_classify, "embed": run_embed, "convert": run_convert}[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    except (InputError, OSError) as e:  # the user's input; a bug in the code keeps its traceback
        print(f"cli.py {args.command}: error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print(f"cli.py {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
