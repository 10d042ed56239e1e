"""bench.py runs end to end on a tiny shape (no test depends on timing)."""
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench.py"


def test_bench_smoke_on_tiny_shape():
    result = subprocess.run([sys.executable, str(BENCH), "--shape", "tiny", "--batch-sizes", "2", "--repeats", "2",
                             "--warmup", "0", "--load-repeats", "1", "--attn", "sdpa", "eager"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "torch 2.13" in lines[0]
    for what in ("image features/s", "text features/s", "load time (s)", "peak RSS (MB)"):
        rows = [line for line in lines if line.startswith(what)]
        assert len(rows) == 2, (what, result.stdout)  # one per attention implementation
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
