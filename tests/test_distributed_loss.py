"""siglip_min.distributed_sigmoid_loss on torch.distributed (gloo, CPU), in 2, 3 and 4 processes spawned here.

The oracle is sigmoid_loss of the whole batch in one process (itself equal to transformers' loss, test_loss.py), in
float64: the shares of the ranks sum to it, each rank's embedding gradients are its rows of the single-process
gradients, and logit_scale's and logit_bias's gradients summed over the ranks are the single-process ones. Each
rank records the shape of every logits block it builds: none is larger than one local batch by another. Last,
train.py under torchrun with 2 processes takes the steps of one process on the same global batch.
"""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import siglip_min as sm
from hub import InputError

WIDTH = 8


def whole_batch(size, seed=0):
    """float64 L2-normalised image and text embeddings (B, D), logit_scale and logit_bias, reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    images = sm.l2_normalize(torch.randn(size, WIDTH, generator=generator, dtype=torch.float64))
    texts = sm.l2_normalize(images + 0.7 * torch.randn(size, WIDTH, generator=generator, dtype=torch.float64))
    return images, texts, torch.tensor([math.log(10.0)], dtype=torch.float64), torch.tensor([-3.0], dtype=torch.float64)


def ring_worker(rank, sizes, init_file, results):
    """One rank: its rows of the batch, its share and its gradients, the shapes of the blocks it built."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=len(sizes))
    torch.set_num_threads(1)
    images, texts, scale, bias = whole_batch(sum(sizes))
    rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
    leaves = [t.clone().requires_grad_() for t in (images[rows], texts[rows], scale, bias)]
    blocks, pair_logits = [], sm.pair_logits
    sm.pair_logits = lambda *args: blocks.append(tuple(pair_logits(*args).shape)) or pair_logits(*args)
    try:
        share = sm.distributed_sigmoid_loss(*leaves)
        share.backward()
        torch.save({"share": share.detach(), "grads": [leaf.grad for leaf in leaves], "blocks": blocks},
                   f"{results}/{rank}.pt")
    except InputError as error:
        torch.save({"error": str(error)}, f"{results}/{rank}.pt")
    finally:
        sm.pair_logits = pair_logits
        dist.destroy_process_group()


def run_ring(sizes, tmp_path):
    mp.spawn(ring_worker, args=(sizes, tmp_path / "init", tmp_path), nprocs=len(sizes), join=True)
    return [torch.load(tmp_path / f"{rank}.pt") for rank in range(len(sizes))]


@pytest.mark.parametrize("sizes", [(3, 3), (3, 2, 2), (2, 2, 2, 2)], ids=["2 ranks", "3 ranks of 3, 2, 2", "4 ranks"])
def test_shares_and_gradients_equal_the_single_process_loss(sizes, tmp_path):
    ranks = run_ring(list(sizes), tmp_path)
    leaves = [t.clone().requires_grad_() for t in whole_batch(sum(sizes))]
    loss = sm.sigmoid_loss(*leaves)
    loss.backward()
    assert abs(float(sum(r["share"] for r in ranks)) - loss.item()) <= 1e-12 * loss.item()
    starts = [sum(sizes[:rank]) for rank in range(len(sizes))]
    for rank, (start, size) in enumerate(zip(starts, sizes)):
        image_grad, text_grad = ranks[rank]["grads"][:2]
        torch.testing.assert_close(image_grad, leaves[0].grad[start:start + size], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(text_grad, leaves[1].grad[start:start + size], rtol=1e-12, atol=1e-14)
    for index in (2, 3):  # logit_scale, logit_bias: each rank holds its share's gradient
        torch.testing.assert_close(sum(r["grads"][index] for r in ranks), leaves[index].grad, rtol=1e-12, atol=1e-14)
    for rank, size in enumerate(sizes):
        assert len(ranks[rank]["blocks"]) == len(sizes)  # one block per step
        assert all(images == size and texts <= max(sizes) for texts, images in ranks[rank]["blocks"])  # (B_txt, B_img)


def test_an_empty_share_is_refused_naming_every_rank(tmp_path):
    ranks = run_ring([2, 0], tmp_path)
    assert all(r["error"] == "every rank needs pairs of the same width: (n, D) by rank [(2, 8), (0, 8)]" for r in ranks)


def logged_steps(output):
    return [line for line in output.splitlines() if line.startswith("step ")]


def test_torchrun_with_two_processes_takes_the_steps_of_one(tmp_path):
    """train.py under torchrun (2 ranks, a global batch of 7: shares of 4 and 3) against one process with the same
    batch and seed: the same loss at every step (as logged, 4 decimals), the same saved weights to float32 rounding
    (Adam's first steps magnify the last bits: 5e-5 seen on weights of up to 10)."""
    train = str(Path(__file__).resolve().parents[1] / "train.py")
    options = ["--steps", "4", "--batch-size", "7", "--threads", "1", "--log-every", "1", "--eval-every", "1000"]
    one = subprocess.run([sys.executable, train, *options, "--out", str(tmp_path / "one")], capture_output=True,
                         text=True, timeout=600)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", train,
                          *options, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    steps = [[line.split("images/s")[0].split()[:4] for line in logged_steps(run.stdout)] for run in (one, two)]
    assert len(steps[0]) == 4 and steps[0] == [[s[0], s[1], s[2], s[3]] for s in steps[1]], (one.stdout, two.stdout)
    assert two.stdout.count("saved ") == 1  # rank 0 alone saves
    want, got = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=2e-4, msg=name)


@pytest.mark.parametrize("option", [dict(loss="softmax"), dict(patch_dropout=0.5)])
def test_what_does_not_distribute_is_refused_before_the_processes_start(option):
    """train.run calls check_distributable first under torchrun (WORLD_SIZE > 1), before any process group."""
    import train

    with pytest.raises(InputError, match="under torchrun train.py runs the sigmoid loss without --patch-dropout"):
        train.check_distributable(train.TrainOptions(**option))
