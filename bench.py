"""Speed and memory of siglip-min against transformers on the same weights and inputs.

    python bench.py                                  # random base-shape checkpoint, CPU, float32, sdpa and eager
    python bench.py --shape so400m --batch-sizes 1 8
    python bench.py --shape naflex                   # SigLIP 2 NaFlex (base, 256 patches) against Siglip2Model
    python bench.py --model google/siglip-base-patch16-224 --device cuda --dtypes bfloat16 float16 [--compile]

Throughput is measured in this process: both models see the same inputs, after warm-up, for several repeats,
alternating which goes first; each ratio is siglip-min / transformers (above 1: we are faster), given as the
median and the min..max over the repeats. Load time and peak memory are measured in fresh subprocesses that
import their library, load the checkpoint and embed one batch (images and texts), again alternating.
"""
import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import siglip_min as sm
from hub import InputError
from parity import seeded_inputs

SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
SHAPES = {  # transformers SiglipConfig arguments
    "tiny": dict(text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  vocab_size=1000, max_position_embeddings=16),
                 vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=32, patch_size=8)),
    "base": dict(),  # google/siglip-base-patch16-224
    "so400m": dict(text_config=dict(SO400M), vision_config=dict(SO400M, image_size=384, patch_size=14)),
    # transformers Siglip2Config arguments: NaFlex, images as patches at their own aspect ratio, padded
    "naflex": dict(),  # google/siglip2-base-patch16-naflex: base widths, 256 patches of 16 x 16
    "naflex-tiny": dict(text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, vocab_size=1000, max_position_embeddings=16),
                        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, patch_size=8, num_patches=16)),
}


def make_checkpoint(shape, folder):
    """A random transformers SiglipModel (Siglip2Model for the NaFlex shapes) of a named shape, saved."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if shape.startswith("naflex"):
        transformers.Siglip2Model(transformers.Siglip2Config(**SHAPES[shape])).save_pretrained(folder)
    else:
        transformers.SiglipModel(transformers.SiglipConfig(**SHAPES[shape])).save_pretrained(folder)
    return folder


def load(impl, folder, attn, dtype, device):
    """siglip-min's or transformers' model, on device in dtype."""
    if impl == "siglip-min":
        return sm.SiglipModel.from_pretrained(folder, device=device, dtype=dtype, attn_implementation=attn)
    import transformers

    transformers.logging.set_verbosity_error()
    naflex = sm.SiglipConfig.from_pretrained(folder).vision_config.num_patches is not None
    hf_class = transformers.Siglip2Model if naflex else transformers.SiglipModel
    return hf_class.from_pretrained(folder, dtype=dtype, attn_implementation=attn).to(device).eval()


def feature_functions(impl, model):
    """(image_features(images), text_features(ids)) returning (B, D) tensors for either implementation; images is
    (pixel_values,), or NaFlex's (pixel_values, pixel_attention_mask, spatial_shapes)."""
    if impl == "siglip-min":
        return lambda images: model.get_image_features(*images), model.get_text_features
    names = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
    return (lambda images: model.get_image_features(**dict(zip(names, images))).pooler_output,
            lambda ids: model.get_text_features(input_ids=ids).pooler_output)


def make_inputs(config, batch, device, dtype):
    """parity.seeded_inputs as tensors: images (pixels (B, 3, H, W) in dtype,) or NaFlex's three arrays, on device;
    ids (B, L) on device."""
    pixels, ids = seeded_inputs(config.vision_config, config.text_config, batch, seed=batch)
    arrays = tuple(pixels) if isinstance(pixels, tuple) else (pixels,)
    images = tuple(torch.from_numpy(a).to(device, dtype if a.dtype == np.float32 else None) for a in arrays)
    return images, torch.from_numpy(ids).to(device)


def seconds(fn, x, device):
    """Wall time of one no-grad call, synchronised on CUDA."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        fn(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare_speed(ours, theirs, x, batch, device, repeats, warmup):
    """Items/s of both (medians) and the per-repeat throughput ratios ours/theirs, alternating who goes first."""
    for _ in range(warmup):
        seconds(ours, x, device), seconds(theirs, x, device)
    times = {"ours": [], "theirs": []}
    for r in range(repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            times[name].append(seconds(fn, x, device))
    ratios = [t / o for o, t in zip(times["ours"], times["theirs"])]  # time ratio theirs/ours = throughput ours/theirs
    return batch / statistics.median(times["ours"]), batch / statistics.median(times["theirs"]), ratios


def load_child(args):
    """In a fresh process: load, embed one batch, print load seconds and peak memory as JSON."""
    dtype = sm.DTYPES[args.dtypes[0]]
    if args.impl == "transformers":
        import transformers  # noqa: F401  (import time is not load time)
    start = time.perf_counter()
    model = load(args.impl, args.model, args.attn[0], dtype, args.device)
    load_s = time.perf_counter() - start
    image_features, text_features = feature_functions(args.impl, model)
    config = sm.SiglipConfig.from_pretrained(args.model)
    pixels, ids = make_inputs(config, args.batch_sizes[-1], args.device, dtype)
    with torch.no_grad():
        image_features(pixels), text_features(ids)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else 0.0
    print(json.dumps({"load_s": load_s, "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": peak_gpu}))


def peak_rss_mb():
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: that one survives exec, so a child
    would report its parent's peak when that was higher."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS: bytes


def compare_load(folder, attn, dtype, device, batch, repeats):
    """Median load time and peak memory of each implementation, each run in its own subprocess."""
    runs = {"siglip-min": [], "transformers": []}
    for r in range(repeats):
        for impl in (["siglip-min", "transformers"] if r % 2 == 0 else ["transformers", "siglip-min"]):
            out = subprocess.run([sys.executable, __file__, "--child", "--impl", impl, "--model", str(folder),
                                  "--attn", attn, "--dtypes", dtype, "--device", device, "--batch-sizes", str(batch),
                                  "--threads", str(torch.get_num_threads())],
                                 capture_output=True, text=True, check=True).stdout
            runs[impl].append(json.loads(out.strip().splitlines()[-1]))
    return {impl: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for impl, rs in runs.items()}, runs


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    import transformers

    return (f"machine: {cpu}; torch threads {torch.get_num_threads()}; torch {torch.__version__}; "
            f"transformers {transformers.__version__}; GPU {gpu}")


def row(what, attn, dtype, batch, ours, theirs, ratios):
    spread = f"{min(ratios):.2f}..{max(ratios):.2f}"
    print(f"{what:<20} {attn:<6} {dtype:<9} {batch or '-':>5} {ours:>12.2f} {theirs:>13.2f} "
          f"{statistics.median(ratios):>7.2f}x  {spread}")


def run(args, folder):
    config = sm.SiglipConfig.from_pretrained(folder)
    print(machine())
    print(f"checkpoint: {args.model or 'random ' + args.shape + ' shape'}; device {args.device}"
          + ("; torch.compile" if args.compile else ""))
    print(f"{'what':<20} {'attn':<6} {'dtype':<9} {'batch':>5} {'siglip-min':>12} {'transformers':>13} {'ratio':>8}  spread")
    for dtype in args.dtypes:
        for attn in args.attn:
            models = {impl: load(impl, folder, attn, sm.DTYPES[dtype], args.device) for impl in ("siglip-min", "transformers")}
            functions = {impl: feature_functions(impl, m) for impl, m in models.items()}
            if args.compile:
                functions = {impl: tuple(map(torch.compile, fs)) for impl, fs in functions.items()}
            for batch in args.batch_sizes:
                pixels, ids = make_inputs(config, batch, args.device, sm.DTYPES[dtype])
                image_row = "NaFlex image feats/s" if config.vision_config.num_patches else "image features/s"
                for what, index, x in ((image_row, 0, pixels), ("text features/s", 1, ids)):
                    speeds = compare_speed(functions["siglip-min"][index], functions["transformers"][index], x, batch,
                                           args.device, args.repeats, args.warmup)
                    row(what, attn, dtype, batch, *speeds)
            del models, functions
            if args.load_repeats:
                medians, runs = compare_load(folder, attn, dtype, args.device, args.batch_sizes[-1], args.load_repeats)
                ours, theirs = medians["siglip-min"], medians["transformers"]
                row("load time (s)", attn, dtype, None, ours["load_s"], theirs["load_s"],
                    [o["load_s"] / t["load_s"] for o, t in zip(runs["siglip-min"], runs["transformers"])])
                key = "peak_gpu_mb" if args.device.startswith("cuda") else "peak_rss_mb"
                row(f"peak {'GPU' if key == 'peak_gpu_mb' else 'RSS'} (MB)", attn, dtype, args.batch_sizes[-1],
                    ours[key], theirs[key], [o[key] / t[key] for o, t in zip(runs["siglip-min"], runs["transformers"])])
    print("ratio: siglip-min / transformers (throughput: above 1 is faster; load time and memory: below 1 is better)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint folder or cached Hub id, SigLIP or SigLIP 2 NaFlex (default: a random "
                                   "checkpoint of --shape)")
    p.add_argument("--shape", default="base", choices=SHAPES)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=sm.DTYPES)
    p.add_argument("--attn", nargs="+", default=["sdpa", "eager"], choices=sm.ATTN_IMPLEMENTATIONS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--load-repeats", type=int, default=3, help="subprocess runs per implementation (0: skip)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile both feature functions")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sm.check_device(args.device)
        if args.child:
            return load_child(args)
        if args.model:
            return run(args, args.model)
        with tempfile.TemporaryDirectory() as folder:
            run(args, make_checkpoint(args.shape, folder))
    except (InputError, OSError) as e:  # a bad --model or --device: one line; a bug keeps its traceback
        print("bench.py: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
