"""Training losses of the synthesizer (VITS definitions), computed in float32 even under autocast: in
fp16 the squared GAN scores and the exponentials of the KL term overflow or lose precision.

The sums start from a Python 0 so that they adopt the device of the first term.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def feature_loss(fmap_r: Sequence[Sequence[torch.Tensor]],
                 fmap_g: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Feature matching: 2 * sum over discriminators and layers of mean |real - generated|.

    fmap_r / fmap_g: per discriminator, per layer, feature maps of any matching shape. Real maps are
    detached so the loss only trains the generator. Returns a scalar tensor.
    """
    loss: torch.Tensor | float = 0.0
    for maps_r, maps_g in zip(fmap_r, fmap_g):
        for r, g in zip(maps_r, maps_g):
            loss = loss + torch.mean(torch.abs(r.float().detach() - g.float()))
    return torch.as_tensor(loss) * 2


def discriminator_loss(disc_real_outputs: Sequence[torch.Tensor], disc_generated_outputs: Sequence[torch.Tensor]
                       ) -> tuple[torch.Tensor, list[float], list[float]]:
    """Least-squares GAN loss of the discriminators: sum_k mean((1 - D_k(y))^2) + mean(D_k(y_hat)^2).

    Each output is a score tensor [B, T_k]. Returns (loss, per-discriminator real losses, per-discriminator
    generated losses); the per-item values are Python floats, as in 4.1 (they are only logged).
    """
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
    """Least-squares adversarial loss of the generator: sum_k mean((1 - D_k(y_hat))^2).

    disc_outputs: score tensors [B, T_k]. Returns (loss, per-discriminator scalar tensors).
    """
    loss: torch.Tensor | float = 0.0
    gen_losses: list[torch.Tensor] = []
    for dg in disc_outputs:
        item = torch.mean((1 - dg.float()) ** 2)
        gen_losses.append(item)
        loss = loss + item
    return torch.as_tensor(loss), gen_losses


def kl_loss(z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor,
            z_mask: torch.Tensor) -> torch.Tensor:
    """KL term of VITS between the flowed posterior sample and the prior, averaged over valid frames.

    z_p, logs_q: [B, C, T] (flow(z) and the posterior log-std); m_p, logs_p: [B, C, T] prior mean and
    log-std; z_mask: [B, 1, T]. Returns sum(((logs_p - logs_q - 0.5) + 0.5 (z_p - m_p)^2 e^{-2 logs_p})
    * mask) / sum(mask), a scalar (the channel sum is not divided out).
    """
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)
