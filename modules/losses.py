"""Training losses of the synthesizer (VITS definitions), computed in float32 even under autocast: in
fp16 the squared GAN scores and the exponentials of the KL term overflow or lose precision. The sums
start from a Python 0 so that they adopt the device of the first term."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def feature_loss(fmap_r: Sequence[Sequence[torch.Tensor]],
                 fmap_g: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Feature matching: 2 * sum over discriminators and layers of mean |real - generated| (scalar); real
    maps are detached so the loss only trains the generator."""
    loss: torch.Tensor | float = 0.0
    for maps_r, maps_g in zip(fmap_r, fmap_g):
        for r, g in zip(maps_r, maps_g):
            loss = loss + torch.mean(torch.abs(r.float().detach() - g.float()))
    return torch.as_tensor(loss) * 2


def discriminator_loss(disc_real_outputs: Sequence[torch.Tensor], disc_generated_outputs: Sequence[torch.Tensor]
                       ) -> tuple[torch.Tensor, list[float], list[float]]:
    """Least-squares GAN loss of the discriminators on scores [B, T_k]: sum_k mean((1 - D_k(y))^2) +
    mean(D_k(y_hat)^2). Returns (loss, real losses, generated losses), the lists as Python floats (logged)."""
    loss: torch.Tensor | float = 0.0
    r_losses: list[float] = []
    g_losses: list[float] = []
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
        r_loss = torch.mean((1 - dr.float()) ** 2)
        g_loss = torch.mean(dg.float() ** 2)
        loss = loss + (r_loss + g_loss)
        r_losses.append(r_loss.item())
        g_losses.append(g_loss.item())
    return torch.as_tensor(loss), r_losses, g_losses


def generator_loss(disc_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares adversarial loss of the generator on scores [B, T_k]: (sum_k mean((1 - D_k(y_hat))^2),
    per-discriminator scalar tensors)."""
    loss: torch.Tensor | float = 0.0
    gen_losses: list[torch.Tensor] = []
    for dg in disc_outputs:
        item = torch.mean((1 - dg.float()) ** 2)
        gen_losses.append(item)
        loss = loss + item
    return torch.as_tensor(loss), gen_losses


def kl_loss(z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor,
            z_mask: torch.Tensor) -> torch.Tensor:
    """VITS KL term between flow(z) ``z_p`` and the prior (tensors [B, C, T], mask [B, 1, T]): a scalar,
    sum(((logs_p - logs_q - 0.5) + 0.5 (z_p - m_p)^2 e^{-2 logs_p}) * mask) / sum(mask) (channels summed)."""
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)
