"""Assignment 4: SigLIP's sigmoid loss, its chunked (multi-device) form, and its gradient, written out in torch.

Fill in every `raise NotImplementedError()`; the comment above each says what the piece does and the shapes it
takes. Check your work with `python course/grade.py 04_loss FOLDER --public`.

Reference: Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", §3 (the loss) and §3.3 (its efficient
chunked implementation). transformers computes the same value in SiglipModel.forward(return_loss=True)
(modeling_siglip: the `loss` built from `logits_per_text` with logsigmoid); siglip_min.py's sigmoid_loss is the
oracle the grader compares with.

Notation: B matching pairs, image i goes with text i. image_embeds (B, D) and text_embeds (B, D) are L2-normalised.
logit_scale is the STORED log temperature t' (a tensor of shape (1,) or ()), the temperature is t = exp(t');
logit_bias is b (same shapes). The logit of text i and image j is t * <y_i, x_j> + b; its label z_ij is +1 when
i == j (a matching pair) and -1 otherwise.
"""
import torch
import torch.nn.functional as F


def pair_logits(image_embeds, text_embeds, logit_scale, logit_bias):
    """(B_img, D), (B_txt, D) -> (B_txt, B_img): logits[i, j] = exp(logit_scale) * <text_i, image_j> + logit_bias.

    Rows are texts and columns images, as transformers' logits_per_text. The two batches may differ in size (the
    chunked loss scores a device's images against another device's texts).
    """
    # The temperature is stored as a log (paper §3, t = exp(t')): exponentiate it. Keep everything a tensor op
    # (no .item()) so that gradients reach logit_scale and logit_bias.
    ### BEGIN SOLUTION
    return text_embeds @ image_embeds.T * logit_scale.exp() + logit_bias  # (B_txt, B_img)
    ### END SOLUTION


def block_loss_sum(image_embeds, text_embeds, logit_scale, logit_bias, positives):
    """-sum over one block of log sigmoid(z_ij * logits_ij), NOT divided by anything: a 0-dim tensor.

    positives=True: the block pairs image i with text i (square), so z = +1 on its diagonal and -1 elsewhere.
    positives=False: every pair of the block is a negative, z = -1 everywhere (the block may be rectangular).
    """
    # Use pair_logits (the grader swaps in its own to test this part alone). Build z (+1 / -1) with torch.eye and
    # torch.ones_like. Take F.logsigmoid(x), never torch.log(torch.sigmoid(x)): sigmoid(-1e4) is 0.0 in floating
    # point and log(0) = -inf, where logsigmoid gives the exact -1e4.
    ### BEGIN SOLUTION
    logits = pair_logits(image_embeds, text_embeds, logit_scale, logit_bias)  # (B_txt, B_img)
    z = -torch.ones_like(logits)  # (B_txt, B_img): every pair a negative...
    if positives:
        z = z + 2 * torch.eye(*logits.shape, dtype=logits.dtype, device=logits.device)  # ...but the diagonal
    return -F.logsigmoid(z * logits).sum()  # ()
    ### END SOLUTION


def sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias):
    """The SigLIP loss (paper §3): L = -1/B sum_i sum_j log sigmoid(z_ij (t <x_i, y_j> + b)), a 0-dim tensor.

    A sum over all B*B pairs divided by B (not by B*B): transformers sums each row and takes the mean of the rows.
    """
    # One block holding the whole batch, its positives on the diagonal: use block_loss_sum.
    ### BEGIN SOLUTION
    return block_loss_sum(image_embeds, text_embeds, logit_scale, logit_bias, positives=True) / image_embeds.shape[0]  # ()
    ### END SOLUTION


def chunked_sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, num_chunks):
    """sigmoid_loss computed block by block as on num_chunks devices (paper §3.3), never building the B x B matrix.

    Device d holds chunk d of the images and chunk d of the texts (torch.tensor_split: the sizes differ by at most
    one when num_chunks does not divide B). Step 0: every device scores its own images against its own texts, the
    block that holds its positives. Steps s = 1 .. num_chunks - 1: the texts move along the ring, device d scores its
    images against the texts of device (d + s) % num_chunks, a negatives-only block. The sum of all blocks, divided
    by the full batch size B, is the full loss. 1 <= num_chunks <= B.
    """
    # Use block_loss_sum for every block (the grader swaps in its own to test this part alone). Each (image chunk,
    # text chunk) pair of devices must be scored exactly once: the diagonal blocks at step 0 only.
    ### BEGIN SOLUTION
    images = image_embeds.tensor_split(num_chunks)  # num_chunks x (about B / num_chunks, D)
    texts = text_embeds.tensor_split(num_chunks)  # num_chunks x (about B / num_chunks, D)
    total = sum(block_loss_sum(x, y, logit_scale, logit_bias, positives=True) for x, y in zip(images, texts))  # ()
    for step in range(1, num_chunks):
        for device, device_images in enumerate(images):
            visiting_texts = texts[(device + step) % num_chunks]  # (about B / num_chunks, D)
            total = total + block_loss_sum(device_images, visiting_texts, logit_scale, logit_bias, positives=False)  # ()
    return total / image_embeds.shape[0]  # ()
    ### END SOLUTION


def logits_grad(logits):
    """(B, B) -> (B, B): dL/dlogits of the sigmoid loss, by hand, for the B x B logits of one batch.

    L = -1/B sum_ij log sigmoid(z_ij l_ij): derive dL/dl_ij on paper first (each term holds one logit only; use
    d/dx log sigmoid(x) = 1 - sigmoid(x) = sigmoid(-x)), then write it out. No autograd: a formula of the logits.
    """
    # Build z as in block_loss_sum. torch.sigmoid is stable for any input; exp(-x) / (1 + exp(-x)) is not (inf / inf).
    ### BEGIN SOLUTION
    B = logits.shape[0]
    z = 2 * torch.eye(B, dtype=logits.dtype, device=logits.device) - 1  # (B, B): +1 diagonal, -1 elsewhere
    return -z * torch.sigmoid(-z * logits) / B  # (B, B)
    ### END SOLUTION
