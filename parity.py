"""parity.py: layer-by-layer traces of siglip-min, golden files, and a report that finds the first wrong layer.

For people porting SigLIP to another framework: write the activations of the reference once, have the port
write its own with the same names, and the report names the first layer where the two part.

    python parity.py export   --model M (--image IMG... | --pixel-values X.npy) (--text T... | --input-ids 5,9,2,1)
                              --out golden.safetensors
    python parity.py compare  golden.safetensors port.safetensors [--atol 1e-5] [--rtol 1e-4]
    python parity.py check-hf --model M        # siglip-min against transformers, same table

Activation names (the README's "Checking your own implementation" lists them for porters), in pipeline order:

    pixel_values input_ids attention_mask                         the inputs, as fed
    vision.patch_embeds    (B, N, D)  conv output, flattened, before position embeddings
    vision.embeddings      (B, N, D)  = transformers hidden_states[0]
    vision.layers.{i}      (B, N, D)  output of encoder block i = hidden_states[i + 1]
    vision.post_layernorm  (B, N, D)  = last_hidden_state
    vision.pooled          (B, D)     MAP head output = get_image_features
    text.embeddings  text.layers.{i}  text.final_layer_norm   (B, L, D), as in the vision tower
    text.pooled            (B, D)     final_layer_norm at position L-1, before the head
    text.features          (B, P)     after the head = get_text_features
    image_embeds  text_embeds  logits_per_image  logits_per_text

Traces come from the model's one forward pass, through forward hooks: there is no second implementation here.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import siglip_min as sm
from hub import InputError, resolve_model_dir
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

INPUT_NAMES = ("pixel_values", "input_ids", "attention_mask")
VISION_STAGES = ("patch_embeds", "embeddings", "layers", "post_layernorm", "pooled")
TEXT_STAGES = ("embeddings", "layers", "final_layer_norm", "pooled", "features")
OUTPUT_NAMES = ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text")
DEFAULT_ATOL, DEFAULT_RTOL = 1e-5, 1e-4  # float32 on CPU: what siglip-min and transformers agree to
TINY = 1e-30  # keeps the relative error finite when the reference is all zeros


# ----------------------------------------------------------------------------------------------------------------
# Names and their order.

def pipeline_position(name):
    """Sort key: inputs, vision stages, text stages (layers numerically), embeds and logits, then unknown names."""
    if name in INPUT_NAMES:
        return 0, INPUT_NAMES.index(name), 0, ""
    tower, _, rest = name.partition(".")
    stages = {"vision": VISION_STAGES, "text": TEXT_STAGES}.get(tower, ())
    stage, _, layer = rest.partition(".")
    if stage in stages and (layer.isdigit() if stage == "layers" else not layer):
        return 1 + (tower == "text"), stages.index(stage), int(layer or 0), ""
    if name in OUTPUT_NAMES:
        return 3, OUTPUT_NAMES.index(name), 0, ""
    return 4, 0, 0, name


def in_pipeline_order(tensors):
    return dict(sorted(tensors.items(), key=lambda item: pipeline_position(item[0])))


def to_numpy(tensor):
    """float32 NumPy (every dtype traced, bfloat16 included), integers kept as int64."""
    tensor = tensor.detach().cpu()
    return tensor.numpy().astype(np.int64) if not tensor.is_floating_point() else tensor.float().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Tracing: forward hooks on siglip-min's modules, and the same names from transformers' hidden states.

def hook_points(model):
    """(module, name, take) for each traced activation of `model`; take(inputs, output) picks the tensor."""
    vision, text = model.vision, model.text

    def output(inputs, out):
        return out

    points = [(vision.embed.patch, "vision.patch_embeds", lambda inputs, out: out.flatten(2).transpose(1, 2)),
              (vision.embed, "vision.embeddings", output)]
    points += [(block, f"vision.layers.{i}", output) for i, block in enumerate(vision.blocks)]
    points += [(vision.norm, "vision.post_layernorm", output), (vision.head, "vision.pooled", output),
               (text.embed, "text.embeddings", output)]
    points += [(block, f"text.layers.{i}", output) for i, block in enumerate(text.blocks)]
    points += [(text.norm, "text.final_layer_norm", output),
               (text.head, "text.pooled", lambda inputs, out: inputs[0]),  # the head's input: position L-1
               (text.head, "text.features", output)]
    return points


def trace(model, pixel_values=None, input_ids=None, attention_mask=None):
    """Every activation of one real forward of a siglip_min.SigLIP, as {name: float32 np.ndarray}, in pipeline order.

    With both inputs the whole model runs (embeds and logits included); with one, only that tower.
    """
    if pixel_values is None and input_ids is None:
        raise ValueError("trace needs pixel_values, input_ids or both")
    activations = {}

    def recorder(name, take):
        def hook(module, inputs, out):
            activations[name] = to_numpy(take(inputs, out))
        return hook

    handles = [module.register_forward_hook(recorder(name, take)) for module, name, take in hook_points(model)]
    try:
        with torch.no_grad():
            if pixel_values is not None and input_ids is not None:
                out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
                activations.update({name: to_numpy(getattr(out, name)) for name in OUTPUT_NAMES})
            elif pixel_values is not None:
                model.get_image_features(pixel_values)
            else:
                model.get_text_features(input_ids, attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    return in_pipeline_order(activations)


def tower_hidden_states(tower, hidden_states):
    """transformers' hidden_states (embeddings, then each block's output) under our names."""
    return {f"{tower}.embeddings": hidden_states[0],
            **{f"{tower}.layers.{i}": h for i, h in enumerate(hidden_states[1:])}}


def trace_hf(hf_model, pixel_values, input_ids, attention_mask=None):
    """The same names from transformers.SiglipModel(..., output_hidden_states=True).

    In transformers 5.24 hidden_states[0] is the input of block 0 (the embeddings) and hidden_states[i + 1] the
    output of block i; SigLIP captures them with tie_last_hidden_states=False, so the last one is block n-1's output
    before the final LayerNorm, and last_hidden_state is after it. The patch conv is read with a forward hook.
    """
    patches = {}
    conv = hf_model.vision_model.embeddings.patch_embedding
    handle = conv.register_forward_hook(lambda module, inputs, out: patches.update(out=out))
    try:
        with torch.no_grad():
            out = hf_model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                           output_hidden_states=True)
    finally:
        handle.remove()
    vision, text = out.vision_model_output, out.text_model_output
    tensors = {"vision.patch_embeds": patches["out"].flatten(2).transpose(1, 2),
               **tower_hidden_states("vision", vision.hidden_states),
               "vision.post_layernorm": vision.last_hidden_state, "vision.pooled": vision.pooler_output,
               **tower_hidden_states("text", text.hidden_states),
               "text.final_layer_norm": text.last_hidden_state, "text.pooled": text.last_hidden_state[:, -1],
               "text.features": text.pooler_output,
               **{name: getattr(out, name) for name in OUTPUT_NAMES}}
    return in_pipeline_order({name: to_numpy(t) for name, t in tensors.items()})


# ----------------------------------------------------------------------------------------------------------------
# Golden files: inputs + activations + metadata in one safetensors file.

def write_golden(path, tensors, metadata):
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: np.ascontiguousarray(a) for name, a in tensors.items()}, str(path),
              metadata={key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()})


def read_golden(path):
    """({name: float64 or int64 np.ndarray}, metadata) of a safetensors file; InputError when it cannot be read.

    Read through torch so that a port's bfloat16 or float16 file loads too.
    """
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else repr(e)
        raise InputError(f"{path}: not a readable safetensors file ({reason})") from None
    arrays = {name: t.double().numpy() if t.is_floating_point() else t.numpy() for name, t in tensors.items()}
    return arrays, metadata


def siglip_min_version():
    """The git commit of this checkout (with -dirty for local changes), else 'unknown'."""
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                                   capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip() or "unknown"


# ----------------------------------------------------------------------------------------------------------------
# Comparing two sets of activations.

def compare_tensor(reference, candidate, atol, rtol):
    """max abs error, max relative error, cosine similarity, elements outside atol + rtol * |reference|."""
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    if reference.size == 0:
        return 0.0, 0.0, 1.0, 0
    error = np.abs(candidate - reference)
    max_abs = float(error.max())
    max_rel = max_abs / max(float(np.abs(reference).max()), TINY)
    norms = np.linalg.norm(reference) * np.linalg.norm(candidate)
    if norms:
        cosine = float(reference.ravel() @ candidate.ravel() / norms)
    else:  # a zero vector: similar only to another zero vector
        cosine = float(np.array_equal(reference, candidate))
    outside = int((~np.isclose(candidate, reference, rtol=rtol, atol=atol)).sum())
    return max_abs, max_rel, cosine, outside


def compare_row(name, a, b, atol, rtol):
    """One table row: {name, shape, max_abs, max_rel, cosine, result, why}; result 'ok' or a failure."""
    row = {"name": name, "shape": str(tuple((a if a is not None else b).shape)),
           "max_abs": "-", "max_rel": "-", "cosine": "-"}
    if a is None or b is None:
        where = "A" if b is None else "B"
        return {**row, "result": f"only in {where}", "why": f"only in {where}"}
    if a.shape != b.shape:
        return {**row, "shape": f"{tuple(a.shape)} vs {tuple(b.shape)}", "result": "SHAPE",
                "why": f"shape {tuple(a.shape)} in A, {tuple(b.shape)} in B"}
    max_abs, max_rel, cosine, outside = compare_tensor(a, b, atol, rtol)
    row.update(max_abs=f"{max_abs:.3e}", max_rel=f"{max_rel:.3e}", cosine=f"{cosine:.7f}")
    if outside:
        return {**row, "result": "FAIL", "why": f"max abs {max_abs:.3e}, {outside} of {a.size} elements "
                                                f"outside atol {atol:g} + rtol {rtol:g} * |A|"}
    return {**row, "result": "ok", "why": ""}


def compare(a, b, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL):
    """Rows for every name on either side, in pipeline order; A is the reference."""
    names = sorted(set(a) | set(b), key=pipeline_position)
    return [compare_row(name, a.get(name), b.get(name), atol, rtol) for name in names]


def format_report(rows):
    """The table, then 'first mismatch: NAME (why)' or 'all match'."""
    columns = ("name", "shape", "max_abs", "max_rel", "cosine", "result")
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() for row in rows]
    failed = [row for row in rows if row["result"] != "ok"]
    lines.append(f"first mismatch: {failed[0]['name']} ({failed[0]['why']})" if failed else "all match")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Inputs from the command line: images or a .npy of pixel values; texts or comma-separated token ids.

def parse_id_rows(rows, option):
    """'5,9,2,1' per row -> np.int64 (B, L); InputError for anything else."""
    try:
        parsed = [[int(x) for x in row.split(",")] for row in rows]
    except ValueError:
        raise InputError(f"{option}: expected comma-separated integers such as 5,9,2,1, "
                         f"got {' '.join(rows)!r}") from None
    if len({len(row) for row in parsed}) != 1:
        raise InputError(f"{option}: every row needs the same length, got {[len(row) for row in parsed]}")
    return np.array(parsed, dtype=np.int64)  # (B, L)


def load_pixel_values(path):
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        pixel_values = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a .npy array ({e})") from None
    if pixel_values.ndim != 4 or not np.issubdtype(pixel_values.dtype, np.number):
        raise InputError(f"{path}: pixel values must be a numeric array (B, C, H, W), got {pixel_values.shape} "
                         f"{pixel_values.dtype}")
    return pixel_values.astype(np.float32)  # (B, C, H, W)


def preprocess_images(images, folder):
    """pixel_values and the settings used: SiglipImageProcessor.from_pretrained's for the folder."""
    processor = SiglipImageProcessor.from_pretrained(folder)
    return processor(list(images)), {**processor.to_dict(), "images": [str(image) for image in images]}


def tokenize(texts, folder, model):
    """input_ids and the tokenizer settings; InputError pointing at --input-ids when the folder has no tokenizer."""
    if not (folder / "spiece.model").is_file():
        raise InputError(f"--text: {model} has no spiece.model (SentencePiece tokenizer); "
                         f"pass token ids with --input-ids 5,9,2,1 instead")
    tokenizer = SiglipTokenizer.from_pretrained(folder)
    settings = {"source": str(folder / "spiece.model"), "texts": list(texts),
                **{key: getattr(tokenizer, key) for key in ("model_max_length", "do_lower_case", "pad_id", "eos_id")}}
    return tokenizer(list(texts)), settings


def seeded_inputs(config, batch=2, seed=0):
    """NumPy (pixel_values, input_ids) any checkpoint of `config` accepts: uniform [-1, 1] pixels at its image size,
    random token ids at its full text length. parity.py and bench.py both take their inputs from here."""
    generator = np.random.default_rng(seed)
    v, t = config.vision_config, config.text_config
    pixel_values = generator.uniform(-1, 1, (batch, v.num_channels, v.image_size, v.image_size)).astype(np.float32)
    input_ids = generator.integers(0, t.vocab_size, (batch, t.max_position_embeddings), dtype=np.int64)
    return pixel_values, input_ids


def command_line_inputs(args, folder, config, generate_missing):
    """({input name: np.ndarray}, {'tokenizer': ..., 'preprocessing': ...}) from the input options.

    --image or --pixel-values, --text or --input-ids, --attention-mask; with generate_missing, what is not given is
    generated (seeded_inputs).
    """
    inputs, settings = {}, {"tokenizer": "none (no text input)", "preprocessing": "none (no image input)"}
    if args.image:
        inputs["pixel_values"], settings["preprocessing"] = preprocess_images(args.image, folder)
    elif args.pixel_values:
        inputs["pixel_values"] = load_pixel_values(args.pixel_values)
        settings["preprocessing"] = "none (--pixel-values)"
    if args.text:
        inputs["input_ids"], settings["tokenizer"] = tokenize(args.text, folder, args.model)
    elif args.input_ids:
        inputs["input_ids"] = parse_id_rows(args.input_ids, "--input-ids")
        settings["tokenizer"] = "none (--input-ids)"
    if args.attention_mask:
        if "input_ids" not in inputs:
            raise InputError("--attention-mask needs --input-ids or --text")
        inputs["attention_mask"] = parse_id_rows(args.attention_mask, "--attention-mask")
    if generate_missing:
        pixel_values, input_ids = seeded_inputs(config)
        for name, generated, what in (("pixel_values", pixel_values, "preprocessing"),
                                      ("input_ids", input_ids, "tokenizer")):
            if name not in inputs:
                inputs[name], settings[what] = generated, "none (generated, seed 0)"
    if not inputs:
        raise InputError("no inputs: pass --image or --pixel-values, and/or --text or --input-ids")
    if "input_ids" in inputs:
        sm.check_token_ids(inputs["input_ids"], config.text_config.vocab_size)
    return inputs, settings


def as_torch(inputs, device="cpu"):
    return {name: torch.from_numpy(array).to(device) for name, array in inputs.items()}


# ----------------------------------------------------------------------------------------------------------------
# The three commands.

def run_export(args):
    folder = resolve_model_dir(args.model)
    inputs, settings = command_line_inputs(args, folder, sm.SiglipConfig.from_pretrained(folder), generate_missing=False)
    model = sm.SiglipModel.from_pretrained(folder, device=args.device, dtype=sm.DTYPES[args.dtype],
                                      attn_implementation=args.attn)
    activations = trace(model, **as_torch(inputs, args.device))
    metadata = {"format": "siglip-min parity golden file", "model": args.model, "model_folder": str(folder),
                "config": model.config.to_hf(), "dtype": args.dtype, "attn_implementation": args.attn,
                "device": args.device, "torch": torch.__version__, "siglip_min": siglip_min_version(), **settings}
    write_golden(args.out, {**inputs, **activations}, metadata)
    print(f"wrote {args.out}: {len(inputs)} inputs, {len(activations)} activations")
    return 0


def run_compare(args):
    (a, _), (b, _) = read_golden(args.a), read_golden(args.b)
    if not a and not b:
        raise InputError(f"{args.a} and {args.b} hold no tensors: nothing to compare")
    rows = compare(a, b, args.atol, args.rtol)
    print(f"A: {args.a}\nB: {args.b}\n{format_report(rows)}")
    return 0 if all(row["result"] == "ok" for row in rows) else 1


def run_check_hf(args):
    try:
        import transformers
    except ImportError:
        raise InputError("check-hf needs transformers: pip install transformers==5.24.0 protobuf") from None
    transformers.logging.set_verbosity_error()  # its config and loading chatter would bury the table
    transformers.utils.logging.disable_progress_bar()
    folder = resolve_model_dir(args.model)
    inputs, _ = command_line_inputs(args, folder, sm.SiglipConfig.from_pretrained(folder), generate_missing=True)
    ours = sm.SiglipModel.from_pretrained(folder, attn_implementation=args.attn)
    theirs = transformers.SiglipModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    tensors = as_torch(inputs)
    reference, candidate = {**inputs, **trace_hf(theirs, **tensors)}, {**inputs, **trace(ours, **tensors)}
    rows = compare(reference, candidate, args.atol, args.rtol)
    print(f"A: transformers {transformers.__version__} (eager)\nB: siglip-min ({args.attn})\n{format_report(rows)}")
    return 0 if all(row["result"] == "ok" for row in rows) else 1


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, exit 2, like every other error here."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def add_input_options(parser):
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--image", nargs="+", metavar="IMG", help="image files, preprocessed as SigLIP does "
                        "(the folder's preprocessor_config.json, else SigLIP defaults at the model's image size)")
    images.add_argument("--pixel-values", metavar="FILE.npy", help="pixel values (B, 3, H, W) as fed to the model")
    texts = parser.add_mutually_exclusive_group()
    texts.add_argument("--text", nargs="+", metavar="T", help="texts, tokenized with the folder's spiece.model")
    texts.add_argument("--input-ids", nargs="+", metavar="5,9,2,1", help="token ids, one comma-separated row per text")
    parser.add_argument("--attention-mask", nargs="+", metavar="1,1,1,0",
                        help="optional 0/1 mask, one row per text (SigLIP itself runs without one)")
    parser.add_argument("--attn", choices=sm.ATTN_IMPLEMENTATIONS, default="sdpa", help="siglip-min's attention")


def add_tolerances(parser):
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance (default %(default)g)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance (default %(default)g)")


def build_parser():
    tolerance_rule = ("A is the reference. An element passes when |b - a| <= atol + rtol * |a| (numpy.isclose(b, a)). "
                      "Columns: max_abs = max |b - a|; max_rel = max |b - a| / max |a| (over the whole tensor, not "
                      "per element); cosine = cosine similarity of the flattened tensors.")
    parser = OneLineParser(prog="parity.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    export = commands.add_parser("export", help="write inputs and every activation of siglip-min to a safetensors file",
                                 description="Write the inputs (pixel_values, input_ids, attention_mask) and every "
                                 "traced activation (float32) of siglip-min, with metadata, to one safetensors file.")
    export.add_argument("--model", required=True, help="model folder or cached Hub id")
    add_input_options(export)
    export.add_argument("--dtype", choices=sorted(sm.DTYPES), default="float32", help="model dtype (traces are float32)")
    export.add_argument("--device", default="cpu")
    export.add_argument("--out", required=True, metavar="golden.safetensors")

    compare_cmd = commands.add_parser("compare", help="table of errors per activation, and the first mismatch",
                                      description=f"Compare two golden files name by name. {tolerance_rule} "
                                      "Exit 0 when all match, 1 otherwise, 2 for an unreadable file.")
    compare_cmd.add_argument("a", metavar="A.safetensors", help="the reference (a golden file from export)")
    compare_cmd.add_argument("b", metavar="B.safetensors", help="the file to check (your port's)")
    add_tolerances(compare_cmd)

    check = commands.add_parser("check-hf", help="trace siglip-min and transformers on the same inputs, same table",
                                description="Trace transformers (eager attention, output_hidden_states=True) and "
                                "siglip-min on the same inputs and print the compare table (A = transformers). "
                                f"Without inputs, seeded random pixels and token ids are used. {tolerance_rule}")
    check.add_argument("--model", required=True, help="model folder or cached Hub id")
    add_input_options(check)
    add_tolerances(check)
    return parser


def main(argv=None):
    """Run one command; 0 all match (or written), 1 a mismatch, 2 a usage or input error (one line on stderr)."""
    args = build_parser().parse_args(argv)
    run = {"export": run_export, "compare": run_compare, "check-hf": run_check_hf}[args.command]
    try:
        return run(args)
    except (InputError, OSError) as e:  # bad inputs, missing or broken files: one line; a bug keeps its traceback
        message = str(e).replace("\n", " ")
        print(f"parity.py {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
