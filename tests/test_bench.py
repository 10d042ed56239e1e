"""bench.py runs end to end on a tiny shape (no test depends on timing)."""
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench.py"
SHAPES_TINY = {"text_config": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                                   vocab_size=100, max_position_embeddings=16),
               "vision_config": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                                     image_size=32, patch_size=8)}


def test_bench_smoke_on_tiny_shape():
    result = subprocess.run([sys.executable, str(BENCH), "--shape", "tiny", "--batch-sizes", "2", "--repeats", "2",
                             "--warmup", "0", "--load-repeats", "1", "--attn", "sdpa"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "torch 2.13" in lines[0]
    for what in ("image features/s", "text features/s", "load time (s)", "peak RSS (MB)"):
        rows = [line for line in lines if line.startswith(what)]
        assert len(rows) == 1, (what, result.stdout)  # one per attention implementation asked for
        for row in rows:
            ours, theirs, ratio = row.split()[-4:-1]
            assert float(ours) > 0 and float(theirs) > 0 and float(ratio.rstrip("x")) >= 0  # 0.00x: a tiny ratio


def test_bench_refuses_cuda_without_gpu():
    import torch

    if torch.cuda.is_available():
        return
    result = subprocess.run([sys.executable, str(BENCH), "--device", "cuda"], capture_output=True, text=True)
    assert result.returncode == 2 and "0 CUDA GPUs" in result.stderr and "Traceback" not in result.stderr


def test_bench_naflex_row():
    """A SigLIP 2 NaFlex checkpoint runs against transformers' Siglip2Model (padded patch batches)."""
    result = subprocess.run([sys.executable, str(BENCH), "--shape", "naflex-tiny", "--batch-sizes", "3", "--repeats", "2",
                             "--warmup", "0", "--load-repeats", "0", "--attn", "sdpa"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("NaFlex image feats/s")]
    assert len(rows) == 1, result.stdout
    ours, theirs, ratio = rows[0].split()[-4:-1]
    assert float(ours) > 0 and float(theirs) > 0 and float(ratio.rstrip("x")) >= 0


def test_bench_quantized_table(tmp_path):
    """Every quantized path gets a row (bitsandbytes' says why when it cannot run), with sizes in the right order and
    the float32 rows' share of the matmul peak; one path's load child (the others share its code) reports load time
    and peak memory."""
    result = subprocess.run([sys.executable, str(BENCH), "--quantized", "--shape", "tiny", "--batch-sizes", "2",
                             "--repeats", "1", "--warmup", "1", "--load-repeats", "0"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "CPU features: " in lines[1] and "float32 matmul peak now: " in lines[2]
    rows = {}
    for name in ("transformers float32", "transformers bfloat16", "transformers bnb 4-bit", "siglip-min float32",
                 "siglip-min int8", "siglip-min int4 g64", "siglip-min int8 dynamic"):
        row = next(line for line in lines if line.startswith(name + " "))
        if name == "transformers bnb 4-bit" and "not run: " in row:
            assert "not installed (pip install -r requirements-bench.txt)" in row
            continue
        images, texts, _, load_s, rss, size, peak = row[len(name):].split()[:7]
        assert float(images) > 0 and float(texts) > 0 and load_s == rss == "-"
        rows[name] = float(size), peak
    assert rows["siglip-min int4 g64"][0] < rows["siglip-min int8"][0] < rows["siglip-min float32"][0]
    assert 0 < float(rows["siglip-min float32"][1]) < 1.5 and rows["siglip-min int8"][1] == "-"

    import siglip_min as sm

    folders = {"float32": str(tmp_path / "float32"), "int8": str(tmp_path / "int8")}
    model = sm.SiglipModel(sm.SiglipConfig(**{tower: sm.SiglipTextConfig(**config) if tower == "text_config" else
                                              sm.SiglipVisionConfig(**config)
                                              for tower, config in SHAPES_TINY.items()}))
    model.save_pretrained(folders["float32"])
    sm.quantize(model, bits=8).save_pretrained(folders["int8"])
    child = subprocess.run([sys.executable, str(BENCH), "--child", "--path", "siglip-min int8 dynamic", "--folders",
                            json.dumps(folders), "--batch-sizes", "2"], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr
    measured = json.loads(child.stdout.splitlines()[-1])
    assert measured["load_s"] > 0 and measured["peak_rss_mb"] > 0
