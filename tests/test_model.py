"""siglip_min.SiglipModel against transformers.SiglipModel (the oracle) on the same random checkpoints."""
import math
import tempfile

import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import siglip_min as sm
from oracle import hf_config, load_hf, max_abs, save_random_siglip

FEATURES_ATOL = 1e-5  # float32 CPU features: the README's parity promise
LOGITS_ATOL = 1e-4


@st.composite
def small_configs(draw):
    """Small but varied shapes: widths, heads, depths, patch grids, vocab, text length, projection != text width."""
    v_heads, t_heads = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    patch, grid = draw(st.sampled_from([2, 4, 8])), draw(st.integers(1, 4))
    vision = dict(num_attention_heads=v_heads, hidden_size=v_heads * draw(st.sampled_from([4, 8, 12])),
                  intermediate_size=draw(st.integers(4, 64)), num_hidden_layers=draw(st.integers(1, 3)),
                  patch_size=patch, image_size=patch * grid)
    text = dict(num_attention_heads=t_heads, hidden_size=t_heads * draw(st.sampled_from([4, 8, 12])),
                intermediate_size=draw(st.integers(4, 64)), num_hidden_layers=draw(st.integers(1, 3)),
                vocab_size=draw(st.integers(3, 300)), max_position_embeddings=draw(st.integers(1, 20)))
    return hf_config(text, vision)


@st.composite
def inputs_for(draw, config):
    t, v = config.text_config, config.vision_config
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, t.max_position_embeddings))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, t.vocab_size, (batch, length), generator=g)
    mask = (torch.rand(batch, length, generator=g) < 0.7).long()
    mask[:, 0] = 1  # every text keeps at least one token, as a tokenizer's mask does
    pixels = torch.randn(batch, 3, v.image_size, v.image_size, generator=g)
    rows, cols = v.image_size // v.patch_size + draw(st.integers(0, 3)), v.image_size // v.patch_size + draw(st.integers(1, 3))
    larger = torch.randn(batch, 3, rows * v.patch_size, cols * v.patch_size, generator=g)
    return ids, mask, pixels, larger


def compare_on(folder, attn_implementation, ids, mask, pixels, larger):
    """Max abs errors of every public output between transformers and siglip-min."""
    hf = load_hf(folder, attn_implementation)
    ours = sm.SiglipModel.from_pretrained(folder, attn_implementation=attn_implementation)
    with torch.no_grad():
        want, got = hf(input_ids=ids, pixel_values=pixels), ours(input_ids=ids, pixel_values=pixels)
        return {
            "image": max_abs(hf.get_image_features(pixels).pooler_output, ours.get_image_features(pixels)),
            "text": max_abs(hf.get_text_features(ids).pooler_output, ours.get_text_features(ids)),
            "text_masked": max_abs(hf.get_text_features(ids, attention_mask=mask).pooler_output,
                                   ours.get_text_features(ids, attention_mask=mask)),
            "interpolated": max_abs(hf.get_image_features(larger, interpolate_pos_encoding=True).pooler_output,
                                    ours.get_image_features(larger, interpolate_pos_encoding=True)),
            "embeds": max(max_abs(want.image_embeds, got.image_embeds), max_abs(want.text_embeds, got.text_embeds)),
            "logits": max(max_abs(want.logits_per_image, got.logits_per_image),
                          max_abs(want.logits_per_text, got.logits_per_text)),
        }


def assert_close(errors):
    for name, error in errors.items():
        assert error <= (LOGITS_ATOL if name == "logits" else FEATURES_ATOL), (name, errors)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_transformers_on_random_configs(attn_implementation, data):
    config = data.draw(small_configs())
    with tempfile.TemporaryDirectory() as folder:
        save_random_siglip(folder, config, seed=data.draw(st.integers(0, 1000)))
        assert_close(compare_on(folder, attn_implementation, *data.draw(inputs_for(config))))


def real_shape_errors(tmp_path, config, text_length):
    folder = save_random_siglip(tmp_path / "model", config)
    v = config.vision_config
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.text_config.vocab_size, (2, text_length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, text_length // 2:] = 0
    pixels = torch.randn(2, 3, v.image_size, v.image_size, generator=g)
    larger = torch.randn(1, 3, v.image_size + 2 * v.patch_size, v.image_size + 2 * v.patch_size, generator=g)
    return compare_on(folder, "sdpa", ids, mask, pixels, larger)


def test_base_configuration(tmp_path):
    """transformers' SiglipConfig() defaults: google/siglip-base-patch16-224, 203M parameters."""
    config = transformers.SiglipConfig()
    assert_close(real_shape_errors(tmp_path, config, text_length=64))


def test_so400m_shape(tmp_path):
    """google/siglip-so400m-patch14-384's widths: 1152 wide, 16 heads of 72, MLP 4304, patch 14 at 384 px (729
    patches), vocabulary 32000. Two of its 27 layers: depth repeats the same block, and all 27 cost two minutes."""
    so400m = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=2, num_attention_heads=16)
    config = transformers.SiglipConfig(text_config=dict(so400m, max_position_embeddings=64),
                                       vision_config=dict(so400m, patch_size=14, image_size=384))
    assert_close(real_shape_errors(tmp_path, config, text_length=64))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return save_random_siglip(tmp_path_factory.mktemp("small"), hf_config())


def small_inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 99, (batch, 16), generator=g), torch.randn(batch, 3, 32, 32, generator=g)


def test_save_round_trip_through_transformers(small_folder, tmp_path):
    ours = sm.SiglipModel.from_pretrained(small_folder)
    ours.save_pretrained(tmp_path / "saved")
    hf, info = transformers.SiglipModel.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ids, pixels = small_inputs()
    with torch.no_grad():
        want = load_hf(small_folder)(input_ids=ids, pixel_values=pixels)
        got = load_hf(tmp_path / "saved")(input_ids=ids, pixel_values=pixels)
    assert torch.equal(want.logits_per_image, got.logits_per_image)


def test_sharded_checkpoint_loads(small_folder, tmp_path):
    load_hf(small_folder).save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids, pixels = small_inputs()
    with torch.no_grad():
        want = sm.SiglipModel.from_pretrained(small_folder)(ids, pixels).logits_per_image
        got = sm.SiglipModel.from_pretrained(tmp_path / "sharded")(ids, pixels).logits_per_image
    assert torch.equal(want, got)


def test_loss_matches_transformers(small_folder):
    ids, pixels = small_inputs(batch=3)
    with torch.no_grad():
        want = load_hf(small_folder)(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        got = sm.SiglipModel.from_pretrained(small_folder)(ids, pixels, return_loss=True).loss
    assert abs(want.item() - got.item()) <= 1e-5 * max(1.0, abs(want.item()))


def test_classifier_matches_transformers(tmp_path):
    config = hf_config()
    config.id2label = {0: "cat", 1: "dog", 2: "shape"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(1)
    transformers.SiglipForImageClassification(config).save_pretrained(tmp_path)
    hf = load_hf(tmp_path, "eager", transformers.SiglipForImageClassification)
    ours = sm.SiglipClassifier.from_pretrained(tmp_path)
    assert ours.id2label == {0: "cat", 1: "dog", 2: "shape"}
    pixels = small_inputs()[1]
    with torch.no_grad():
        assert max_abs(hf(pixel_values=pixels).logits, ours(pixels)) <= FEATURES_ATOL
    ours.save_pretrained(tmp_path / "saved")
    again, info = transformers.SiglipForImageClassification.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert again.config.id2label == config.id2label


def big_vision_sincos_2d(grid, width, temperature=10_000.0):
    """big_vision's posemb_sincos_2d (models/vit.py), written out in NumPy: [sin x, cos x, sin y, cos y]."""
    y, x = np.mgrid[:grid, :grid]
    omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1))
    x, y = np.outer(x.flatten(), omega), np.outer(y.flatten(), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)  # (N, D)


def test_a_new_model_starts_as_the_paper_initialises_it():
    """SiglipModel(config) alone: logit scale log 10 and bias -10 ([1] §3), and big_vision's init by layer type:
    Xavier-uniform kernels (within the bound, with its standard deviation), zero biases, LayerNorms at 1 and 0,
    N(0, 1/D) text positions and probe, sine-cosine image positions."""
    torch.manual_seed(0)
    model = sm.SiglipModel(sm.SiglipConfig.from_hf(hf_config(
        text=dict(hidden_size=64, intermediate_size=128, max_position_embeddings=64, projection_size=64),
        vision=dict(hidden_size=64, intermediate_size=128)).to_dict()))
    assert model.logit_scale.item() == pytest.approx(math.log(10)) and model.logit_bias.item() == -10
    kernels = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    kernels.append(model.text.embed.token)
    for weight in kernels:
        fan_out, fan_in = weight.view(weight.shape[0], -1).shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert weight.abs().max() <= bound and abs(weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.15
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm)):
            assert (m.bias == 0).all()
        if isinstance(m, torch.nn.LayerNorm):
            assert (m.weight == 1).all()
    for table in (model.text.embed.pos, model.vision.head.probe):
        assert abs(table.std().item() * math.sqrt(64) - 1) < 0.15 and abs(table.mean().item()) < 0.02
    want = big_vision_sincos_2d(32 // 8, 64)
    assert np.abs(model.vision.embed.pos.detach().numpy() - want).max() < 1e-6


def test_hub_id_resolves_from_local_cache(small_folder, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--google--siglip-fake" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in small_folder.iterdir():
        (snapshot / f.name).symlink_to(f)  # the Hub cache links snapshot files to blobs, like this
    (tmp_path / "hub" / "models--google--siglip-fake" / "refs").mkdir()
    (tmp_path / "hub" / "models--google--siglip-fake" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = sm.SiglipModel.from_pretrained("google/siglip-fake")
    assert model.config.vision_config.image_size == 32
    with pytest.raises(FileNotFoundError, match="hf download google/siglip-missing"):
        sm.SiglipModel.from_pretrained("google/siglip-missing")


# Reduced precision on CPU. Bounds are in units of the format's unit roundoff u (2^-8 bfloat16, 2^-11 float16),
# relative to the largest feature: a 2-layer tower runs ~10 rounded matmuls, LayerNorms and softmaxes in series,
# each adding about one u. We measured at most 2.9u (bfloat16 and float16, eager and sdpa, both towers); 8u leaves
# room for other seeds and still fails when something runs at lower precision than it should (a float16 softmax,
# un-cast weights) or a real bug (wrong eps, exact GELU) moves features by 1e-2 and more.
@pytest.mark.parametrize("dtype, unit_roundoff", [(torch.bfloat16, 2**-8), (torch.float16, 2**-11)])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_reduced_precision_on_cpu(small_folder, dtype, unit_roundoff, attn_implementation):
    ids, pixels = small_inputs(batch=4)
    reference = sm.SiglipModel.from_pretrained(small_folder, attn_implementation=attn_implementation)
    low = sm.SiglipModel.from_pretrained(small_folder, dtype=dtype, attn_implementation=attn_implementation)
    assert all(p.dtype == dtype for p in low.parameters())
    with torch.no_grad():
        for f in ("get_image_features", "get_text_features"):
            x = pixels if f == "get_image_features" else ids
            want, got = getattr(reference, f)(x), getattr(low, f)(x)
            assert got.dtype == dtype
            relative = max_abs(want, got) / want.abs().max().item()
            assert relative <= 8 * unit_roundoff, (f, relative / unit_roundoff)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_transformers(small_folder, dtype):
    ids, pixels = small_inputs(batch=4)
    hf = transformers.SiglipModel.from_pretrained(small_folder, dtype=dtype, attn_implementation="sdpa").cuda().eval()
    ours = sm.SiglipModel.from_pretrained(small_folder, device="cuda", dtype=dtype)
    assert ours.logit_scale.device.type == "cuda"
    tolerance = {torch.float32: FEATURES_ATOL, torch.bfloat16: 8 * 2**-8, torch.float16: 8 * 2**-11}[dtype]
    with torch.no_grad():
        want = hf.get_image_features(pixels.cuda().to(dtype)).pooler_output
        got = ours.get_image_features(pixels.cuda())
        assert got.dtype == dtype
        assert max_abs(want, got) / want.abs().max().item() <= tolerance
        want = hf.get_text_features(ids.cuda()).pooler_output
        assert max_abs(want, ours.get_text_features(ids.cuda())) / want.abs().max().item() <= tolerance
