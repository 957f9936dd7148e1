"""The training step's UNet passes in chunks of the batch, with the batch's exact gradient.

The denoiser (and the mean pass of ``model.mean_head``) treats every patch of a batch on its
own: GroupNorm, attention and cross-attention never mix patches. Only two things couple a
batch: the disentangling loss of the fusion (one ratio over the whole batch) and the loss
averages over all in-mask bins of the batch. :func:`chunked_backward` therefore encodes the
condition of the whole batch once, runs the UNet passes and their backward one chunk of
patches at a time (each chunk's loss weighted by its share of the batch's in-mask bins), and
back-propagates the gathered gradient of the condition through the encoders once, together
with the disentangling loss. The parameter gradients are those of one backward over the whole
batch (up to the order of float sums; dropout draws its masks chunk by chunk); t and ε are
drawn for the whole batch in the order :func:`diffst.diffusion.training_losses` draws them.

On a CPU, chunks of one patch cost no time and save most of the memory: at the paper's shape
(128 channels, HR 256, fp32, 2 cores) a batch of 4 in chunks of 1 took 19.1 s and 3.5 GiB
against 21.8 s and 9.9 GiB in one pass (BENCHMARKS.md, "The UNet in chunks of the batch").
:func:`resolve_unet_chunk` picks the chunk for ``train.unet_chunk = 0`` (automatic).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from diffst.config import ConfigError
from diffst.diffusion import DiffusionConfig, LossTerms, NoiseSchedule, training_losses
from diffst.diffusion.losses import draw_timesteps_and_noise
from diffst.models.config import ModelConfig
from diffst.models.model import DiffSTModel, cpu_chunk_patches

__all__ = ["chunked_backward", "resolve_unet_chunk"]


def resolve_unet_chunk(
    setting: int,
    model: ModelConfig,
    hr_size: int,
    batch_size: int,
    device: torch.device,
    *,
    distributed: bool = False,
    compiled: bool = False,
) -> int:
    """Patches per UNet pass of a training step (``batch_size`` means one pass).

    Parameters
    ----------
    setting
        ``train.unet_chunk``: patches per pass, or 0 for automatic: on a CPU, the chunks of
        inference on a CPU (:func:`diffst.models.model.cpu_chunk_patches`: the most patches
        whose widest UNet activation fits ``CPU_CHUNK_BYTES``); on CUDA, under DDP or with
        ``train.compile``, the whole batch.
    model, hr_size, batch_size, device
        The network's configuration, the HR patch side, patches per micro-batch and the device.
    distributed, compiled
        DDP (``torchrun``) or ``train.compile`` in use: both need one pass per micro-batch.
    """
    if setting < 0:
        raise ConfigError(f"train.unet_chunk: must be ≥ 0 (0 = automatic), got {setting}")
    if setting == 0:
        if device.type != "cpu" or distributed or compiled:
            return batch_size
        return cpu_chunk_patches(model.base_channels, hr_size, hr_size, batch_size)
    if setting < batch_size and (distributed or compiled):
        what = "DDP (torchrun) reduces gradients" if distributed else "train.compile traces"
        raise ConfigError(
            f"train.unet_chunk={setting} < train.batch_size={batch_size}: {what} once per "
            "micro-batch; set train.unet_chunk=0 (automatic) or lower train.batch_size and "
            "raise train.grad_accum instead"
        )
    return min(setting, batch_size)


def chunked_backward(
    model: DiffSTModel,
    schedule: NoiseSchedule,
    x0: Tensor,
    mask: Tensor,
    cfg: DiffusionConfig,
    chunk: int,
    *,
    lr: Tensor | None = None,
    tissue: Tensor | None = None,
    cells: Tensor | None = None,
    cell_score: Tensor | None = None,
    lr_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
) -> LossTerms:
    """Loss of one batch and ``scale ×`` its gradient, the UNet run ``chunk`` patches at a time.

    The same loss terms and parameter gradients as ``training_losses(...).total`` followed by
    ``(scale · total).backward()``, with the condition of
    ``model.encode_condition(lr, tissue, cells, cell_score, lr_mask)``. Gradients accumulate
    into ``.grad`` as ``backward`` does; the returned terms are detached.

    Parameters
    ----------
    x0, mask
        ``[B, G, H, W]`` normalised HR map and ``[B, 1, H, W]`` bins that count.
    chunk
        Patches per UNet pass (≥ 1).
    generator
        Source of t and ε for the whole batch.
    scale
        Factor of the back-propagated loss (``1 / train.grad_accum``).
    """
    if chunk < 1:
        raise ValueError(f"chunk: must be ≥ 1, got {chunk}")
    cond = model.encode_condition(lr, tissue, cells, cell_score, lr_mask, mean_pass=False)
    t, noise = draw_timesteps_and_noise(schedule, x0, cfg, generator)
    pairs: list[tuple[Tensor, Tensor]] = []  # (encoder output, its detached leaf)

    def cut(x: Tensor) -> Tensor:
        if not x.requires_grad:
            return x
        leaf = x.detach().requires_grad_()
        pairs.append((x, leaf))
        return leaf

    zero = torch.zeros((), dtype=torch.float32, device=x0.device)
    cut_cond = replace(
        cond, features=cut(cond.features), tokens=cut(cond.tokens),
        lr_up=None if cond.lr_up is None else cut(cond.lr_up),
        hr_image=None if cond.hr_image is None else cut(cond.hr_image),
        disentangle_loss=zero, mean=None,
    )  # fmt: skip
    bins = (mask > 0).sum()
    total_bins = bins.clamp_min(1).to(torch.float32)
    sums = {"total": zero, "simple": zero, "vb": zero, "mean": zero}
    for start in range(0, x0.shape[0], chunk):
        part = slice(start, start + chunk)
        c = cut_cond.select(part)
        if model.cfg.mean_head:
            c.mean = model.mean_pass(c)
        terms = training_losses(
            model, schedule, x0[part], c, mask[part], cfg, t=t[part], noise=noise[part]
        )
        share = (mask[part] > 0).sum().to(torch.float32) / total_bins
        (terms.total.float() * (share * scale)).backward()
        for name in sums:
            sums[name] = sums[name] + getattr(terms, name).detach().float() * share
    disentangle = cond.disentangle_loss.float()
    outputs: list[Tensor] = []
    grads: list[Tensor] = []
    for x, leaf in pairs:
        if leaf.grad is not None:
            outputs.append(x)
            grads.append(leaf.grad)
    if disentangle.requires_grad and cfg.disentangle_weight != 0:
        outputs.append(disentangle * (cfg.disentangle_weight * scale))
        grads.append(torch.ones_like(disentangle))
    if outputs:
        torch.autograd.backward(outputs, grads)
    disentangle = disentangle.detach()
    return LossTerms(
        total=sums["total"] + cfg.disentangle_weight * disentangle,
        simple=sums["simple"], vb=sums["vb"], disentangle=disentangle, mean=sums["mean"],
    )  # fmt: skip
