"""A plain NumPy port of SigLIP, as a porting engineer writes one from the README: it reads a Hugging Face folder's
weights and a golden file's inputs and writes every traced name. The tests plant one bug at a time in it and check
what `parity.py compare` says. Not a second implementation of the library: nothing here is imported by it.

Bugs (each a name in BUGS): exact_gelu, eps_1e-5, column_major_patches, transposed_kernel, swapped_heads,
pool_first, no_attention_scale, names_one_off, channels_last_pixels, logit_scale_not_exp.
"""
import math

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

BUGS = ("exact_gelu", "eps_1e-5", "column_major_patches", "transposed_kernel", "swapped_heads", "pool_first",
        "no_attention_scale", "names_one_off", "channels_last_pixels", "logit_scale_not_exp")
erf = np.vectorize(math.erf)


def gelu(x, bugs):
    if "exact_gelu" in bugs:
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, w, b, bugs):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + (1e-5 if "eps_1e-5" in bugs else 1e-6)) * w + b


def linear(x, w, b):
    return x @ w.T + b


def attend(q, k, v, heads, bugs, keep=None):
    """Heads merged (B, Tq, D) of softmax(q k^T / sqrt(Dh)) v; keep (B, Tk) masks keys."""
    B, Tq, D = q.shape
    split = lambda x: x.reshape(B, x.shape[1], heads, D // heads).transpose(0, 2, 1, 3)  # noqa: E731 (B, H, T, Dh)
    scores = split(q) @ split(k).transpose(0, 1, 3, 2)  # (B, H, Tq, Tk)
    if "no_attention_scale" not in bugs:
        scores = scores / math.sqrt(D // heads)
    if keep is not None:
        scores = np.where(keep[:, None, None, :] > 0, scores, np.finfo(np.float32).min)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    out = (probs / probs.sum(-1, keepdims=True)) @ split(v)  # (B, H, Tq, Dh)
    if "swapped_heads" in bugs:
        out = out[:, ::-1]
    return out.transpose(0, 2, 1, 3).reshape(B, Tq, D)


def encoder(x, w, prefix, heads, bugs, trace, tower, keep=None):
    for i in range(sum(name.endswith(".layer_norm1.weight") and name.startswith(prefix) for name in w)):
        p = f"{prefix}.encoder.layers.{i}."
        h = layer_norm(x, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], bugs)
        q, k, v = (linear(h, w[p + f"self_attn.{n}_proj.weight"], w[p + f"self_attn.{n}_proj.bias"]) for n in "qkv")
        trace[f"{tower}.layers.{i}.attention"] = merged = attend(q, k, v, heads, bugs, keep)
        x = x + linear(merged, w[p + "self_attn.out_proj.weight"], w[p + "self_attn.out_proj.bias"])
        trace[f"{tower}.layers.{i}.attention_residual"] = x
        h = layer_norm(x, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], bugs)
        mlp = linear(gelu(linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"]), bugs),
                     w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
        trace[f"{tower}.layers.{i}.mlp"] = mlp
        trace[f"{tower}.layers.{i}"] = x = x + mlp
    return x


def vision(pixels, w, heads, bugs, trace):
    kernel = w["vision_model.embeddings.patch_embedding.weight"]  # (D, C, p, p)
    if "transposed_kernel" in bugs:
        kernel = kernel.transpose(0, 1, 3, 2)
    D, C, p, _ = kernel.shape
    B, _, H, W = pixels.shape
    rows, cols = H // p, W // p
    grid = pixels[:, :, : rows * p, : cols * p].reshape(B, C, rows, p, cols, p)
    order = (0, 4, 2, 1, 3, 5) if "column_major_patches" in bugs else (0, 2, 4, 1, 3, 5)
    patches = grid.transpose(order).reshape(B, rows * cols, C * p * p)
    x = linear(patches, kernel.reshape(D, -1), w["vision_model.embeddings.patch_embedding.bias"])
    trace["vision.patch_embeds"] = x
    trace["vision.embeddings"] = x = x + w["vision_model.embeddings.position_embedding.weight"]
    x = encoder(x, w, "vision_model", heads, bugs, trace, "vision")
    trace["vision.post_layernorm"] = x = layer_norm(x, w["vision_model.post_layernorm.weight"],
                                                    w["vision_model.post_layernorm.bias"], bugs)
    h = "vision_model.head."
    wq, wk, wv = np.split(w[h + "attention.in_proj_weight"], 3)  # packed rows: q, then k, then v
    bq, bk, bv = np.split(w[h + "attention.in_proj_bias"], 3)
    probe = np.broadcast_to(w[h + "probe"], (B, 1, D))
    y = linear(attend(linear(probe, wq, bq), linear(x, wk, bk), linear(x, wv, bv), heads, bugs),
               w[h + "attention.out_proj.weight"], w[h + "attention.out_proj.bias"])
    y = y + linear(gelu(linear(layer_norm(y, w[h + "layernorm.weight"], w[h + "layernorm.bias"], bugs),
                               w[h + "mlp.fc1.weight"], w[h + "mlp.fc1.bias"]), bugs), w[h + "mlp.fc2.weight"],
                   w[h + "mlp.fc2.bias"])
    trace["vision.pooled"] = y[:, 0]
    return y[:, 0]


def text(ids, mask, w, heads, bugs, trace):
    x = w["text_model.embeddings.token_embedding.weight"][ids] + \
        w["text_model.embeddings.position_embedding.weight"][: ids.shape[1]]
    trace["text.embeddings"] = x
    x = encoder(x, w, "text_model", heads, bugs, trace, "text", mask)
    trace["text.final_layer_norm"] = x = layer_norm(x, w["text_model.final_layer_norm.weight"],
                                                    w["text_model.final_layer_norm.bias"], bugs)
    trace["text.pooled"] = pooled = x[:, 0 if "pool_first" in bugs else -1]
    trace["text.features"] = features = linear(pooled, w["text_model.head.weight"], w["text_model.head.bias"])
    return features


def run(folder, golden, heads, bugs=()):
    """{name: float32 array} of every traced name for the golden's inputs, with the planted bugs."""
    w = {name: t.astype(np.float64) for name, t in load_file(str(folder / "model.safetensors")).items()}
    pixels, ids, mask = golden["pixel_values"], golden["input_ids"], golden.get("attention_mask")
    trace = {}
    image = vision(pixels.astype(np.float64), w, heads["vision"], bugs, trace)
    texts = text(ids, mask, w, heads["text"], bugs, trace)
    image, texts = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (image, texts))
    trace.update(image_embeds=image, text_embeds=texts)
    scale = w["logit_scale"] if "logit_scale_not_exp" in bugs else np.exp(w["logit_scale"])  # stored as a log
    trace["logits_per_text"] = texts @ image.T * scale + w["logit_bias"]
    trace["logits_per_image"] = trace["logits_per_text"].T
    if "names_one_off" in bugs:  # hidden_states-style numbering: "layers.i" holds block i's input
        for tower in ("vision", "text"):
            layers = sorted(int(n.split(".")[2]) for n in trace
                            if n.startswith(f"{tower}.layers.") and n.count(".") == 2)
            outputs = [trace[f"{tower}.embeddings"]] + [trace[f"{tower}.layers.{i}"] for i in layers]
            trace.update({f"{tower}.layers.{i}": outputs[i] for i in layers})
    trace["pixel_values"] = pixels.transpose(0, 2, 3, 1) if "channels_last_pixels" in bugs else pixels
    trace.update(input_ids=ids, **({"attention_mask": mask} if mask is not None else {}))
    return {name: np.ascontiguousarray(x.astype(np.float32) if x.dtype.kind == "f" else x) for name, x in trace.items()}


def write(path, trace, dtype=torch.float32):
    """A safetensors file of the trace, floating tensors in `dtype` (the port's own output precision)."""
    tensors = {name: torch.from_numpy(np.array(x, order="C")) for name, x in trace.items()}  # contiguous copies
    save_file({name: t.to(dtype) if t.is_floating_point() and name != "pixel_values" else t
               for name, t in tensors.items()}, str(path))
