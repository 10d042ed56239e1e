"""Assignment 3's tests: each part against siglip_min (checked against transformers by the repository's own tests).

A test is `test_<part>_<what>(student, reference)`; those between the HIDDEN TESTS markers run only at grading.
Parts are graded alone: a tower's test swaps in the reference's MAPHead, and load_checkpoint's tests the reference's
siglip_min_name where they test the loading rather than the names.
"""
import functools
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import siglip_min as sm
from grading import check_close, check_shape, from_reference, loaded, matches, randn
from preprocess import SiglipImageProcessor
from tokenizer import SiglipTokenizer

MODULE = "towers.py"
PARTS = [("map_head", 3), ("vision_tower", 2), ("text_tower", 2), ("name_map", 3)]

SHIPPED = Path(sm.__file__).resolve().parent / "checkpoints" / "siglip-tiny-shapes"
torch.set_num_threads(1)  # tiny models: a second thread only adds waiting (3x slower on a busy 2-core box)


def seeded(module, seed, scale=0.2):
    """Every parameter of `module` drawn from N(0, scale^2), LayerNorm weights around 1, reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    norms = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale + (1.0 if name in norms else 0.0))
    return module.eval()


def oracle_load(folder):
    """siglip_min.SiglipModel.from_pretrained(folder), built on the CPU rather than on the meta device (whose first
    use imports seconds' worth of torch)."""
    model = sm.SiglipModel(sm.SiglipConfig.from_pretrained(folder))
    return sm.load_weights(model, folder, torch.device("cpu"), torch.float32)


@functools.lru_cache(maxsize=None)
def shipped():
    """(model, pixel_values of the example images (4, 3, 48, 48), input_ids of the 32 captions (32, 8))."""
    model = oracle_load(SHIPPED)
    images = sorted(str(path) for path in (SHIPPED / "examples").glob("*.png"))
    pixel_values = torch.from_numpy(SiglipImageProcessor.from_pretrained(SHIPPED)(images))
    labels = (SHIPPED / "examples" / "labels.txt").read_text().splitlines()
    input_ids = torch.from_numpy(SiglipTokenizer.from_pretrained(SHIPPED)(labels)).long()
    return model, pixel_values, input_ids


# map_head -------------------------------------------------------------------------------------------------------

def head_config(D, H, I):
    return sm.SiglipVisionConfig(hidden_size=D, intermediate_size=I, num_attention_heads=H)


def map_variant(head, x, residual=False, queries_from_tokens=False):
    """Known wrong MAP heads computed with the oracle's weights: (B, D)."""
    w_q, w_k, w_v = head.in_proj.weight.chunk(3)
    b_q, b_k, b_v = head.in_proj.bias.chunk(3)
    probe = head.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
    q = sm.split_heads(torch.nn.functional.linear(x if queries_from_tokens else probe, w_q, b_q), head.num_heads)
    k = sm.split_heads(torch.nn.functional.linear(x, w_k, b_k), head.num_heads)
    v = sm.split_heads(torch.nn.functional.linear(x, w_v, b_v), head.num_heads)
    y = head.out_proj(sm.merge_heads(sm.attend(q, k, v, None, "eager")))  # (B, Tq, D)
    if residual:
        y = y + (x if queries_from_tokens else probe)
    y = y + head.mlp(head.norm(y))
    return y[:, 0]  # (B, D)


def check_map_head(student, D, H, I, B, N, seed, scale=1.0, out_scale=1.0):
    config = head_config(D, H, I)
    oracle = seeded(sm.MAPHead(config, "eager"), seed)
    with torch.no_grad():
        oracle.out_proj.weight.mul_(out_scale)
        oracle.out_proj.bias.mul_(out_scale)
    ours = loaded(student.MAPHead(D, H, I, config.layer_norm_eps), oracle, f"MAPHead(dim={D}, num_heads={H})")
    x = randn(B, N, D, seed=seed + 1, scale=scale)
    with torch.no_grad():
        got, want = ours(x), oracle(x)
        check_shape(got, (B, D), f"MAPHead output for tokens {tuple(x.shape)} (one pooled vector per image)")
        if matches(got, want):
            return
        if matches(got, map_variant(oracle, x, residual=True)):
            raise AssertionError("MAPHead: you add the probe back around the attention (y = probe + attention); the "
                                 "MAP head has no residual there, only around the MLP: y = out_proj(attention), "
                                 "then y + mlp(norm(y))")
        if matches(got, map_variant(oracle, x, queries_from_tokens=True)) or \
                matches(got, map_variant(oracle, x, residual=True, queries_from_tokens=True)):
            raise AssertionError("MAPHead: your queries come from the tokens (self-attention); the query is the "
                                 "learned probe (B, 1, D) through W_q, only the keys and values come from the tokens")
        if matches(got, x.mean(dim=1)) or matches(got, (x.mean(dim=1) + oracle.mlp(oracle.norm(x.mean(dim=1))))):
            raise AssertionError("MAPHead: this is mean pooling over the tokens; the MAP head pools with attention: "
                                 "the probe's softmax weights over the tokens decide how much each one counts")
        oracle.norm.eps = 1e-5
        if matches(got, oracle(x)):
            raise AssertionError("MAPHead: your LayerNorm uses eps 1e-5 (torch's default); SigLIP's is the eps "
                                 "argument, 1e-6: pass it to nn.LayerNorm")
    check_close(got, want, f"MAPHead(dim={D}, num_heads={H}) output")


def test_map_head_parameter_names(student, reference):
    config = head_config(16, 4, 32)
    oracle = sm.MAPHead(config, "eager")
    ours = student.MAPHead(16, 4, 32, 1e-6)
    got = {name: tuple(p.shape) for name, p in ours.state_dict().items()}
    want = {name: tuple(p.shape) for name, p in oracle.state_dict().items()}
    assert got == want, (f"MAPHead(16, 4, 32): parameters {sorted(got.items())}; siglip_min.MAPHead's are "
                         f"{sorted(want.items())}")


def test_map_head_matches(student, reference):
    check_map_head(student, D=16, H=4, I=32, B=2, N=5, seed=0)


def test_map_head_shipped_weights(student, reference):
    model, pixel_values, _ = shipped()
    v = model.config.vision_config
    ours = loaded(student.MAPHead(v.hidden_size, v.num_attention_heads, v.intermediate_size, v.layer_norm_eps),
                  model.vision.head, "MAPHead with the shipped model's weights")
    with torch.no_grad():
        tokens = model.vision.last_hidden_state(pixel_values)  # (4, 16, 128)
        check_close(ours(tokens), model.vision.head(tokens), "MAPHead on the shipped model's image tokens")


### BEGIN HIDDEN TESTS
def test_map_head_other_sizes(student, reference):
    check_map_head(student, D=24, H=3, I=40, B=3, N=9, seed=1)
    check_map_head(student, D=8, H=1, I=8, B=1, N=1, seed=2, scale=3.0)


def test_map_head_small_activations(student, reference):
    """A small attention output: there the LayerNorm's eps (1e-6, not 1e-5) shows."""
    check_map_head(student, D=16, H=2, I=32, B=2, N=7, seed=3, out_scale=0.005)
### END HIDDEN TESTS


# vision_tower ---------------------------------------------------------------------------------------------------

def vision_config(D=32, H=4, I=64, layers=2, image_size=24, patch_size=6):
    return sm.SiglipVisionConfig(hidden_size=D, intermediate_size=I, num_hidden_layers=layers, num_attention_heads=H,
                                 image_size=image_size, patch_size=patch_size)


def check_embeddings(student, config, seed):
    oracle = seeded(sm.VisionEmbeddings(config), seed)
    ours = loaded(student.VisionEmbeddings(config), oracle, "VisionEmbeddings")
    x = randn(2, config.num_channels, config.image_size, config.image_size, seed=seed + 1)
    with torch.no_grad():
        got, want = ours(x), oracle(x)
        g = config.image_size // config.patch_size
        if not matches(got, want):
            conv = oracle.patch(x)  # (B, D, g, g)
            if matches(got, conv.transpose(2, 3).flatten(2).transpose(1, 2) + oracle.pos):
                raise AssertionError("VisionEmbeddings: your tokens go column by column over the patch grid; "
                                     "read the patches row by row: (B, D, g, g) -> flatten(2) -> (B, D, N) -> "
                                     "transpose to (B, N, D)")
            if matches(got, conv.flatten(2).transpose(1, 2)):
                raise AssertionError("VisionEmbeddings: the position embeddings are not added")
    check_close(got, want, f"VisionEmbeddings of a {config.image_size}x{config.image_size} image "
                f"({g * g} patches of {config.patch_size}x{config.patch_size})")


def check_vision_tower(student, reference, config, seed, B=2):
    oracle = seeded(sm.VisionTower(config, "eager"), seed)
    with from_reference(student, reference, "MAPHead"):
        ours = loaded(student.VisionTower(config), oracle, "VisionTower")
    x = randn(B, config.num_channels, config.image_size, config.image_size, seed=seed + 1)
    with torch.no_grad():
        got, want = ours(x), oracle(x)
        check_shape(got, (B, config.hidden_size), "VisionTower output (one feature vector per image)")
        if not matches(got, want):
            tokens = list(oracle.hidden_states(x))[-1]  # (B, N, D) before the post LayerNorm
            if matches(got, oracle.head(tokens)):
                raise AssertionError("VisionTower: the post LayerNorm (norm) is missing: the MAP head pools "
                                     "norm(x), the last block's output after the LayerNorm")
            if matches(got, oracle.head(oracle.norm(oracle.embed(x)))):
                raise AssertionError("VisionTower: the encoder blocks are not applied: run x through each block")
    check_close(got, want, f"VisionTower features ({config.num_hidden_layers} blocks, width {config.hidden_size})")


def test_vision_tower_embeddings(student, reference):
    check_embeddings(student, vision_config(), seed=10)


def test_vision_tower_matches(student, reference):
    check_vision_tower(student, reference, vision_config(), seed=11)


def test_vision_tower_shipped_weights(student, reference):
    model, pixel_values, _ = shipped()
    with from_reference(student, reference, "MAPHead"):
        ours = loaded(student.VisionTower(model.config.vision_config), model.vision,
                      "VisionTower with the shipped model's weights")
    with torch.no_grad():
        check_close(ours(pixel_values), model.get_image_features(pixel_values),
                    "image features of the shipped model's example images")


### BEGIN HIDDEN TESTS
def test_vision_tower_other_configs(student, reference):
    config = vision_config(D=24, H=2, I=40, layers=3, image_size=20, patch_size=4)
    check_embeddings(student, config, seed=12)
    check_vision_tower(student, reference, config, seed=13, B=3)
    config = vision_config(D=16, H=4, I=16, layers=1, image_size=30, patch_size=7)  # 30 = 4 * 7 + 2: 'valid' conv
    check_embeddings(student, config, seed=14)
    check_vision_tower(student, reference, config, seed=15, B=1)
### END HIDDEN TESTS


# text_tower -----------------------------------------------------------------------------------------------------

def text_config(V=20, D=32, H=4, I=64, layers=2, max_length=8, P=24):
    return sm.SiglipTextConfig(vocab_size=V, hidden_size=D, intermediate_size=I, num_hidden_layers=layers,
                               num_attention_heads=H, max_position_embeddings=max_length, projection_size=P)


def padded_ids(lengths, L, vocab_size, seed, eos=1):
    """(B, L) ids: a random text of each length (ids 2.. vocab_size-1), then eos, then eos as padding to L."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        words = torch.randint(2, vocab_size, (n,), generator=generator)
        rows.append(torch.cat([words, torch.full((L - n,), eos)]))
    return torch.stack(rows)  # (B, L)


def check_text_tower(student, config, ids, seed):
    oracle = seeded(sm.TextTower(config, "eager"), seed)
    ours = loaded(student.TextTower(config), oracle, "TextTower")
    with torch.no_grad():
        got, want = ours(ids), oracle(ids)
        B, L = ids.shape
        check_shape(got, (B, config.projection_size), "TextTower output (one feature vector per text)")
        if not matches(got, want):
            tokens = oracle.last_hidden_state(ids)  # (B, L, D) after the final LayerNorm
            if matches(got, oracle.head(tokens[:, 0])):
                raise AssertionError("TextTower: you pooled the first token (position 0); SigLIP pools the LAST "
                                     "position, L-1: x[:, -1] after the final LayerNorm (padding for short texts, "
                                     "and it was trained that way)")
            first_eos = (ids == 1).int().argmax(dim=1)  # (B,)
            if matches(got, oracle.head(tokens[torch.arange(B), first_eos])):
                raise AssertionError("TextTower: you pooled at the first end-of-text token, as CLIP does; SigLIP "
                                     "pools the LAST position, L-1, padding or not")
            if matches(got, oracle.head(tokens.mean(dim=1))):
                raise AssertionError("TextTower: this is mean pooling over the tokens; SigLIP pools the LAST "
                                     "position, L-1")
            x = oracle.embed(ids)
            for block in oracle.blocks:
                x = block(x)
            if matches(got, oracle.head(x[:, -1])):
                raise AssertionError("TextTower: the final LayerNorm (norm) is missing before the pooling")
            check_close(ours.embed(ids), oracle.embed(ids), f"TextEmbeddings of {B} texts of {L} tokens (positions "
                        f"0..{L - 1}: the first {L} rows of pos)")
    check_close(got, want, f"TextTower features of {B} texts of {L} tokens ({config.num_hidden_layers} blocks)")


def test_text_tower_matches(student, reference):
    config = text_config()
    check_text_tower(student, config, padded_ids([2, 5, 3], 8, config.vocab_size, seed=20), seed=21)


def test_text_tower_shorter_than_max(student, reference):
    config = text_config()
    check_text_tower(student, config, padded_ids([1, 4], 5, config.vocab_size, seed=22), seed=23)


def test_text_tower_shipped_weights(student, reference):
    model, _, input_ids = shipped()
    ours = loaded(student.TextTower(model.config.text_config), model.text, "TextTower with the shipped model's weights")
    with torch.no_grad():
        got, want = ours(input_ids), model.get_text_features(input_ids)
        if not matches(got, want) and matches(got, model.text.head(model.text.last_hidden_state(input_ids)[:, 0])):
            raise AssertionError("TextTower: you pooled the first token (position 0); SigLIP pools the LAST position, "
                                 "L-1 (here padding: 'a red circle' is 4 tokens of 8)")
        check_close(got, want, "text features of the shipped model's 32 captions")


### BEGIN HIDDEN TESTS
def test_text_tower_other_configs(student, reference):
    config = text_config(V=50, D=24, H=3, I=40, layers=3, max_length=12, P=16)
    check_text_tower(student, config, padded_ids([1, 11, 6, 3], 12, config.vocab_size, seed=24), seed=25)
    config = text_config(V=10, D=16, H=1, I=16, layers=1, max_length=6, P=16)
    check_text_tower(student, config, padded_ids([5], 6, config.vocab_size, seed=26), seed=27)
### END HIDDEN TESTS


# name_map -------------------------------------------------------------------------------------------------------

def tensor_names(folder):
    with safe_open(Path(folder) / "model.safetensors", framework="pt") as file:
        return list(file.keys())


def check_names(student, model, names):
    """siglip_min_name of every checkpoint name against the inverse of siglip_min.hf_name_map."""
    want = {theirs: ours for ours, theirs in sm.hf_name_map(model).items()}
    wrong = []
    for name in names:
        try:
            got = student.siglip_min_name(name)
        except KeyError as error:
            got = f"KeyError {error}"
        if got != want[name]:
            wrong.append((name, got, want[name]))
    if wrong:
        hint = ""
        layers = [re.search(r"\.blocks\.(\d+)\.", str(text)) for _, got, expected in wrong for text in (got, expected)]
        if all(layers) and any(a.group(1) != b.group(1) for a, b in zip(layers[::2], layers[1::2])):
            hint = " (a layer number goes over whole: encoder.layers.10 is blocks.10, not blocks.1)"
        elif all(".self_attn." in name for name, _, _ in wrong):
            hint = " (q_proj, k_proj, v_proj, out_proj are attn.q, attn.k, attn.v, attn.o)"
        raise AssertionError(f"siglip_min_name: {len(wrong)} of {len(names)} names wrong{hint}, e.g. " + "; ".join(
            f"{name} -> {got!r}, expected {expected!r}" for name, got, expected in wrong[:3]))


def check_loaded(model, want, where):
    """`model` (load_checkpoint's) holds exactly `want`'s parameters, siglip_min.SiglipModel.from_pretrained's."""
    assert isinstance(model, sm.SiglipModel), \
        f"load_checkpoint({where}) returned a {type(model).__name__}; expected a siglip_min.SiglipModel"
    theirs, ours = sm.hf_name_map(want), model.state_dict()
    for name, p in want.state_dict().items():
        got = ours[name]
        if got.shape != p.shape or not torch.equal(got, p):
            raise AssertionError(f"load_checkpoint({where}): parameter {name} does not hold the checkpoint's "
                                 f"tensor {theirs[name]}")
    assert not model.training, f"load_checkpoint({where}): return the model in eval mode (model.eval())"


def random_checkpoint(folder, seed, vision_layers, text_layers, heads):
    """A SiglipModel of another config with seeded random weights, saved in transformers' layout; the model."""
    vision = sm.SiglipVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=vision_layers,
                                   num_attention_heads=heads, image_size=16, patch_size=8)
    text = sm.SiglipTextConfig(vocab_size=12, hidden_size=24, intermediate_size=32, num_hidden_layers=text_layers,
                               num_attention_heads=heads, max_position_embeddings=6, projection_size=16)
    model = seeded(sm.SiglipModel(sm.SiglipConfig(text_config=text, vision_config=vision)), seed)
    model.save_pretrained(folder)
    return model


def expect_error(call, names, what):
    """call() must raise an error whose message names one of `names`."""
    try:
        call()
    except NotImplementedError:
        raise
    except Exception as error:  # noqa: BLE001 (any error will do, if it names the tensor)
        assert any(name in str(error) for name in names), \
            f"load_checkpoint: {what}: the error should name {names[0]}, it says {type(error).__name__}: {error}"
        return
    raise AssertionError(f"load_checkpoint: {what}: expected an error naming {names[0]}, got none")


def test_name_map_shipped_names(student, reference):
    check_names(student, shipped()[0], tensor_names(SHIPPED))


def test_name_map_unknown_names(student, reference):
    for name in ("logit_temperature", "vision_model.pooler.weight", "text_model.encoder.layers.0.self_attn.qkv.weight"):
        try:
            got = student.siglip_min_name(name)
        except KeyError:
            continue
        raise AssertionError(f"siglip_min_name({name!r}) gave {got!r}; a name that is no SiglipModel tensor must "
                             f"raise KeyError")


def test_name_map_load_shipped(student, reference):
    model, pixel_values, input_ids = shipped()
    with from_reference(student, reference, "siglip_min_name"):
        ours = student.load_checkpoint(SHIPPED)
    check_loaded(ours, model, "checkpoints/siglip-tiny-shapes")
    with torch.no_grad():
        check_close(ours.get_image_features(pixel_values), model.get_image_features(pixel_values),
                    "image features of the loaded model")
        check_close(ours.get_text_features(input_ids), model.get_text_features(input_ids),
                    "text features of the loaded model")


def test_name_map_load_with_your_names(student, reference):
    """load_checkpoint with your own siglip_min_name: the whole path, file to features."""
    model, pixel_values, input_ids = shipped()
    ours = student.load_checkpoint(SHIPPED)
    check_loaded(ours, model, "checkpoints/siglip-tiny-shapes")


def test_name_map_missing_tensor(student, reference):
    model = shipped()[0]
    tensors, theirs = model.state_dict(), sm.hf_name_map(model)
    with tempfile.TemporaryDirectory() as folder, from_reference(student, reference, "siglip_min_name"):
        (Path(folder) / "config.json").write_text((SHIPPED / "config.json").read_text())
        dropped = "text.blocks.1.attn.v.bias"
        save_file({theirs[name]: t for name, t in tensors.items() if name != dropped},
                  str(Path(folder) / "model.safetensors"))
        expect_error(lambda: student.load_checkpoint(folder), [dropped, theirs[dropped]],
                     f"a checkpoint without {theirs[dropped]}")


### BEGIN HIDDEN TESTS
def test_name_map_other_config(student, reference):
    """11 vision layers (layer 1 is not layer 10 or 11), 3 text layers, 2 heads, other widths."""
    with tempfile.TemporaryDirectory() as folder:
        model = random_checkpoint(folder, seed=30, vision_layers=11, text_layers=3, heads=2)
        check_names(student, model, tensor_names(folder))
        want = oracle_load(folder)
        check_loaded(student.load_checkpoint(folder), want, "a random 11-layer checkpoint")


def test_name_map_extra_tensor(student, reference):
    with tempfile.TemporaryDirectory() as folder, from_reference(student, reference, "siglip_min_name"):
        model = random_checkpoint(folder, seed=31, vision_layers=2, text_layers=1, heads=4)
        want = oracle_load(folder)
        check_loaded(student.load_checkpoint(folder), want, "a random 2-layer checkpoint")
        theirs = sm.hf_name_map(model)
        tensors = {theirs[name]: t.contiguous() for name, t in model.state_dict().items()}
        save_file({**tensors, "vision_model.encoder.layers.2.mlp.fc1.bias": torch.zeros(24)},
                  str(Path(folder) / "model.safetensors"))
        expect_error(lambda: student.load_checkpoint(folder), ["vision_model.encoder.layers.2.mlp.fc1.bias",
                                                               "vision.blocks.2.mlp.fc1.bias"],
                     "a checkpoint with a third vision layer that the config has not")
### END HIDDEN TESTS
