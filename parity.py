"""parity.py: layer-by-layer traces of siglip-min, golden files, and a report that finds the first wrong layer.

For people porting SigLIP to another framework: write the activations of the reference once, have the port
write its own with the same names, and the report names the first layer where the two part.

    python parity.py export   --model M (--image IMG... | --pixel-values X.npy) (--text T... | --input-ids 5,9,2,1)
                              --out golden.safetensors
    python parity.py compare  golden.safetensors port.safetensors [--atol 1e-5] [--rtol 1e-4]
    python parity.py check-hf --model M        # siglip-min against transformers, same table
    python parity.py quantized --model M --bits 4   # siglip-min float32 against its quantized copy, layer by layer

Activation names (PORTING.md is the contract for porters: names, shapes, tolerances), in pipeline order:

    pixel_values input_ids attention_mask                         the inputs, as fed
    vision.patch_embeds    (B, N, D)  conv output, flattened, before position embeddings
    vision.embeddings      (B, N, D)  = transformers hidden_states[0]
    vision.layers.{i}.attention, .attention_residual, .mlp   (B, N, D)  inside block i: the heads merged before
                                      the output projection, x + attention, the MLP's output
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
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import siglip_min as sm
from hub import InputError
from preprocess import NaflexInputs, Siglip2ImageProcessor, processor_for_checkpoint
from tokenizer import SiglipTokenizer

INPUT_NAMES = ("pixel_values", "pixel_attention_mask", "spatial_shapes", "input_ids", "attention_mask")
VISION_STAGES = ("patch_embeds", "embeddings", "layers", "post_layernorm", "pooled")
TEXT_STAGES = ("embeddings", "layers", "final_layer_norm", "pooled", "features")
OUTPUT_NAMES = ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text")
BLOCK_PARTS = ("attention", "attention_residual", "mlp")  # inside block i, before its output layers.{i}
DEFAULT_ATOL, DEFAULT_RTOL = 1e-5, 1e-4  # float32 on CPU: what siglip-min and transformers agree to
TINY = 1e-30  # keeps the relative error finite when the reference is all zeros


# ----------------------------------------------------------------------------------------------------------------
# Names and their order.

def pipeline_position(name):
    """Sort key: inputs, vision stages, text stages (layers numerically, the parts of a block before its output),
    embeds and logits, then unknown names."""
    if name in INPUT_NAMES:
        return 0, INPUT_NAMES.index(name), 0, 0, ""
    tower, _, rest = name.partition(".")
    stages = {"vision": VISION_STAGES, "text": TEXT_STAGES}.get(tower, ())
    stage, _, layer = rest.partition(".")
    index, _, part = layer.partition(".")
    if stage == "layers" and index.isdigit() and part in BLOCK_PARTS + ("",):
        return 1 + (tower == "text"), stages.index(stage), int(index), (BLOCK_PARTS + ("",)).index(part), ""
    if stage in stages and not layer:
        return 1 + (tower == "text"), stages.index(stage), 0, 0, ""
    if name in OUTPUT_NAMES:
        return 3, OUTPUT_NAMES.index(name), 0, 0, ""
    return 4, 0, 0, 0, name


def tower_of(name):
    """'inputs', 'vision', 'text' or 'outputs': the part of the pipeline a name belongs to (for the summary)."""
    return ("inputs", "vision", "text", "outputs", "other")[pipeline_position(name)[0]]


def in_pipeline_order(tensors):
    return dict(sorted(tensors.items(), key=lambda item: pipeline_position(item[0])))


def to_numpy(tensor):
    """float32 NumPy (every dtype traced, bfloat16 included), integers kept as int64."""
    tensor = tensor.detach().cpu()
    return tensor.numpy().astype(np.int64) if not tensor.is_floating_point() else tensor.float().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Tracing: forward hooks on siglip-min's modules, and the same names from transformers' hidden states.

def hook_points(model):
    """(module, name, take) for each traced activation of `model`, any kind: the towers it has, and the MAP head when
    there is one; take(inputs, output) picks the tensor."""
    vision, text = getattr(model, "vision", None), getattr(model, "text", None)

    def output(inputs, out):
        return out

    def first_input(inputs, out):
        return inputs[0]

    def block_points(tower, blocks):
        """Inside block i: the heads merged before the output projection, x + attention, the MLP's output; then
        the block's output."""
        return [point for i, block in enumerate(blocks) for point in (
            (block.attn.o, f"{tower}.layers.{i}.attention", first_input),
            (block.ln2, f"{tower}.layers.{i}.attention_residual", first_input),
            (block.mlp, f"{tower}.layers.{i}.mlp", output), (block, f"{tower}.layers.{i}", output))]

    points = []
    if vision is not None:
        points += [(vision.embed.patch, "vision.patch_embeds", patch_tokens), (vision.embed, "vision.embeddings", output)]
        points += block_points("vision", vision.blocks)
        points += [(vision.norm, "vision.post_layernorm", output)]
        points += [(vision.head, "vision.pooled", output)] if vision.head is not None else []
    if text is not None:
        points += [(text.embed, "text.embeddings", output)]
        points += block_points("text", text.blocks)
        points += [(text.norm, "text.final_layer_norm", output),
                   (text.head, "text.pooled", first_input),  # the head's input: position L-1
                   (text.head, "text.features", output)]
    return points


def patch_tokens(inputs, out):
    """The patch embedding's output as tokens (B, N, D): the conv's (B, D, H/p, W/p) flattened row-major, or NaFlex's
    Linear output as it is."""
    return out.flatten(2).transpose(1, 2) if out.dim() == 4 else out


def run_once(model, pixel_values=None, input_ids=None, attention_mask=None, pixel_attention_mask=None,
             spatial_shapes=None):
    """One forward of whatever `model` is, as far as its parts go: the whole two-tower model (outputs returned) when
    both inputs are given, else each tower given an input, through its pooling where it has one."""
    naflex = {"pixel_attention_mask": pixel_attention_mask, "spatial_shapes": spatial_shapes}
    if pixel_values is not None and input_ids is not None and isinstance(model, sm.SiglipModel):
        out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, **naflex)
        return {name: getattr(out, name) for name in OUTPUT_NAMES}
    if pixel_values is not None:
        pools = model.vision.head is not None and not isinstance(model, sm.SiglipClassifier)
        model.get_image_features(pixel_values, **naflex) if pools else model(pixel_values, **naflex)
    if input_ids is not None:
        model.get_text_features(input_ids, attention_mask)
    return {}


def trace(model, pixel_values=None, input_ids=None, attention_mask=None, pixel_attention_mask=None,
          spatial_shapes=None):
    """Every activation of one real forward of a siglip-min model (any kind), as {name: float32 np.ndarray}, in
    pipeline order. With both inputs a two-tower model runs whole (embeds and logits included); else each tower given.
    """
    if pixel_values is None and input_ids is None:
        raise ValueError("trace needs pixel_values, input_ids or both")
    for name, given, tower in (("pixel_values", pixel_values, "vision"), ("input_ids", input_ids, "text")):
        if given is not None and not hasattr(model, tower):
            raise InputError(f"{name} given, and a {type(model).__name__} has no {tower} tower")
    activations = {}

    def recorder(name, take):
        def hook(module, inputs, out):
            activations[name] = to_numpy(take(inputs, out))
        return hook

    handles = [module.register_forward_hook(recorder(name, take)) for module, name, take in hook_points(model)]
    try:
        with torch.no_grad():
            outputs = run_once(model, pixel_values, input_ids, attention_mask, pixel_attention_mask, spatial_shapes)
            activations.update({name: to_numpy(tensor) for name, tensor in outputs.items()})
    finally:
        for handle in handles:
            handle.remove()
    return in_pipeline_order(activations)


def tower_hidden_states(tower, hidden_states):
    """transformers' hidden_states (embeddings, then each block's output) under our names."""
    return {f"{tower}.embeddings": hidden_states[0],
            **{f"{tower}.layers.{i}": h for i, h in enumerate(hidden_states[1:])}}


def hf_towers(hf_model):
    """{"vision": ..., "text": ...}: the transformers tower modules a SiglipModel, SiglipVisionModel, SiglipTextModel or
    SiglipForImageClassification holds (each with .embeddings and .encoder)."""
    if hasattr(hf_model, "vision_model") or hasattr(hf_model, "text_model"):
        return {tower: getattr(hf_model, f"{tower}_model") for tower in ("vision", "text")
                if hasattr(hf_model, f"{tower}_model")}
    return {"vision" if hasattr(hf_model.embeddings, "patch_embedding") else "text": hf_model}


def trace_hf(hf_model, pixel_values=None, input_ids=None, attention_mask=None, pixel_attention_mask=None,
             spatial_shapes=None):
    """The same names from a transformers SigLIP model (any of the four), through output_hidden_states=True and
    forward hooks.

    In transformers 5.24 hidden_states[0] is the input of block 0 (the embeddings) and hidden_states[i + 1] the
    output of block i; SigLIP captures them with tie_last_hidden_states=False, so the last one is block n-1's output
    before the final LayerNorm, and last_hidden_state is after it. The patch conv and the parts inside each block
    (out_proj's input, layer_norm2's input, the MLP's output) are read with forward hooks. A two-tower model given
    both inputs runs whole (embeds and logits too); otherwise each tower given an input runs alone.
    """
    towers, hooked = hf_towers(hf_model), {}

    def record(name, take):
        return lambda module, inputs, out: hooked.update({name: take(inputs, out)})

    points = [(towers["vision"].embeddings.patch_embedding, "vision.patch_embeds", patch_tokens)] \
        if "vision" in towers else []
    for tower, module in towers.items():
        for i, layer in enumerate(module.encoder.layers):
            points += [(layer.self_attn.out_proj, f"{tower}.layers.{i}.attention", lambda inputs, out: inputs[0]),
                       (layer.layer_norm2, f"{tower}.layers.{i}.attention_residual", lambda inputs, out: inputs[0]),
                       (layer.mlp, f"{tower}.layers.{i}.mlp", lambda inputs, out: out)]
    handles = [module.register_forward_hook(record(name, take)) for module, name, take in points]
    try:
        with torch.no_grad():
            naflex = {} if pixel_attention_mask is None else {"pixel_attention_mask": pixel_attention_mask,
                                                              "spatial_shapes": spatial_shapes}
            tensors = hf_outputs(hf_model, towers, pixel_values, input_ids, attention_mask, naflex)
    finally:
        for handle in handles:
            handle.remove()
    return in_pipeline_order({name: to_numpy(t) for name, t in {**hooked, **tensors}.items()})


def hf_outputs(hf_model, towers, pixel_values, input_ids, attention_mask, naflex):
    """Hidden states, pooled features and (two towers, both inputs) embeds and logits, under our names. naflex: the
    padding mask and spatial shapes, for a Siglip2 model."""
    import transformers

    vision_out = text_out = None
    tensors = {}
    two_towers = isinstance(hf_model, (transformers.SiglipModel, transformers.Siglip2Model))
    if two_towers and pixel_values is not None and input_ids is not None:
        out = hf_model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                       output_hidden_states=True, **naflex)
        vision_out, text_out = out.vision_model_output, out.text_model_output
        tensors = {name: getattr(out, name) for name in OUTPUT_NAMES}
    else:
        if pixel_values is not None:
            vision_out = towers["vision"](pixel_values=pixel_values, output_hidden_states=True, **naflex)
        if input_ids is not None:
            text_out = towers["text"](input_ids, attention_mask=attention_mask, output_hidden_states=True)
    if vision_out is not None:
        tensors.update({**tower_hidden_states("vision", vision_out.hidden_states),
                        "vision.post_layernorm": vision_out.last_hidden_state})
        classifier = (transformers.SiglipForImageClassification, transformers.Siglip2ForImageClassification)
        if vision_out.pooler_output is not None and not isinstance(hf_model, classifier):
            tensors["vision.pooled"] = vision_out.pooler_output
    if text_out is not None:
        tensors.update({**tower_hidden_states("text", text_out.hidden_states),
                        "text.final_layer_norm": text_out.last_hidden_state,
                        "text.pooled": text_out.last_hidden_state[:, -1], "text.features": text_out.pooler_output})
    return tensors


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

LOW_PRECISION = ("float16", "bfloat16")
NOISE_FACTOR = 4.0  # a float16/bfloat16 port may be this many times as far (RMS) from float32 as siglip-min is
SIMILAR = 1e-2  # for hints: two tensors are "equal" when their RMS difference is within 1% of the tensor's RMS
PASSING = ("ok", "not written", "extra")


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


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


def compare_row(name, a, b, atol, rtol, dtype="float32", noise=None):
    """One table row: {name, shape, dtype, max_abs, max_rel, cosine, result, why, hint}.

    result: 'ok', 'not written' (only in A), 'extra' (only in B, ignored), or a failure: 'FAIL', 'SHAPE', 'INPUT'.
    A name written in float16/bfloat16 is judged by low_precision_result, with noise (siglip-min's own RMS error in
    that dtype, or None for a port that computes in float32 and only stores the low precision).
    """
    row = {"name": name, "shape": str(tuple((a if a is not None else b).shape)), "dtype": dtype,
           "max_abs": "-", "max_rel": "-", "cosine": "-", "why": "", "hint": ""}
    if b is None:
        return {**row, "dtype": "-", "result": "not written", "why": "not written by B"}
    if a is None:
        return {**row, "result": "extra", "why": "only in B, ignored"}
    if name in INPUT_NAMES:
        return compare_input(row, name, a, b, atol)
    if a.shape != b.shape:
        return {**row, "shape": f"{tuple(a.shape)} vs {tuple(b.shape)}", "result": "SHAPE",
                "why": f"shape {tuple(a.shape)} in A, {tuple(b.shape)} in B"}
    finite = np.isfinite(b)
    max_abs, max_rel, cosine, outside = compare_tensor(a[finite], b[finite], atol, rtol)
    row.update(max_abs=f"{max_abs:.3e}", max_rel=f"{max_rel:.3e}", cosine=f"{cosine:.7f}")
    if not finite.all():
        return {**row, "result": "FAIL", "why": f"{int(np.isnan(b).sum())} NaN and {int(np.isinf(b).sum())} "
                                                f"infinite values; max abs over the finite ones {max_abs:.3e}"}
    if dtype in LOW_PRECISION:
        return {**row, **low_precision_result(a, b, atol, rtol, dtype, noise)}
    if outside:
        return {**row, "result": "FAIL", "why": f"max abs {max_abs:.3e}, {outside} of {a.size} elements "
                                                f"outside atol {atol:g} + rtol {rtol:g} * |A|"}
    return {**row, "result": "ok"}


def not_rounded_like_a(a, b, atol, rtol, dtype):
    """How many elements of b (written in dtype) are not A rounded to dtype, A taken within atol + rtol * |A|: what
    a port that computes in float32 and stores dtype writes. A port that computes in dtype misses it on 20-80% of
    the elements of every layer (measured on random SigLIPs); one that stores it after a small error (exact GELU,
    LayerNorm eps 1e-5) on 0.1-30% of the elements after the error."""
    tolerance = atol + rtol * np.abs(a)
    low, high = (torch.from_numpy(x.astype(np.float32)).to(getattr(torch, dtype)).double().numpy()
                 for x in (a - tolerance, a + tolerance))
    return int(((b < low) | (b > high)).sum())


def low_precision_result(a, b, atol, rtol, dtype, noise):
    """{result, why} for a name written in float16/bfloat16.

    noise None (a port that computes in float32 and stores dtype): every element must be A rounded to dtype.
    Otherwise (a port that computes in dtype): its RMS error may be NOISE_FACTOR times siglip-min's own in dtype.
    An error smaller than that noise cannot be told from rounding by looking at the outputs.
    """
    if noise is None:
        missed = not_rounded_like_a(a, b, atol, rtol, dtype)
        why = (f"{missed} of {a.size} elements are not A rounded to {dtype}: an error before the rounding"
               if missed else f"A rounded to {dtype}")
        return {"result": "FAIL" if missed else "ok", "why": why}
    error = rms(b - a)
    why = (f"RMS error {error:.2e}, {error / max(noise, TINY):.1f}x siglip-min's own {dtype} error {noise:.2e} "
           f"(limit {NOISE_FACTOR:g}x)")
    return {"result": "ok" if error <= NOISE_FACTOR * noise + atol else "FAIL", "why": why}


def computes_in_low_precision(a, b, dtypes, atol, rtol):
    """{part: True} for each tower whose first activation B wrote in float16/bfloat16 is not A rounded to that
    dtype: B computes in it (and is judged against siglip-min's noise); else B stores it only (judged exactly)."""
    computes = {}
    for name in sorted(set(a) & set(b), key=pipeline_position):
        part, dtype = tower_of(name), dtypes.get(name, str(b[name].dtype))
        if part in ("vision", "text") and part not in computes and dtype in LOW_PRECISION and \
                a[name].shape == b[name].shape and np.isfinite(b[name]).all():
            computes[part] = not_rounded_like_a(a[name], b[name], atol, rtol, dtype) > 0
    computes["outputs"] = any(computes.values())
    return computes


def compare_input(row, name, a, b, atol):
    """Inputs are not activations: equal, in a layout recognised (ok, and said), or other inputs (INPUT)."""
    if a.shape == b.shape and np.allclose(b, a, rtol=0, atol=atol):
        return {**row, "result": "ok"}
    for layout, rearranged in input_layouts(name, b):
        if rearranged.shape == a.shape and np.allclose(rearranged, a, rtol=0, atol=atol):
            return {**row, "result": "ok", "hint": f"written {layout}"}
    why = f"B's {name} {tuple(b.shape)} is not the golden's {tuple(a.shape)}: the port ran on other inputs"
    if name == "input_ids" and b.ndim == a.ndim == 2 and b.shape[1] < a.shape[1] and \
            np.array_equal(b, a[:, : b.shape[1]]):
        why = f"B's input_ids stop at {b.shape[1]} tokens: the golden's are padded to {a.shape[1]}, as SigLIP's are"
    return {**row, "result": "INPUT", "why": why}


def input_layouts(name, b):
    """(layout, b rearranged to the golden's layout) for the layouts a port may write its pixel_values in."""
    if name != "pixel_values" or b.ndim != 4:
        return []
    return [("channels-last (B, H, W, C)", b.transpose(0, 3, 1, 2)),
            ("with rows and columns swapped (B, C, W, H)", b.transpose(0, 1, 3, 2)),
            ("with the channels in BGR order", b[:, ::-1])]


def similar(reference, candidate):
    return reference.shape == candidate.shape and rms(candidate - reference) <= SIMILAR * max(rms(reference), TINY)


def hints(name, a, b, heads=None):
    """What a failing tensor b of `name` equals instead, each said only when it holds: another name of A (one name
    off), A with the patch grid transposed or the heads reordered, a position of the tokens it was pooled from,
    A times a constant (plus a constant)."""
    reference, found = a[name], []
    others = [other for other in a if other != name and other not in INPUT_NAMES and similar(a[other], b)]
    if others:
        found.append(f"equals A's {others[0]}: written one name off?")
    if name.startswith("vision.") and reference.ndim == 3 and int(reference.shape[1] ** 0.5) ** 2 == reference.shape[1]:
        B, N, D = reference.shape
        grid = int(N ** 0.5)
        if grid > 1 and similar(reference.reshape(B, grid, grid, D).transpose(0, 2, 1, 3).reshape(B, N, D), b):
            found.append("equals A with the patch grid transposed: patches flattened column by column "
                         "(SigLIP flattens row by row)")
    if name.endswith(".attention") and heads:
        order = head_order(reference, b, heads[name.partition(".")[0]])
        if order is not None and order != list(range(len(order))):
            found.append(f"equals A with the heads in the order {order}")
    pooled_from = {"text.pooled": "text.final_layer_norm"}.get(name)
    if pooled_from in a and b.ndim == 2:
        tokens = a[pooled_from]  # (B, L, D)
        positions = [t for t in range(tokens.shape[1]) if similar(tokens[:, t], b)]
        if positions and positions[-1] != tokens.shape[1] - 1:
            found.append(f"equals {pooled_from} at position {positions[0]}: SigLIP pools the last position, "
                         f"{tokens.shape[1] - 1}")
    scale, shift = affine_fit(reference, b)
    if scale is not None and (abs(scale - 1) > 1e-3 or abs(shift) > 1e-3 * max(rms(reference), TINY)):
        found.append(f"equals {scale:.4g} x A {'+' if shift >= 0 else '-'} {abs(shift):.3g}: a constant factor "
                     f"missing or extra (1/sqrt(Dh)? exp(logit_scale)?)")
    return found


def head_order(reference, b, num_heads):
    """The order of A's heads that b's heads are in ((B, T, H * Dh) tensors), or None when b is not a reordering."""
    if b.shape != reference.shape or reference.shape[-1] % num_heads:
        return None
    split = lambda x: np.split(x, num_heads, axis=-1)  # noqa: E731  H x (B, T, Dh)
    ours, theirs = split(reference), split(b)
    order = [next((k for k, head in enumerate(ours) if similar(head, candidate)), None) for candidate in theirs]
    return order if None not in order and sorted(order) == list(range(num_heads)) else None


def affine_fit(reference, b):
    """(scale, shift) with b = scale * A + shift to within SIMILAR, else (None, None)."""
    x, y = reference.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return None, None
    scale, shift = np.polyfit(x, y, 1)
    return (float(scale), float(shift)) if rms(y - (scale * x + shift)) <= SIMILAR * max(rms(y), TINY) else (None, None)


def compare(a, b, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, dtypes=None, noise=None, heads=None):
    """Rows for every name on either side, in pipeline order; A is the reference.

    dtypes: {name: dtype B wrote it in}; noise: a function giving {name: siglip-min's own RMS error} in the low
    precision B computes in, called only when a tower of B computes in float16/bfloat16 (see low_precision_result);
    heads: {"vision": H, "text": H}, to recognise reordered heads.
    """
    dtypes = dtypes or {}
    computes = computes_in_low_precision(a, b, dtypes, atol, rtol)
    floor = noise() if noise and any(computes.values()) else {}
    real = real_patches(a.get("pixel_attention_mask"))
    rows = [compare_row(name, real(name, a.get(name)), real(name, b.get(name)), atol, rtol,
                        dtypes.get(name, str(b[name].dtype) if name in b else "-"),
                        floor.get(name) if computes.get(tower_of(name)) else None)
            for name in sorted(set(a) | set(b), key=pipeline_position)]
    for part in dict.fromkeys(tower_of(row["name"]) for row in rows):  # hints for the mismatch the summary names
        first = next((row for row in rows if tower_of(row["name"]) == part and row["result"] in ("FAIL", "SHAPE")),
                     None)
        if first:
            first["hint"] = "; ".join(hints(first["name"], a, b[first["name"]], heads))
    return rows


def real_patches(pixel_attention_mask):
    """f(name, x): a NaFlex golden's vision tensors (B, N, ...) at its real patches only, (patches, ...); anything
    else as it is. The padded positions' values feed nothing (every attention masks them), so they are left out of
    the comparison."""
    def real(name, x):
        if pixel_attention_mask is None or x is None or not name.startswith("vision."):
            return x
        return x[pixel_attention_mask.astype(bool)] if x.shape[:2] == pixel_attention_mask.shape else x
    return real


def padding_note(a):
    """A line saying that a NaFlex golden's vision rows hold the real patches only, else ""."""
    if "pixel_attention_mask" not in a:
        return ""
    real = int(a["pixel_attention_mask"].sum())
    return f"NaFlex: vision rows compare the {real} real patches (padding left out: every attention masks it)\n"


def describe(row):
    return row["why"] + (f"; {row['hint']}" if row["hint"] else "")


def format_report(rows):
    """The table; one line per part of the pipeline (inputs, vision, text, outputs) with its first mismatch; then
    'first mismatch: NAME (why; hint)', 'all written names match (N not written)' or 'all match'."""
    columns = ("name", "shape", "dtype", "max_abs", "max_rel", "cosine", "result")
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() + (f"  ({row['hint']})" if
              row["hint"] and row["result"] == "ok" else "") for row in rows]
    for part in dict.fromkeys(tower_of(row["name"]) for row in rows):
        failed = [row for row in rows if tower_of(row["name"]) == part and row["result"] not in PASSING]
        lines.append(f"{part}: " + (f"first mismatch {failed[0]['name']} ({describe(failed[0])})" if failed
                                    else "all written names match"))
    failed = [row for row in rows if row["result"] not in PASSING]
    not_written = sum(row["result"] == "not written" for row in rows)
    if failed:
        lines.append(f"first mismatch: {failed[0]['name']} ({describe(failed[0])})")
    else:
        lines.append(f"all written names match ({not_written} not written)" if not_written else "all match")
    return "\n".join(lines)


def error_growth(reference, approximate):
    """Rows {name, shape, rel_rms, max_abs, cosine} for every activation both traces hold, in pipeline order: how far an
    approximate model (quantized, or in low precision) is from the reference at each layer, where its error enters
    and how it grows. rel_rms = RMS(b - a) / RMS(a)."""
    rows = []
    for name in sorted(set(reference) & set(approximate), key=pipeline_position):
        a, b = reference[name], approximate[name]
        if name in INPUT_NAMES or a.shape != b.shape:
            continue
        max_abs, _, cosine, _ = compare_tensor(a, b, 0, 0)
        rows.append({"name": name, "shape": str(tuple(a.shape)), "rel_rms": rms(b - a) / max(rms(a), TINY),
                     "max_abs": max_abs, "cosine": cosine})
    return rows


def format_growth(rows):
    """The error_growth table, then the largest relative error and the cosines of the embeddings."""
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'name'.ljust(width)}  {'rel_rms':>9}  {'max_abs':>9}  {'cosine':>9}"]
    lines += [f"{row['name'].ljust(width)}  {row['rel_rms']:9.2e}  {row['max_abs']:9.2e}  {row['cosine']:9.6f}"
              for row in rows]
    worst = max(rows, key=lambda row: row["rel_rms"])
    lines.append(f"largest relative error: {worst['name']} ({worst['rel_rms']:.2e})")
    ends = [f"{row['name']} cosine {row['cosine']:.6f}" for row in rows if row["name"] in ("image_embeds", "text_embeds")]
    return "\n".join(lines + ([", ".join(ends)] if ends else []))


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


def load_pixel_values(path, naflex):
    """{"pixel_values": (B, C, H, W)} from a .npy file; for a NaFlex model, the three arrays preprocess.py's
    Siglip2ImageProcessor gives, from a .npz holding pixel_values, pixel_attention_mask and spatial_shapes."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {name: loaded[name] for name in NaflexInputs._fields} if naflex else {"pixel_values": loaded}
    except KeyError as e:
        raise InputError(f"{path}: a NaFlex model's pixel values come as a .npz of "
                         f"{', '.join(NaflexInputs._fields)}; {e.args[0]} is missing") from None
    except (ValueError, OSError, TypeError) as e:
        raise InputError(f"{path}: not a {'.npz' if naflex else '.npy'} file of arrays ({e})") from None
    pixel_values, dims = arrays["pixel_values"], "(B, N, C*p*p)" if naflex else "(B, C, H, W)"
    if pixel_values.ndim != (3 if naflex else 4) or not np.issubdtype(pixel_values.dtype, np.number):
        raise InputError(f"{path}: pixel values must be a numeric array {dims}, got {pixel_values.shape} "
                         f"{pixel_values.dtype}")
    return {**arrays, "pixel_values": pixel_values.astype(np.float32)}


def preprocess_images(images, location, vision_config, max_num_patches=None):
    """({"pixel_values": ...} and NaFlex's mask and shapes, the settings used): the folder's preprocessor_config.json,
    else SigLIP's preprocessing for the model (a .npz or an open_clip folder has no preprocessor_config.json)."""
    processor = processor_for_checkpoint(location, vision_config.image_size, vision_config.patch_size,
                                         vision_config.num_patches)
    settings = {**processor.to_dict(), "images": [str(image) for image in images]}
    if not isinstance(processor, Siglip2ImageProcessor):
        if max_num_patches is not None:
            raise InputError("--max-num-patches is for NaFlex models (model_type siglip2)")
        return {"pixel_values": processor(list(images))}, settings
    if max_num_patches is not None:
        settings["max_num_patches"] = max_num_patches
    return processor(list(images), max_num_patches=max_num_patches)._asdict(), settings


def folder_tokenizer(location):
    """The checkpoint folder's tokenizer, or None when it has none (a .npz file, a folder without the files)."""
    try:
        return SiglipTokenizer.from_pretrained(location) if location.is_dir() else None
    except FileNotFoundError:
        return None


def tokenize(texts, location, model):
    """input_ids and the tokenizer settings; InputError pointing at --input-ids when the folder has no tokenizer."""
    tokenizer = folder_tokenizer(location)
    if tokenizer is None:
        raise InputError(f"--text: {model} has no tokenizer (spiece.model or tokenizer.model); "
                         f"pass token ids with --input-ids 5,9,2,1 instead")
    settings = {"source": str(tokenizer.vocab_file), "texts": list(texts),
                **{key: getattr(tokenizer, key) for key in ("model_max_length", "do_lower_case", "pad_id", "eos_id")}}
    return tokenizer(list(texts)), settings


def pad_like_the_tokenizer(ids, mask, location, text_config):
    """--input-ids (and --attention-mask) padded as SiglipTokenizer pads: to its model_max_length with its pad id
    (the folder's tokenizer; without one, the model's text length and SigLIP's pad id 1), and a line saying so."""
    tokenizer = folder_tokenizer(location)
    if tokenizer is not None:
        length, pad = tokenizer.model_max_length, tokenizer.pad_id
    else:
        length, pad = text_config.max_position_embeddings, 1
    if ids.shape[1] > length:
        raise InputError(f"--input-ids: rows of {ids.shape[1]} ids, the model reads at most {length}")
    if ids.shape[1] == length:
        return ids, mask
    print(f"padded --input-ids from {ids.shape[1]} to {length} ids with the pad id {pad}, as the tokenizer pads "
          f"(--no-pad keeps them as given)")
    padded = np.full((ids.shape[0], length), pad, dtype=np.int64)  # (B, L)
    padded[:, : ids.shape[1]] = ids
    if mask is not None:
        mask = np.concatenate([mask, np.zeros((mask.shape[0], length - mask.shape[1]), dtype=np.int64)], axis=1)
    return padded, mask


def seeded_inputs(vision_config, text_config, batch=2, seed=0):
    """NumPy (pixel_values, input_ids) any checkpoint of these tower configs accepts (None for a tower not given):
    uniform [-1, 1] pixels at its image size, random token ids at its full text length. parity.py and bench.py both
    take their inputs from here."""
    generator = np.random.default_rng(seed)
    v, t = vision_config, text_config
    if v is not None and v.num_patches is not None:
        pixel_values = seeded_naflex_inputs(generator, v, batch)
    else:
        pixel_values = None if v is None else \
            generator.uniform(-1, 1, (batch, v.num_channels, v.image_size, v.image_size)).astype(np.float32)
    input_ids = None if t is None else \
        generator.integers(0, t.vocab_size, (batch, t.max_position_embeddings), dtype=np.int64)
    return pixel_values, input_ids


def seeded_naflex_inputs(generator, vision_config, batch):
    """NaflexInputs of `batch` random images, padded to the model's num_patches: the first fills the g x g grid,
    image i has g // (i + 1) rows of it, so every other one is padded."""
    v = vision_config
    grid, width = math.isqrt(v.num_patches), v.num_channels * v.patch_size ** 2
    shapes = [(max(1, grid // (i + 1)), grid) for i in range(batch)]  # (rows, cols) each
    pixel_values = np.zeros((batch, v.num_patches, width), dtype=np.float32)  # (B, N, C*p*p)
    mask = np.zeros((batch, v.num_patches), dtype=np.int32)  # (B, N)
    for i, (rows, cols) in enumerate(shapes):
        pixel_values[i, : rows * cols] = generator.uniform(-1, 1, (rows * cols, width))
        mask[i, : rows * cols] = 1
    return NaflexInputs(pixel_values, mask, np.array(shapes, dtype=np.int64))


def command_line_inputs(args, location, model, generate_missing):
    """({input name: np.ndarray}, {'tokenizer': ..., 'preprocessing': ...}) from the input options, for `model`.

    --image or --pixel-values, --text or --input-ids, --attention-mask; with generate_missing, what is not given is
    generated (seeded_inputs) for each tower the model has.
    """
    vision_config, text_config = sm.tower_configs(model)
    for given, option, config, tower in ((args.image or args.pixel_values, "--image/--pixel-values", vision_config,
                                          "vision"), (args.text or args.input_ids, "--text/--input-ids", text_config,
                                                      "text")):
        if given and config is None:
            raise InputError(f"{option}: --model {args.model} holds a {type(model).__name__}, without a {tower} tower")
    inputs, settings = {}, {"tokenizer": "none (no text input)", "preprocessing": "none (no image input)"}
    if args.image:
        arrays, settings["preprocessing"] = preprocess_images(args.image, location, vision_config,
                                                              args.max_num_patches)
        inputs.update(arrays)
    elif args.pixel_values:
        inputs.update(load_pixel_values(args.pixel_values, vision_config.num_patches is not None))
        settings["preprocessing"] = "none (--pixel-values)"
    if args.text:
        inputs["input_ids"], settings["tokenizer"] = tokenize(args.text, location, args.model)
    elif args.input_ids:
        inputs["input_ids"] = parse_id_rows(args.input_ids, "--input-ids")
        settings["tokenizer"] = "none (--input-ids)"
    if args.attention_mask:
        if "input_ids" not in inputs:
            raise InputError("--attention-mask needs --input-ids or --text")
        inputs["attention_mask"] = parse_id_rows(args.attention_mask, "--attention-mask")
    if args.input_ids and not args.no_pad:
        inputs["input_ids"], mask = pad_like_the_tokenizer(inputs["input_ids"], inputs.get("attention_mask"),
                                                           location, text_config)
        if mask is not None:
            inputs["attention_mask"] = mask
    if generate_missing:
        pixel_values, input_ids = seeded_inputs(vision_config, text_config)
        for name, generated, what in (("pixel_values", pixel_values, "preprocessing"),
                                      ("input_ids", input_ids, "tokenizer")):
            if name not in inputs and generated is not None:
                inputs.update(generated._asdict() if isinstance(generated, NaflexInputs) else {name: generated})
                settings[what] = "none (generated, seed 0)"
    if not inputs:
        raise InputError("no inputs: pass --image or --pixel-values, and/or --text or --input-ids")
    if "input_ids" in inputs:
        sm.check_token_ids(inputs["input_ids"], text_config.vocab_size)
    return inputs, settings


def as_torch(inputs, device="cpu"):
    return {name: torch.from_numpy(array).to(device) for name, array in inputs.items()}


# ----------------------------------------------------------------------------------------------------------------
# The three commands.

def run_export(args):
    location = sm.checkpoint_location(args.model)
    model = sm.from_pretrained(location, device=args.device, dtype=sm.DTYPES[args.dtype],
                               attn_implementation=args.attn, image_size=args.image_size)
    inputs, settings = command_line_inputs(args, location, model, generate_missing=False)
    activations = trace(model, **as_torch(inputs, args.device))
    config = sm.config_to_hf(model.config, type(model).__name__, torch.float32)
    metadata = {"format": "siglip-min parity golden file", "model": args.model, "model_folder": str(location.resolve()),
                "image_size": args.image_size, "config": config, "dtype": args.dtype, "attn_implementation": args.attn,
                "device": args.device, "torch": torch.__version__, "siglip_min": siglip_min_version(), **settings}
    write_golden(args.out, {**inputs, **activations}, metadata)
    print(f"wrote {args.out}: {len(inputs)} inputs, {len(activations)} activations")
    return 0


def run_compare(args):
    (a, metadata), (b, _) = read_golden(args.a), read_golden(args.b)
    if not a and not b:
        raise InputError(f"{args.a} and {args.b} hold no tensors: nothing to compare")
    dtypes = golden_dtypes(args.b)
    low = sorted({dtype for name, dtype in dtypes.items() if dtype in LOW_PRECISION and name in a})
    judged = []
    noise = (lambda: judged.append(f"; siglip-min's own {low[0]} error from {args.noise or 'the golden model'}")
             or low_precision_noise(a, metadata, low[0], args.noise)) if low else None
    rows = compare(a, b, args.atol, args.rtol, dtypes, noise, heads_of(metadata))
    print(f"A: {args.a} ({', '.join(sorted(set(golden_dtypes(args.a).values())))})\n"
          f"B: {args.b} ({', '.join(sorted(set(dtypes.values())))}{''.join(judged)})\n{padding_note(a)}"
          f"{format_report(rows)}")
    return 0 if all(row["result"] in PASSING for row in rows) else 1


def golden_dtypes(path):
    """{name: dtype as written} of a safetensors file ('float32', 'bfloat16', 'int64', ...)."""
    from safetensors import safe_open

    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32"}
    with safe_open(str(path), framework="pt") as f:
        return {name: names.get(f.get_slice(name).get_dtype(), f.get_slice(name).get_dtype()) for name in f.keys()}


def heads_of(metadata):
    """{"vision": H, "text": H} (the towers it has) from a golden file's config, or None."""
    try:
        config = json.loads(metadata.get("config", "null")) or {}
        single = {"siglip_vision_model": "vision", "siglip_text_model": "text"}.get(config.get("model_type"))
        if single:
            return {single: config["num_attention_heads"]}
        return {tower: config[f"{tower}_config"]["num_attention_heads"] for tower in ("vision", "text")}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def low_precision_noise(golden, metadata, dtype, noise_file=None):
    """{name: RMS error of siglip-min's own `dtype` result against the float32 golden}.

    From noise_file (a golden exported with --dtype of that dtype, from the same inputs) when given, else computed
    here from the model folder the golden names and the golden's inputs.
    """
    if noise_file:
        reference, _ = read_golden(noise_file)
    else:
        folder = metadata.get("model_folder")
        if not folder or not Path(folder).exists():
            raise InputError(f"B is written in {dtype}: comparing it needs siglip-min's own {dtype} result, and the "
                             f"golden's model folder ({folder}) is not here; export one with --dtype {dtype} from "
                             f"the same inputs and pass it with --noise")
        image_size = json.loads(metadata.get("image_size", "null"))
        model = sm.from_pretrained(folder, dtype=sm.DTYPES[dtype], image_size=image_size,
                                   attn_implementation=metadata.get("attn_implementation", "sdpa"))
        inputs = {name: torch.from_numpy(golden[name]) for name in INPUT_NAMES if name in golden}
        reference = trace(model, **inputs)
    return {name: rms(reference[name] - golden[name]) for name in reference
            if name in golden and name not in INPUT_NAMES and reference[name].shape == golden[name].shape}


def hf_class_name(model):
    """transformers' class for a siglip-min model: SiglipModel, ..., SiglipForImageClassification; Siglip2... for
    NaFlex."""
    name = {"SiglipClassifier": "SiglipForImageClassification"}.get(type(model).__name__, type(model).__name__)
    vision = sm.tower_configs(model)[0]
    return sm.hf_architecture(name, vision is not None and vision.num_patches is not None)


def run_check_hf(args):
    try:
        import transformers
    except ImportError:
        raise InputError("check-hf needs transformers: pip install transformers==5.24.0 protobuf") from None
    transformers.logging.set_verbosity_error()  # its config and loading chatter would bury the table
    transformers.utils.logging.disable_progress_bar()
    location = sm.checkpoint_location(args.model)
    ours = sm.from_pretrained(location, attn_implementation=args.attn, image_size=args.image_size)
    inputs, _ = command_line_inputs(args, location, ours, generate_missing=True)
    hf_folder = location if (location / "config.json").is_file() else None  # else a .npz or an open_clip folder,
    hf_class = getattr(transformers, hf_class_name(ours))  # which transformers reads once converted
    with tempfile.TemporaryDirectory() as converted:
        if hf_folder is None:
            ours.save_pretrained(converted)
        theirs = hf_class.from_pretrained(hf_folder or converted, attn_implementation="eager",
                                          dtype=torch.float32).eval()
    tensors = as_torch(inputs)
    reference, candidate = {**inputs, **trace_hf(theirs, **tensors)}, {**inputs, **trace(ours, **tensors)}
    rows = compare(reference, candidate, args.atol, args.rtol)
    source = "" if hf_folder else f", on siglip-min's conversion of {location.name}"
    print(f"A: transformers {transformers.__version__} (eager){source}\nB: siglip-min ({args.attn})\n"
          f"{padding_note(reference)}{format_report(rows)}")
    return 0 if all(row["result"] in PASSING for row in rows) else 1


def run_quantized(args):
    location = sm.checkpoint_location(args.model)
    float_model = sm.from_pretrained(location, attn_implementation=args.attn, image_size=args.image_size)
    inputs, _ = command_line_inputs(args, location, float_model, generate_missing=True)
    reference = trace(float_model, **as_torch(inputs))
    del float_model
    quantized = sm.quantize(sm.from_pretrained(location, attn_implementation=args.attn, image_size=args.image_size),
                            args.bits, args.group_size, args.dynamic_activations)
    approximate = trace(quantized, **as_torch(inputs))
    how = f"{args.bits}-bit weights" + (f", groups of {quantized.quantization['group_size']}"
                                         if quantized.quantization["group_size"] else ", one scale per output channel")
    print(f"A: siglip-min float32 ({args.attn})\nB: siglip-min, {how}"
          f"{', int8 activations (fbgemm)' if args.dynamic_activations else ''}\n{padding_note(reference)}"
          f"{format_growth(error_growth(reference, approximate))}")
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, exit 2, like every other error here."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def add_input_options(parser):
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--image", nargs="+", metavar="IMG", help="image files, preprocessed as SigLIP does "
                        "(the folder's preprocessor_config.json, else SigLIP defaults at the model's image size)")
    images.add_argument("--pixel-values", metavar="FILE.npy", help="pixel values (B, 3, H, W) as fed to the model; "
                        "NaFlex: a .npz of pixel_values, pixel_attention_mask and spatial_shapes")
    texts = parser.add_mutually_exclusive_group()
    texts.add_argument("--text", nargs="+", metavar="T", help="texts, tokenized with the folder's spiece.model")
    texts.add_argument("--input-ids", nargs="+", metavar="5,9,2,1", help="token ids, one comma-separated row per text")
    parser.add_argument("--attention-mask", nargs="+", metavar="1,1,1,0",
                        help="optional 0/1 mask, one row per text (SigLIP itself runs without one)")
    parser.add_argument("--no-pad", action="store_true",
                        help="trace --input-ids as given (default: padded as the tokenizer pads, and said so)")
    parser.add_argument("--attn", choices=sm.ATTN_IMPLEMENTATIONS, default="sdpa", help="siglip-min's attention")
    parser.add_argument("--image-size", type=int, help="a big_vision .npz's image size, when its shapes cannot tell")
    parser.add_argument("--max-num-patches", type=int, help="NaFlex: the patches an image may take (default: the "
                                                              "folder's preprocessor_config.json, else num_patches)")


def add_tolerances(parser):
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance (default %(default)g)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance (default %(default)g)")


MODEL_HELP = "any checkpoint: a transformers folder, a cached Hub id, a big_vision .npz file or an open_clip folder"


def build_parser():
    tolerance_rule = ("A is the reference. An element passes when |b - a| <= atol + rtol * |a| (numpy.isclose(b, a)). "
                      "Columns: max_abs = max |b - a|; max_rel = max |b - a| / max |a| (over the whole tensor, not "
                      "per element); cosine = cosine similarity of the flattened tensors.")
    parser = OneLineParser(prog="parity.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    export = commands.add_parser("export", help="write inputs and every activation of siglip-min to a safetensors file",
                                 description="Write the inputs (pixel_values, input_ids, attention_mask) and every "
                                 "traced activation (float32) of siglip-min, with metadata, to one safetensors file.")
    export.add_argument("--model", required=True, help=MODEL_HELP)
    add_input_options(export)
    export.add_argument("--dtype", choices=sorted(sm.DTYPES), default="float32",
                        help="model dtype (traces are stored float32)")
    export.add_argument("--device", default="cpu")
    export.add_argument("--out", required=True, metavar="golden.safetensors")

    compare_cmd = commands.add_parser("compare", help="table of errors per activation, and the first mismatch",
                                      description=f"Compare two golden files name by name. {tolerance_rule} "
                                      "Exit 0 when all match, 1 otherwise, 2 for an unreadable file.")
    compare_cmd.add_argument("a", metavar="A.safetensors", help="the reference (a golden file from export)")
    compare_cmd.add_argument("b", metavar="B.safetensors", help="the file to check (your port's)")
    add_tolerances(compare_cmd)
    compare_cmd.add_argument("--noise", metavar="LOW.safetensors",
                             help="for a port written in float16/bfloat16: a golden exported with --dtype of that "
                                  "dtype from the same inputs (default: computed from the golden's model folder)")

    check = commands.add_parser("check-hf", help="trace siglip-min and transformers on the same inputs, same table",
                                description="Trace transformers (eager attention, output_hidden_states=True) and "
                                "siglip-min on the same inputs and print the compare table (A = transformers). "
                                f"Without inputs, seeded random pixels and token ids are used. {tolerance_rule}")
    check.add_argument("--model", required=True, help=MODEL_HELP)
    add_input_options(check)
    add_tolerances(check)
    quantized = commands.add_parser("quantized", help="trace a model and its quantized copy: the error at every layer",
                                    description="Trace siglip-min in float32 and quantized (siglip_min.quantize) on the "
                                    "same inputs and print, for every activation, the relative RMS error, the largest "
                                    "absolute error and the cosine to float32: where the quantization error enters and "
                                    "how it grows. Without inputs, seeded random pixels and token ids are used. Exit 0.")
    quantized.add_argument("--model", required=True, help=MODEL_HELP)
    add_input_options(quantized)
    quantized.add_argument("--bits", type=int, choices=sm.QUANTIZED_BITS, default=8)
    quantized.add_argument("--group-size", type=int, help="input features per scale (default: one scale per output "
                                                          "channel for 8 bits, 64 for 4 bits)")
    quantized.add_argument("--dynamic-activations", action="store_true",
                           help="8 bits: multiply in int8, activations quantized on the fly (CPU)")
    return parser


def main(argv=None):
    """Run one command; 0 all match (or written), 1 a mismatch, 2 a usage or input error (one line on stderr)."""
    args = build_parser().parse_args(argv)
    run = {"export": run_export, "compare": run_compare, "check-hf": run_check_hf, "quantized": run_quantized}[args.command]
    try:
        return run(args)
    except (InputError, OSError) as e:  # bad inputs, missing or broken files: one line; a bug keeps its traceback
        message = str(e).replace("\n", " ")
        print(f"parity.py {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
