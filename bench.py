"""Speed and memory of siglip-min against transformers on the same weights and inputs.

    python bench.py                                  # random base-shape checkpoint, CPU, float32, sdpa and eager
    python bench.py --shape so400m --batch-sizes 1 8
    python bench.py --shape naflex                   # SigLIP 2 NaFlex (base, 256 patches) against Siglip2Model
    python bench.py --model google/siglip-base-patch16-224 --device cuda --dtypes bfloat16 float16 [--compile]
    python bench.py --quantized --batch-sizes 32      # int8 / int4 / int8 activations against transformers, CPU

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
    transformers.utils.logging.disable_progress_bar()
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


# ----------------------------------------------------------------------------------------------------------------
# --quantized: siglip-min's quantized paths against transformers in float32, bfloat16 and with bitsandbytes' 4-bit
# weights (as the transformers SigLIP page shows), on the CPU.

QUANTIZED_PATHS = {  # name: (implementation, dtype, siglip_min.quantize arguments, or "bitsandbytes"; kernel)
    "transformers float32": ("transformers", "float32", None, "sgemm"),
    "transformers bfloat16": ("transformers", "bfloat16", None, "bf16 gemm"),
    "transformers bnb 4-bit": ("transformers", "float32", "bitsandbytes", "bnb nf4, dequantize + sgemm"),
    "siglip-min float32": ("siglip-min", "float32", None, "sgemm"),
    "siglip-min int8": ("siglip-min", "float32", dict(bits=8), "dequantize + sgemm"),
    "siglip-min int4 g64": ("siglip-min", "float32", dict(bits=4, group_size=64), "dequantize + sgemm"),
    "siglip-min int8 dynamic": ("siglip-min", "float32", dict(bits=8, dynamic_activations=True),
                                "fbgemm u8 x s8, 7-bit activations"),
}
TRANSFORMERS_PATHS = ("transformers float32", "transformers bfloat16")  # the fastest of these is the yardstick
SLOW_CALL_S = 20.0  # a path whose first call takes longer is timed by that call alone


def bitsandbytes_missing():
    """Why the bitsandbytes row cannot run here, or "" when it can."""
    import importlib.util

    missing = [name for name in ("bitsandbytes", "accelerate") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed (pip install -r requirements-bench.txt)" if missing else ""


def load_path(name, folders):
    """The model of one QUANTIZED_PATHS entry, from the float32 folder or the quantized one save_pretrained wrote."""
    impl, dtype, how, _ = QUANTIZED_PATHS[name]
    if impl == "transformers":
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        options = {"dtype": sm.DTYPES[dtype], "attn_implementation": "sdpa"}
        if how == "bitsandbytes":
            options.update(device_map="cpu", quantization_config=transformers.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32))
        return transformers.SiglipModel.from_pretrained(folders["float32"], **options).eval()
    if how is None:
        return sm.SiglipModel.from_pretrained(folders["float32"])
    model = sm.from_pretrained(folders[f"int{how['bits']}"])
    return sm.quantize(model, **how) if how.get("dynamic_activations") else model  # int8 codes as saved


def quantized_child(args):
    """In a fresh process: load one path, embed one batch of images and texts, print load seconds and peak RSS."""
    folders = json.loads(args.folders)
    if QUANTIZED_PATHS[args.path][0] == "transformers":
        import transformers  # noqa: F401  (import time is not load time)
    start = time.perf_counter()
    model = load_path(args.path, folders)
    load_s = time.perf_counter() - start
    image_features, text_features = feature_functions(QUANTIZED_PATHS[args.path][0], model)
    pixels, ids = make_inputs(sm.SiglipConfig.from_pretrained(folders["float32"]), args.batch_sizes[-1], "cpu",
                              sm.DTYPES[QUANTIZED_PATHS[args.path][1]])
    with torch.no_grad():
        image_features(pixels), text_features(ids)
    print(json.dumps({"load_s": load_s, "peak_rss_mb": peak_rss_mb()}))


def path_load(name, folders, batch, repeats):
    """Median load seconds and peak RSS (MB) of one path over `repeats` fresh processes."""
    runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", "--path", name, "--folders",
                                       json.dumps(folders), "--batch-sizes", str(batch), "--threads",
                                       str(torch.get_num_threads())], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(repeats)]
    return statistics.median(r["load_s"] for r in runs), statistics.median(r["peak_rss_mb"] for r in runs)


def interleaved_speeds(models, config, batch, repeats, warmup):
    """{path: (images/s, texts/s)}, medians over `repeats` rounds in which every path runs once, in an order that
    rotates each round (a machine that speeds up or slows down over the minutes shifts no path against another).
    A path whose first call takes over SLOW_CALL_S is timed by that call alone."""
    calls = {}
    for name, model in models.items():
        impl, dtype = QUANTIZED_PATHS[name][:2]
        pixels, ids = make_inputs(config, batch, "cpu", sm.DTYPES[dtype])
        image_features, text_features = feature_functions(impl, model)
        calls[(name, 0)], calls[(name, 1)] = (image_features, pixels), (text_features, ids)
    times = {key: [] for key in calls}
    for key, (fn, x) in calls.items():
        first = seconds(fn, x, "cpu")
        if first > SLOW_CALL_S:  # bfloat16 without native support crawls
            times[key].append(first)
        for _ in range(warmup - 1):
            seconds(fn, x, "cpu")
    keys = [key for key in calls if not times[key]]
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[key].append(seconds(*calls[key], "cpu"))
    return {name: tuple(batch / statistics.median(times[(name, i)]) for i in (0, 1)) for name in models}


def matmul_peak_gflops(n=2048, repeats=3):
    """This machine's float32 matrix-multiply rate now: the best of `repeats` n x n x n torch.mm calls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(seconds(lambda x: x @ b, a, "cpu") for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def image_tower_gflop(v):
    """Multiply-adds x 2 of one image through the vision tower: patch embedding, blocks (projections, attention
    scores and values, MLP), MAP head (keys and values over N tokens, the one query's MLP)."""
    N, D, I = (v.image_size // v.patch_size) ** 2, v.hidden_size, v.intermediate_size
    patch = N * v.num_channels * v.patch_size ** 2 * D
    block = N * (4 * D * D + 2 * D * I) + 2 * N * N * D
    head = 2 * N * D * D + 2 * D * D + 2 * N * D + 2 * D * I
    return 2 * (patch + v.num_hidden_layers * block + head) / 1e9


def cpu_features():
    """'AVX2; avx2 fma, no avx512_bf16, no VNNI, no AMX': what the int8 and bfloat16 kernels can use here."""
    flags = set()
    if Path("/proc/cpuinfo").exists():
        flags = set(next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("flags")), []))
    wanted = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512_bf16": "avx512_bf16",
              "VNNI": {"avx512_vnni", "avx_vnni"}, "AMX": {"amx_tile", "amx_int8", "amx_bf16"}}
    said = [name if (flags & ({f} if isinstance(f, str) else f)) else f"no {name}" for name, f in wanted.items()]
    return f"{torch.backends.cpu.get_cpu_capability()}; {', '.join(said)}"


def run_quantized(args, folder):
    config = sm.SiglipConfig.from_pretrained(folder)
    batch = args.batch_sizes[-1]
    print(machine())
    print(f"checkpoint: {args.model or 'random ' + args.shape + ' shape'}; CPU features: {cpu_features()}")
    with tempfile.TemporaryDirectory() as scratch:
        folders = {"float32": str(folder)}
        for bits in (8, 4):
            folders[f"int{bits}"] = str(Path(scratch) / f"int{bits}")
            sm.quantize(sm.from_pretrained(folder), bits=bits).save_pretrained(folders[f"int{bits}"])
        peak = matmul_peak_gflops()
        print(f"float32 matmul peak now: {peak:.0f} GFLOP/s; image tower: {image_tower_gflop(config.vision_config):.2f} "
              f"GFLOP per image; batch {batch}, sdpa")
        print(f"{'path':<24} {'images/s':>9} {'texts/s':>9} {'vs best hf':>11} {'load s':>7} {'RSS MB':>7} "
              f"{'file MB':>8} {'peak':>5}  kernel")
        missing = bitsandbytes_missing()
        names = [name for name, (_, _, how, _) in QUANTIZED_PATHS.items() if not (how == "bitsandbytes" and missing)]
        measured = interleaved_speeds({name: load_path(name, folders) for name in names}, config, batch,
                                      args.repeats, args.warmup)
        best = [max(measured[p][i] for p in TRANSFORMERS_PATHS) for i in (0, 1)]
        for name, (impl, dtype, how, kernel) in QUANTIZED_PATHS.items():
            if name not in measured:
                print(f"{name:<24} not run: {missing}")
                continue
            load_s, rss = path_load(name, folders, batch, args.load_repeats) if args.load_repeats else ("-", "-")
            file = folders[f"int{how['bits']}"] if isinstance(how, dict) else folders["float32"]
            size = (Path(file) / "model.safetensors").stat().st_size / 2**20
            fraction = f"{measured[name][0] * image_tower_gflop(config.vision_config) / peak:.2f}" \
                if dtype == "float32" and how is None else "-"
            ratios = "/".join(f"{m / b:.2f}" for m, b in zip(measured[name], best))
            load_s, rss = (load_s, rss) if load_s == "-" else (f"{load_s:.2f}", f"{rss:.0f}")
            print(f"{name:<24} {measured[name][0]:>9.2f} {measured[name][1]:>9.2f} {ratios:>11} {load_s:>7} "
                  f"{rss:>7} {size:>8.1f} {fraction:>5}  {kernel}")
    print("vs best hf: images/texts per second over the faster of transformers float32 and bfloat16; peak: the image "
          "tower's share of the float32 matmul peak; file: what the path loads")


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
    p.add_argument("--quantized", action="store_true", help="the quantized paths' table (CPU, float32 weights in, "
                                                            "last --batch-sizes entry, sdpa)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--path", choices=QUANTIZED_PATHS, help=argparse.SUPPRESS)
    p.add_argument("--folders", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sm.check_device(args.device)
        if args.child:
            return quantized_child(args) if args.path else load_child(args)
        benchmark = run_quantized if args.quantized else run
        if args.model:
            return benchmark(args, args.model)
        with tempfile.TemporaryDirectory() as folder:
            benchmark(args, make_checkpoint(args.shape, folder))
    except (InputError, OSError) as e:  # a bad --model or --device: one line; a bug keeps its traceback
        print("bench.py: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
