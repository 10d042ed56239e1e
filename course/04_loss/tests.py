"""Assignment 4's tests: each part against siglip_min's loss (checked against transformers by the repository's tests).

A test is `test_<part>_<what>(student, reference)`; those between the HIDDEN TESTS markers run only at grading.
Parts are graded alone: a test of one part swaps the student's helpers of the other parts for the reference's
(the loss tests use the reference pair_logits, the chunked tests the reference block_loss_sum too). Properties
(permutations, chunk counts, extreme logits) run with hypothesis, the same examples on every grading.
"""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

import siglip_min as sm
from grading import PROPERTIES, check_close, check_shape, from_reference, matches, replaced

MODULE = "loss.py"
PARTS = [("logits", 2), ("sigmoid_loss", 3), ("chunked", 3), ("gradient", 2)]

# The first failing example is reported as it is (shrinking it takes seconds for each wrong part), alone (not an
# ExceptionGroup of several); fewer examples where each runs several losses.
FEW = settings(PROPERTIES, max_examples=12)
TIGHT = dict(atol=1e-10, rtol=1e-9)  # float64 inputs: the student's sums and the oracle's differ only by rounding


def pairs(B, D, seed, dtype=torch.float64, B_txt=None):
    """L2-normalised (B, D) images and (B_txt or B, D) texts, text i a noisy copy of image i (a trained model's)."""
    g = torch.Generator().manual_seed(seed)
    images = sm.l2_normalize(torch.randn(B, D, generator=g, dtype=dtype))  # (B, D)
    noise = torch.randn(B_txt or B, D, generator=g, dtype=dtype)  # (B_txt, D)
    texts = noise if B_txt is not None else images + 0.7 * noise  # (B_txt, D)
    return images, sm.l2_normalize(texts)


def scale_bias(temperature=10.0, bias=-10.0, dtype=torch.float64, shape=(1,)):
    """(logit_scale, logit_bias) tensors as SiglipModel stores them: the log of the temperature, and the bias."""
    return (torch.full(shape, math.log(temperature), dtype=dtype), torch.full(shape, bias, dtype=dtype))


def described(B, temperature, bias):
    return f"B={B}, temperature exp(logit_scale)={temperature:g}, logit_bias={bias:g}"


def oracle_logits_grad(logits):
    """dL/dlogits by autograd through siglip_min.sigmoid_loss, its pair_logits replaced by the given logits."""
    leaf = logits.detach().clone().requires_grad_(True)  # (B, B)
    dummy = torch.zeros(leaf.shape[0], 1, dtype=leaf.dtype)  # (B, 1): sigmoid_loss checks the pairs' shapes only
    with replaced(sm, pair_logits=lambda *args: leaf):
        sm.sigmoid_loss(dummy, dummy, None, None).backward()
    return leaf.grad  # (B, B)


def grads(loss, inputs, names, what):
    """The gradients of loss with respect to inputs; advice when the loss or one input is cut from the graph."""
    if not torch.is_tensor(loss) or not loss.requires_grad:
        raise AssertionError(f"{what}: the loss carries no gradient (got {type(loss).__name__}); keep every step a "
                             f"torch operation on the inputs (no .item(), no NumPy, no torch.no_grad)")
    found = torch.autograd.grad(loss, inputs, allow_unused=True)
    for name, grad in zip(names, found):
        if grad is None:
            hint = " (is it left out of the logits?)" if name in ("logit_bias", "logit_scale") else ""
            raise AssertionError(f"{what}: no gradient reaches {name}{hint}")
    return found


# logits --------------------------------------------------------------------------------------------------------

def check_logits(student, B_img, B_txt, D, seed, temperature=10.0, bias=-10.0, dtype=torch.float64, shape=(1,)):
    images, texts = pairs(B_img, D, seed, dtype, B_txt=B_txt)
    scale, b = scale_bias(temperature, bias, dtype, shape)
    got = student.pair_logits(images, texts, scale, b)
    want = sm.pair_logits(images, texts, scale, b)  # (B_txt, B_img)
    similarities = texts @ images.T  # (B_txt, B_img)
    if tuple(getattr(got, "shape", ())) == (B_img, B_txt) and B_img != B_txt:
        hint = " (your values are the transpose of the right ones)" if matches(got, want.T) else ""
        raise AssertionError(f"pair_logits: shape ({B_img}, {B_txt}) is (B_img, B_txt); rows must be texts and "
                             f"columns images, (B_txt, B_img) = ({B_txt}, {B_img}): text_embeds @ image_embeds.T{hint}")
    check_shape(got, want.shape, f"pair_logits of {B_img} images and {B_txt} texts")
    if matches(got, want, **TIGHT):
        return
    if matches(got, similarities * scale + b):
        raise AssertionError(f"pair_logits: logit_scale is the log of the temperature (paper §3: t = exp(t')); "
                             f"multiply by logit_scale.exp() = {temperature:g}, not by logit_scale = {math.log(temperature):.4g}")
    if matches(got, (similarities + b) * scale.exp()):
        raise AssertionError("pair_logits: the bias is added after scaling: t * <y, x> + b, not t * (<y, x> + b)")
    if matches(got, similarities * scale.exp()):
        raise AssertionError(f"pair_logits: logit_bias ({bias:g}) is not added to the scaled similarities")
    check_close(got, want, f"pair_logits ({dtype})", **(TIGHT if dtype == torch.float64 else {}))


def test_logits_match(student, reference):
    check_logits(student, B_img=3, B_txt=4, D=5, seed=0)


def test_logits_gradients_reach_scale_and_bias(student, reference):
    images, texts = pairs(3, 4, seed=1)
    scale, bias = (t.requires_grad_(True) for t in scale_bias(5.0, -3.0))
    got = grads(student.pair_logits(images, texts, scale, bias).sum(), (scale, bias), ("logit_scale", "logit_bias"),
                "pair_logits(...).sum()")
    want = torch.autograd.grad(sm.pair_logits(images, texts, scale, bias).sum(), (scale, bias))
    for name, g, w in zip(("logit_scale", "logit_bias"), got, want):
        check_close(g, w, f"gradient of pair_logits(...).sum() with respect to {name}", **TIGHT)


### BEGIN HIDDEN TESTS
def test_logits_other_shapes(student, reference):
    check_logits(student, B_img=1, B_txt=6, D=3, seed=2, temperature=1.0, bias=2.5)
    check_logits(student, B_img=7, B_txt=2, D=8, seed=3, temperature=117.0, bias=-12.0, shape=())  # 0-dim params
    check_logits(student, B_img=5, B_txt=5, D=16, seed=4, dtype=torch.float32)
### END HIDDEN TESTS


# sigmoid_loss --------------------------------------------------------------------------------------------------

def student_loss(student, reference, *args):
    with from_reference(student, reference, "pair_logits"):
        return student.sigmoid_loss(*args)


def full_loss_with(images, texts, scale, bias, z):
    """-sum log sigmoid(z * logits) / B for a given label matrix z (B, B): the loss of a known mistake."""
    logits = sm.pair_logits(images, texts, scale, bias)  # (B, B)
    return -torch.nn.functional.logsigmoid(z * logits).sum() / images.shape[0]  # ()


def check_loss(student, reference, images, texts, scale, bias, what, tolerance=TIGHT):
    got = student_loss(student, reference, images, texts, scale, bias)
    want = sm.sigmoid_loss(images, texts, scale, bias)  # ()
    B = images.shape[0]
    if torch.is_tensor(got) and not torch.isfinite(got).all():
        raise AssertionError(f"sigmoid_loss is {got.item()} for {what}: the logits reach about "
                             f"{sm.pair_logits(images, texts, scale, bias).abs().max().item():.3g} there. Use "
                             f"F.logsigmoid(x): torch.log(torch.sigmoid(x)) is log(0) = -inf once sigmoid underflows")
    if matches(got, want, **tolerance):
        return
    if float(bias.abs().max()) > 0 and matches(got, sm.sigmoid_loss(images, texts, scale, torch.zeros_like(bias)),
                                                   **tolerance):
        raise AssertionError(f"sigmoid_loss: logit_bias is left out of the loss: yours equals the loss at "
                             f"logit_bias = 0 ({what}); the logits must be t * <y_i, x_j> + logit_bias (paper §3: "
                             f"the learnt bias b, initialised at -10): pass logit_bias on to pair_logits")
    if B > 1 and matches(got, want / B, **tolerance):
        raise AssertionError(f"sigmoid_loss: yours is the mean over all B*B = {B * B} pairs; the paper (and "
                             f"transformers) divide the sum over all pairs by B = {B}, not by B*B")
    if B > 1 and matches(got, want * B, **tolerance):
        raise AssertionError(f"sigmoid_loss: yours is the sum over all pairs; divide it by the batch size B = {B}")
    eye = torch.eye(B, dtype=images.dtype)  # (B, B)
    mistakes = {"every pair is treated as a negative (z = -1 everywhere); the diagonal pairs (image i, text i) "
                "match: z_ii = +1": -torch.ones_like(eye),
                "the labels are the wrong way round: z = +1 for the matching pairs (the diagonal), -1 for every "
                "other pair": 1 - 2 * eye,
                "every pair is treated as a positive (z = +1 everywhere); only the diagonal pairs match, the "
                "others have z = -1": torch.ones_like(eye)}
    for advice, z in mistakes.items():
        if matches(got, full_loss_with(images, texts, scale, bias, z), **tolerance):
            raise AssertionError(f"sigmoid_loss: {advice}")
    check_close(got, want, f"sigmoid_loss for {what}", **tolerance)


def test_sigmoid_loss_match(student, reference):
    images, texts = pairs(6, 8, seed=10)
    check_loss(student, reference, images, texts, *scale_bias(10.0, -10.0), described(6, 10.0, -10.0))


def test_sigmoid_loss_block_sum(student, reference):
    """The block helper the chunked loss uses: a square block with its positives, a rectangular negatives-only one."""
    images, texts = pairs(4, 6, seed=11)
    scale, bias = scale_bias(8.0, -4.0)
    with from_reference(student, reference, "pair_logits"):
        for B_txt, positives in ((4, True), (3, False)):
            got = student.block_loss_sum(images, texts[:B_txt], scale, bias, positives)
            want = sm.pairwise_loss_sum(images, texts[:B_txt], scale, bias, positives)
            if matches(got, sm.pairwise_loss_sum(images, texts[:B_txt], scale, 0 * bias, positives), **TIGHT):
                raise AssertionError("block_loss_sum: logit_bias is left out: yours equals the block's loss at "
                                     "logit_bias = 0; pass logit_bias on to pair_logits")
            check_close(got, want, f"block_loss_sum of 4 images and {B_txt} texts, positives={positives} (the sum "
                                   f"of -log sigmoid(z * logits) over the block, not divided by anything)", **TIGHT)


def test_sigmoid_loss_same_permutation_of_pairs(student, reference):
    """Reordering the pairs (the same permutation for images and texts) must leave the loss as it is."""
    @FEW
    @given(st.integers(2, 8), st.integers(1, 6), st.integers(0, 2**16), st.data())
    def check(B, D, seed, data):
        images, texts = pairs(B, D, seed)
        order = data.draw(st.permutations(range(B)), label="order")
        scale, bias = scale_bias(10.0, -5.0)
        before = student_loss(student, reference, images, texts, scale, bias)
        after = student_loss(student, reference, images[order], texts[order], scale, bias)
        check_close(after, before, f"sigmoid_loss after reordering the {B} pairs by {order} (the same permutation "
                                   f"for images and texts: every pair kept, so the loss must not change; the labels "
                                   f"z_ij follow the pairs, +1 exactly where i == j)", **TIGHT)
        check_loss(student, reference, images[order], texts[order], scale, bias, described(B, 10.0, -5.0))
    check()


def test_sigmoid_loss_extreme_logits(student, reference):
    """Temperatures of 1e3 to 1e4, texts equal to or opposite their images: logits near +-1e4, in float32."""
    @FEW
    @given(st.floats(math.log(1e3), math.log(1e4)), st.sampled_from([1.0, -1.0]), st.sampled_from([0.0, -10.0]),
           st.integers(1, 6), st.integers(0, 2**16))
    def check(log_temperature, sign, bias, B, seed):
        images, _ = pairs(B, 8, seed, dtype=torch.float32)
        texts = sign * images  # (B, 8): every text the same as (or the opposite of) its image
        scale, b = scale_bias(math.exp(log_temperature), bias, dtype=torch.float32)
        what = f"{described(B, math.exp(log_temperature), bias)}, texts {'equal to' if sign > 0 else 'opposite'} their images (float32)"
        check_loss(student, reference, images, texts, scale, b, what, tolerance=dict(atol=1e-3, rtol=1e-5))
    check()


def check_loss_grads(student, reference, images, texts, scale, bias, what):
    inputs = tuple(t.clone().requires_grad_(True) for t in (images, texts, scale, bias))
    names = ("image_embeds", "text_embeds", "logit_scale", "logit_bias")
    got = grads(student_loss(student, reference, *inputs), inputs, names, f"sigmoid_loss ({what})")
    want = torch.autograd.grad(sm.sigmoid_loss(*inputs), inputs)
    for name, g, w in zip(names, got, want):
        if not torch.isfinite(g).all():
            raise AssertionError(f"sigmoid_loss ({what}): the gradient with respect to {name} holds NaN or inf; "
                                 f"F.logsigmoid has a finite gradient everywhere, log(sigmoid(x)) does not")
        check_close(g, w, f"gradient of sigmoid_loss with respect to {name} ({what})", **TIGHT)


def test_sigmoid_loss_gradients(student, reference):
    images, texts = pairs(5, 6, seed=12)
    check_loss_grads(student, reference, images, texts, *scale_bias(10.0, -10.0), described(5, 10.0, -10.0))
    check_loss_grads(student, reference, images, images, *scale_bias(1e4, -10.0), "texts equal to their images, "
                     + described(5, 1e4, -10.0))


### BEGIN HIDDEN TESTS
def test_sigmoid_loss_other_batches(student, reference):
    for B, D, seed, temperature, bias in ((1, 4, 13, 10.0, -10.0), (16, 32, 14, 117.0, -12.5), (3, 2, 15, 0.5, 3.0)):
        images, texts = pairs(B, D, seed)
        check_loss(student, reference, images, texts, *scale_bias(temperature, bias), described(B, temperature, bias))
        check_loss_grads(student, reference, images, texts, *scale_bias(temperature, bias),
                         described(B, temperature, bias))
    images, texts = pairs(9, 12, seed=16, dtype=torch.float32)
    check_loss(student, reference, images, texts, *scale_bias(10.0, -10.0, torch.float32, shape=()),
               described(9, 10.0, -10.0) + " (float32, 0-dim parameters)", tolerance=dict(atol=1e-5, rtol=1e-5))
### END HIDDEN TESTS


# chunked -------------------------------------------------------------------------------------------------------

def student_chunked(student, reference, *args):
    with from_reference(student, reference, "pair_logits", "block_loss_sum"):
        return student.chunked_sigmoid_loss(*args)


def check_chunked(student, reference, images, texts, scale, bias, num_chunks, tolerance=TIGHT):
    B = images.shape[0]
    got = student_chunked(student, reference, images, texts, scale, bias, num_chunks)
    want = sm.sigmoid_loss(images, texts, scale, bias)  # ()
    what = f"B={B}, num_chunks={num_chunks}"
    if matches(got, want, **tolerance):
        return
    devices = list(zip(images.tensor_split(num_chunks), texts.tensor_split(num_chunks)))
    diagonal_positives = sum(sm.pairwise_loss_sum(x, y, scale, bias, True) for x, y in devices) / B  # ()
    diagonal_negatives = sum(sm.pairwise_loss_sum(x, y, scale, bias, False) for x, y in devices) / B  # ()
    if matches(got, want + diagonal_positives, **tolerance) or matches(got, want + diagonal_negatives, **tolerance):
        raise AssertionError(f"chunked_sigmoid_loss ({what}): the positive (diagonal) blocks are counted more than "
                             f"once: yours exceeds the full loss by exactly the terms of each device's own block. "
                             f"Score a device's own images and texts once, at step 0 (positives=True); the ring steps "
                             f"s = 1 .. num_chunks - 1 score only other devices' texts (positives=False)")
    if num_chunks > 1 and matches(got, diagonal_positives, **tolerance):
        raise AssertionError(f"chunked_sigmoid_loss ({what}): only the diagonal blocks (step 0) are scored; the "
                             f"negatives between devices (steps 1 .. num_chunks - 1, texts passed along the ring) "
                             f"are missing")
    if num_chunks > 1 and matches(got, want * num_chunks, **tolerance):
        raise AssertionError(f"chunked_sigmoid_loss ({what}): divide the sum of all blocks by the full batch size "
                             f"B = {B}, not by the chunk size")
    every_block_positive = sum(sm.pairwise_loss_sum(x, texts.tensor_split(num_chunks)[(d + s) % num_chunks], scale,
                                                    bias, True)
                               for s in range(num_chunks) for d, (x, _) in enumerate(devices)) / B  # ()
    if num_chunks > 1 and matches(got, every_block_positive, **tolerance):
        raise AssertionError(f"chunked_sigmoid_loss ({what}): the blocks of steps 1 .. num_chunks - 1 pair images "
                             f"with other devices' texts: they hold no positives, score them with positives=False")
    check_close(got, want, f"chunked_sigmoid_loss ({what}) against the full loss", **tolerance)


def test_chunked_match(student, reference):
    images, texts = pairs(6, 5, seed=20)
    for num_chunks in (1, 2, 3, 6, 4):  # 4 does not divide 6: chunks of 2, 2, 1, 1
        check_chunked(student, reference, images, texts, *scale_bias(10.0, -10.0), num_chunks)


def test_chunked_every_chunk_count(student, reference):
    """Any B and any 1 <= num_chunks <= B, dividing B or not, give the full loss."""
    @FEW
    @given(st.integers(1, 9).flatmap(lambda B: st.tuples(st.just(B), st.integers(1, B))), st.integers(1, 6),
           st.integers(0, 2**16), st.floats(-10.0, 5.0))
    def check(sizes, D, seed, bias):
        B, num_chunks = sizes
        images, texts = pairs(B, D, seed)
        check_chunked(student, reference, images, texts, *scale_bias(10.0, bias), num_chunks)
    check()


class LargestBlock(TorchFunctionMode):
    """Records the shapes of the tensors torch computes that could be logits or labels: 2-D or more, no axis of
    the embedding width D (which the embeddings' chunks, and their transposes, have)."""

    def __init__(self, width):
        super().__init__()
        self.width, self.shapes = width, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t) and t.dim() >= 2 and self.width not in t.shape:
                self.shapes.append(tuple(t.shape))
        return out


def check_blocks(student, reference, B, D, num_chunks, seed):
    images, texts = pairs(B, D, seed)
    largest = -(-B // num_chunks)  # the biggest chunk tensor_split makes
    with LargestBlock(D) as recorder:
        student_chunked(student, reference, images, texts, *scale_bias(), num_chunks)
    too_big = [shape for shape in recorder.shapes if max(shape) > largest]
    assert not too_big, (f"chunked_sigmoid_loss (B={B}, num_chunks={num_chunks}) built a tensor of shape "
                         f"{max(too_big, key=lambda s: math.prod(s))}; a device scores at most {largest} x {largest} "
                         f"pairs at once. Never form the B x B logits or labels: split the batch with tensor_split "
                         f"and score block by block (paper §3.3)")


def test_chunked_never_builds_the_full_matrix(student, reference):
    check_blocks(student, reference, B=12, D=5, num_chunks=3, seed=21)
    check_blocks(student, reference, B=12, D=5, num_chunks=5, seed=22)  # chunks of 3, 3, 2, 2, 2


### BEGIN HIDDEN TESTS
def test_chunked_other_batches(student, reference):
    for B, D, num_chunks, seed in ((7, 3, 3, 23), (7, 3, 7, 24), (1, 4, 1, 25), (16, 8, 5, 26)):
        images, texts = pairs(B, D, seed)
        check_chunked(student, reference, images, texts, *scale_bias(117.0, -12.0), num_chunks)
    check_blocks(student, reference, B=17, D=6, num_chunks=4, seed=27)


def test_chunked_extreme_logits_and_gradients(student, reference):
    images, _ = pairs(6, 8, seed=28, dtype=torch.float32)
    for sign in (1.0, -1.0):
        check_chunked(student, reference, images, sign * images, *scale_bias(1e4, -10.0, torch.float32), 4,
                      tolerance=dict(atol=1e-3, rtol=1e-5))
    images, texts = pairs(7, 5, seed=29)
    inputs = tuple(t.clone().requires_grad_(True) for t in (images, texts, *scale_bias()))
    names = ("image_embeds", "text_embeds", "logit_scale", "logit_bias")
    got = grads(student_chunked(student, reference, *inputs, 3), inputs, names, "chunked_sigmoid_loss")
    want = torch.autograd.grad(sm.sigmoid_loss(*inputs), inputs)
    for name, g, w in zip(names, got, want):
        check_close(g, w, f"gradient of chunked_sigmoid_loss (B=7, num_chunks=3) with respect to {name}", **TIGHT)
### END HIDDEN TESTS


# gradient ------------------------------------------------------------------------------------------------------

def check_logits_grad(student, logits, what, tolerance=TIGHT):
    got = student.logits_grad(logits.clone())
    want = oracle_logits_grad(logits)  # (B, B)
    B = logits.shape[0]
    check_shape(got, want.shape, f"logits_grad of {what}")
    if matches(got, want, **tolerance):
        return
    if matches(got, -want, **tolerance) and not matches(got, want, **tolerance):
        raise AssertionError(f"logits_grad ({what}): the sign is flipped: the loss is MINUS the log-likelihood "
                             f"(a positive pair's gradient is negative: raising its logit lowers the loss)")
    if B > 1 and matches(got, want * B, **tolerance):
        raise AssertionError(f"logits_grad ({what}): divide by the batch size B = {B} (the loss is the sum over "
                             f"pairs divided by B)")
    if B > 1 and matches(got, want / B, **tolerance):
        raise AssertionError(f"logits_grad ({what}): divided by B*B; the loss divides its sum by B = {B} only")
    z = 2 * torch.eye(B, dtype=logits.dtype) - 1  # (B, B)
    if matches(got, -z * torch.sigmoid(z * logits) / B, **tolerance):
        raise AssertionError(f"logits_grad ({what}): d/dx log sigmoid(x) = 1 - sigmoid(x) = sigmoid(-x); yours "
                             f"has sigmoid(+z_ij l_ij) where the chain rule gives sigmoid(-z_ij l_ij)")
    if torch.is_tensor(got) and not torch.isfinite(got).all():
        raise AssertionError(f"logits_grad ({what}): NaN or inf where |logits| reach "
                             f"{logits.abs().max().item():.3g}; use torch.sigmoid, exp(-x) / (1 + exp(-x)) is inf / inf")
    check_close(got, want, f"logits_grad ({what}) against autograd of the loss", **tolerance)


def test_gradient_matches_autograd(student, reference):
    images, texts = pairs(5, 6, seed=30)
    check_logits_grad(student, sm.pair_logits(images, texts, *scale_bias()), "the logits of 5 pairs")


def test_gradient_any_logits(student, reference):
    """Any square matrix of logits, positive or negative on and off the diagonal."""
    @PROPERTIES
    @given(st.integers(1, 6).flatmap(lambda B: st.lists(st.floats(-40.0, 40.0), min_size=B * B, max_size=B * B)))
    def check(values):
        B = math.isqrt(len(values))
        logits = torch.tensor(values, dtype=torch.float64).view(B, B)  # (B, B)
        check_logits_grad(student, logits, f"the {B} x {B} logits {[round(v, 3) for v in values]}")
    check()


def test_gradient_extreme_logits(student, reference):
    signs = torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, 1.0]])  # (3, 3)
    check_logits_grad(student, 1e4 * signs, "logits of +-1e4 (float32)", tolerance=dict(atol=1e-7, rtol=1e-6))


### BEGIN HIDDEN TESTS
def test_gradient_other_batches(student, reference):
    for B, D, seed in ((1, 3, 31), (16, 8, 32)):
        images, texts = pairs(B, D, seed)
        check_logits_grad(student, sm.pair_logits(images, texts, *scale_bias(117.0, -12.0)), f"the logits of {B} pairs")
    images, texts = pairs(8, 8, seed=33, dtype=torch.float32)
    check_logits_grad(student, sm.pair_logits(images, texts, *scale_bias(dtype=torch.float32)),
                      "the logits of 8 pairs (float32)", tolerance=dict(atol=1e-7, rtol=1e-5))
### END HIDDEN TESTS
