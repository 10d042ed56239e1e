"""Assignment 5: SigLIP's forward pass ported to pure NumPy, checked layer by layer against a golden file.

A porter's job: read a transformers checkpoint folder (config.json + model.safetensors) into plain arrays and
recompute every activation of siglip_min with nothing but NumPy. Every stage function writes what it computes into
`trace`, a dict under parity.py's names (PORTING.md lists them), so `parity.py compare` can name the first layer
where the port parts from the golden file. No torch in this file.

Fill in every `raise NotImplementedError()`; the comment above each says what it does. Each stage takes the
tower's part of config.json (`config["vision_config"]` or `config["text_config"]`, a dict) and the weights under
transformers' names. Check your work with `python course/grade.py 05_numpy_port FOLDER --public`: the grader feeds
each stage the golden activations that come before it, so the feedback names the first wrong layer of that stage.

Reference: transformers' modeling_siglip.py (the classes named in each docstring); Zhai et al. 2023, "Sigmoid Loss
for Language Image Pre-Training"; PORTING.md for the trace names and tolerances.
"""
import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def load_checkpoint(folder):
    """({transformers name: float64 array}, config.json as a dict) of a transformers SiglipModel folder.

    The port computes in float64: the golden is float32, so the port's own rounding stays far below parity's 1e-5.
    """
    folder = Path(folder)
    weights = {name: array.astype(np.float64) for name, array in load_file(str(folder / "model.safetensors")).items()}
    config = json.loads((folder / "config.json").read_text())
    return weights, config


# ----------------------------------------------------------------------------------------------------------------
# Part 1: primitives.

def linear(x, weight, bias):
    """x W^T + b with torch's layout: weight (out, in), bias (out,); (..., in) -> (..., out). transformers' nn.Linear."""
    # One matrix product; the weight is stored (out, in), as torch stores it.
    ### BEGIN SOLUTION
    return x @ weight.T + bias  # (..., out)
    ### END SOLUTION


def layer_norm(x, weight, bias, eps=1e-6):
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias (nn.LayerNorm, SigLIP's eps 1e-6).

    var is the biased variance (divided by D, not D - 1), as torch's is.
    """
    # mean and var over the last axis with keepdims=True, so they broadcast back over (..., D).
    ### BEGIN SOLUTION
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = x.var(axis=-1, keepdims=True)  # (..., 1)
    return (x - mean) / np.sqrt(var + eps) * weight + bias  # (..., D)
    ### END SOLUTION


def gelu_tanh(x):
    """GELU's tanh approximation, which SigLIP was trained with (transformers' "gelu_pytorch_tanh"):
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    ### BEGIN SOLUTION
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    ### END SOLUTION


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, computed without overflow for scores in the hundreds."""
    # Subtract the maximum along the axis first: softmax(x) = softmax(x - c), and exp(x - max) <= 1 never overflows.
    ### BEGIN SOLUTION
    e = np.exp(x - x.max(axis=axis, keepdims=True))  # same shape as x
    return e / e.sum(axis=axis, keepdims=True)
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------------------
# Part 2: patch embeddings.

def patchify(pixel_values, patch_size):
    """(B, C, H, W) -> (B, N, C * p * p): the p x p patches in row-major grid order (the top row of patches left to
    right, then the next row), each flattened in the order (C, p, p) of the conv kernel (D, C, p, p).

    Then the stride-p convolution of transformers' SiglipVisionEmbeddings is one matrix product with the kernel
    flattened to (D, C * p * p), and its output flattened row-major is the sequence of tokens. Rows and columns of
    pixels past the last whole patch are dropped, as the convolution drops them.
    """
    # Reshape to (B, C, rows, p, cols, p), move the axes to (B, rows, cols, C, p, p), reshape to (B, N, C*p*p).
    # The order of `rows` and `cols` decides the order of the tokens.
    ### BEGIN SOLUTION
    B, C, H, W = pixel_values.shape
    p = patch_size
    rows, cols = H // p, W // p
    grid = pixel_values[:, :, : rows * p, : cols * p].reshape(B, C, rows, p, cols, p)  # (B, C, rows, p, cols, p)
    patches = grid.transpose(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
    return patches.reshape(B, rows * cols, C * p * p)  # (B, N, C*p*p)
    ### END SOLUTION


def vision_embeddings(weights, config, pixel_values, trace):
    """Patch embedding + learned positions (transformers SiglipVisionEmbeddings): (B, C, H, W) -> (B, N, D).

    Writes trace["vision.patch_embeds"] (the conv's output as tokens, before the positions) and
    trace["vision.embeddings"]; returns the latter. Weights: vision_model.embeddings.patch_embedding.weight
    (D, C, p, p) and .bias (D,), vision_model.embeddings.position_embedding.weight (N, D).
    """
    # Use patchify and linear; config["patch_size"] is p.
    ### BEGIN SOLUTION
    kernel = weights["vision_model.embeddings.patch_embedding.weight"]  # (D, C, p, p)
    patches = patchify(pixel_values, config["patch_size"])  # (B, N, C*p*p)
    x = linear(patches, kernel.reshape(kernel.shape[0], -1),
               weights["vision_model.embeddings.patch_embedding.bias"])  # (B, N, D)
    trace["vision.patch_embeds"] = x
    x = x + weights["vision_model.embeddings.position_embedding.weight"]  # (B, N, D)
    trace["vision.embeddings"] = x
    return x
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------------------
# Part 3: the encoder layer.

def multi_head_attention(q, k, v, num_heads):
    """softmax(q k^T / sqrt(Dh)) v for each of the heads, merged back: (B, Tq, D), (B, Tk, D), (B, Tk, D) -> (B, Tq, D).

    The projections are not in here (transformers' eager_attention_forward, the core of SiglipAttention). Head h
    takes the features h*Dh .. (h+1)*Dh - 1 of q, k and v, Dh = D / num_heads. No mask: SigLIP runs without one.
    """
    # Split each of q, k, v to (B, H, T, Dh) (reshape, then transpose), scale the scores by 1/sqrt(Dh), softmax over
    # the keys, weight v, and merge the heads back to (B, Tq, D) in the same order.
    ### BEGIN SOLUTION
    B, Tq, D = q.shape
    Dh = D // num_heads

    def split(x):  # (B, T, D) -> (B, H, T, Dh)
        return x.reshape(B, x.shape[1], num_heads, Dh).transpose(0, 2, 1, 3)

    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(Dh)  # (B, H, Tq, Tk)
    y = softmax(scores, axis=-1) @ split(v)  # (B, H, Tq, Dh)
    return y.transpose(0, 2, 1, 3).reshape(B, Tq, D)  # (B, Tq, D)
    ### END SOLUTION


def mlp(weights, prefix, x):
    """fc1 (D -> I), gelu_tanh, fc2 (I -> D) with the weights prefix + "fc1.weight", ... (transformers SiglipMLP)."""
    ### BEGIN SOLUTION
    h = gelu_tanh(linear(x, weights[prefix + "fc1.weight"], weights[prefix + "fc1.bias"]))  # (B, T, I)
    return linear(h, weights[prefix + "fc2.weight"], weights[prefix + "fc2.bias"])  # (B, T, D)
    ### END SOLUTION


def encoder_layer(weights, config, tower, i, x, trace):
    """Block i of `tower` ("vision" or "text"), pre-norm (transformers SiglipEncoderLayer): (B, T, D) -> (B, T, D).

        x = x + out_proj(attention(layer_norm1(x)));  x = x + mlp(layer_norm2(x))

    Weights under f"{tower}_model.encoder.layers.{i}.": layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.
    Writes, under f"{tower}.layers.{i}": ".attention" (the heads merged, before out_proj), ".attention_residual"
    (x + attention), ".mlp" (the MLP's output, before its residual) and the block's output itself; returns the latter.
    """
    # config["num_attention_heads"] heads, LayerNorm eps config.get("layer_norm_eps", 1e-6). Use linear, layer_norm,
    # multi_head_attention and mlp (the grader swaps in its own to grade this part alone).
    ### BEGIN SOLUTION
    p, name = f"{tower}_model.encoder.layers.{i}.", f"{tower}.layers.{i}"
    eps = config.get("layer_norm_eps", 1e-6)
    h = layer_norm(x, weights[p + "layer_norm1.weight"], weights[p + "layer_norm1.bias"], eps)  # (B, T, D)
    q, k, v = (linear(h, weights[p + f"self_attn.{n}_proj.weight"], weights[p + f"self_attn.{n}_proj.bias"])
               for n in "qkv")  # 3 x (B, T, D)
    merged = multi_head_attention(q, k, v, config["num_attention_heads"])  # (B, T, D)
    trace[f"{name}.attention"] = merged
    x = x + linear(merged, weights[p + "self_attn.out_proj.weight"], weights[p + "self_attn.out_proj.bias"])  # (B, T, D)
    trace[f"{name}.attention_residual"] = x
    m = mlp(weights, p + "mlp.", layer_norm(x, weights[p + "layer_norm2.weight"], weights[p + "layer_norm2.bias"],
                                            eps))  # (B, T, D)
    trace[f"{name}.mlp"] = m
    x = x + m  # (B, T, D)
    trace[name] = x
    return x
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------------------
# Part 4: the heads.

def map_head(weights, config, x):
    """Multihead attention pooling (transformers SiglipMultiheadAttentionPoolingHead): (B, N, D) -> (B, D).

    A learned probe (1, 1, D) is the single query; the tokens are the keys and values. nn.MultiheadAttention packs
    the three projections in vision_model.head.attention.in_proj_weight (3D, D) as rows [q; k; v] (and in_proj_bias
    (3D,) alike); then out_proj, and a residual MLP on a LayerNorm: y = y + mlp(layernorm(y)). No residual around
    the attention. Weights under "vision_model.head.": probe, attention.*, layernorm.*, mlp.*.
    """
    # np.split(w, 3) cuts the packed rows in three; np.broadcast_to gives the probe to every image of the batch.
    ### BEGIN SOLUTION
    h = "vision_model.head."
    B, N, D = x.shape
    w_q, w_k, w_v = np.split(weights[h + "attention.in_proj_weight"], 3)  # 3 x (D, D)
    b_q, b_k, b_v = np.split(weights[h + "attention.in_proj_bias"], 3)  # 3 x (D,)
    probe = np.broadcast_to(weights[h + "probe"], (B, 1, D))  # (B, 1, D)
    y = multi_head_attention(linear(probe, w_q, b_q), linear(x, w_k, b_k), linear(x, w_v, b_v),
                             config["num_attention_heads"])  # (B, 1, D)
    y = linear(y, weights[h + "attention.out_proj.weight"], weights[h + "attention.out_proj.bias"])  # (B, 1, D)
    norm = layer_norm(y, weights[h + "layernorm.weight"], weights[h + "layernorm.bias"],
                      config.get("layer_norm_eps", 1e-6))  # (B, 1, D)
    y = y + mlp(weights, h + "mlp.", norm)  # (B, 1, D)
    return y[:, 0]  # (B, D)
    ### END SOLUTION


def vision_pool(weights, config, x, trace):
    """The last block's output -> post LayerNorm -> MAP head (transformers SiglipVisionTransformer): (B, N, D) -> (B, D).

    Writes trace["vision.post_layernorm"] (B, N, D) and trace["vision.pooled"] (B, D); returns the pooled features.
    Weights: vision_model.post_layernorm.weight and .bias.
    """
    ### BEGIN SOLUTION
    x = layer_norm(x, weights["vision_model.post_layernorm.weight"], weights["vision_model.post_layernorm.bias"],
                   config.get("layer_norm_eps", 1e-6))  # (B, N, D)
    trace["vision.post_layernorm"] = x
    pooled = map_head(weights, config, x)  # (B, D)
    trace["vision.pooled"] = pooled
    return pooled
    ### END SOLUTION


def text_pool(weights, config, x, trace):
    """The last block's output -> final LayerNorm -> the token at the last position -> head (transformers
    SiglipTextTransformer): (B, L, D) -> (B, P).

    SigLIP pools the last position, L - 1 (the tokenizer pads every text to L with eos), not the first token as
    CLIP's [CLS] would. Writes trace["text.final_layer_norm"] (B, L, D), trace["text.pooled"] (B, D) and
    trace["text.features"] (B, P); returns the features. Weights: text_model.final_layer_norm.*, text_model.head.*.
    """
    ### BEGIN SOLUTION
    x = layer_norm(x, weights["text_model.final_layer_norm.weight"], weights["text_model.final_layer_norm.bias"],
                   config.get("layer_norm_eps", 1e-6))  # (B, L, D)
    trace["text.final_layer_norm"] = x
    pooled = x[:, -1]  # (B, D)
    trace["text.pooled"] = pooled
    features = linear(pooled, weights["text_model.head.weight"], weights["text_model.head.bias"])  # (B, P)
    trace["text.features"] = features
    return features
    ### END SOLUTION


def similarity(weights, image_features, text_features, trace):
    """Sigmoid-loss logits (transformers SiglipModel.forward): (B_img, D), (B_txt, D) -> the two logit matrices.

    Both embeddings L2-normalised; logits_per_text = exp(logit_scale) * text_embeds @ image_embeds^T + logit_bias
    (B_txt, B_img), and logits_per_image its transpose. logit_scale (1,) is stored as a log, logit_bias (1,) as is.
    Writes trace["image_embeds"], trace["text_embeds"], trace["logits_per_image"], trace["logits_per_text"].
    """
    ### BEGIN SOLUTION
    image = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)  # (B_img, D)
    text = text_features / np.linalg.norm(text_features, axis=-1, keepdims=True)  # (B_txt, D)
    logits_per_text = np.exp(weights["logit_scale"]) * (text @ image.T) + weights["logit_bias"]  # (B_txt, B_img)
    trace.update(image_embeds=image, text_embeds=text, logits_per_image=logits_per_text.T,
                 logits_per_text=logits_per_text)
    return logits_per_text
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------------------
# Part 5: the whole forward pass.

def text_embeddings(weights, config, input_ids, trace):
    """Token embeddings + learned positions (transformers SiglipTextEmbeddings): (B, L) int -> (B, L, D).

    Row input_ids[b, t] of text_model.embeddings.token_embedding.weight (V, D), plus row t of
    text_model.embeddings.position_embedding.weight (max_position_embeddings, D). Writes trace["text.embeddings"].
    """
    # NumPy's integer-array indexing looks up every token at once.
    ### BEGIN SOLUTION
    tokens = weights["text_model.embeddings.token_embedding.weight"][input_ids]  # (B, L, D)
    x = tokens + weights["text_model.embeddings.position_embedding.weight"][: input_ids.shape[1]]  # (B, L, D)
    trace["text.embeddings"] = x
    return x
    ### END SOLUTION


def encoder(weights, config, tower, x, trace):
    """The tower's config["num_hidden_layers"] blocks in turn (transformers SiglipEncoder): (B, T, D) -> (B, T, D)."""
    ### BEGIN SOLUTION
    for i in range(config["num_hidden_layers"]):
        x = encoder_layer(weights, config, tower, i, x, trace)  # (B, T, D)
    return x
    ### END SOLUTION


def forward(weights, config, pixel_values, input_ids):
    """The whole SiglipModel forward pass: {name: array} of every activation parity.trace gives for these inputs.

    config is config.json as a dict; pixel_values (B_img, C, H, W) float, input_ids (B_txt, L) int. The names:
    vision.patch_embeds ... vision.pooled, text.embeddings ... text.features, image_embeds, text_embeds,
    logits_per_image, logits_per_text (PORTING.md's table, without the inputs).
    """
    # Each tower: embeddings, encoder, pooling (with its own part of config.json); then similarity.
    ### BEGIN SOLUTION
    trace = {}
    vision, text = config["vision_config"], config["text_config"]
    x = vision_embeddings(weights, vision, np.asarray(pixel_values, dtype=np.float64), trace)  # (B_img, N, D)
    image_features = vision_pool(weights, vision, encoder(weights, vision, "vision", x, trace), trace)  # (B_img, D)
    t = text_embeddings(weights, text, np.asarray(input_ids), trace)  # (B_txt, L, D)
    text_features = text_pool(weights, text, encoder(weights, text, "text", t, trace), trace)  # (B_txt, P)
    similarity(weights, image_features, text_features, trace)
    return trace
    ### END SOLUTION
