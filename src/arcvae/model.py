"""The Beta-VAE for 16x16 colour grids, and the colours it predicts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ArcvaeError


class BetaVAE(nn.Module):
    """Convolutional VAE over one-hot ``[B, C, 16, 16]`` grids (801,034 parameters at ``latent_dim=32``).

    Encoder: Conv 10->32 (k3 s1), Conv 32->64 (k3 s2), Conv 64->128 (k3 s2), each
    with ReLU; flatten to 2048; Linear 2048->128, ReLU; heads ``mu`` and ``logvar``
    (Linear 128->latent), clamped to [-5, 5] and [-20, 2]. Decoder: Linear
    latent->128, ReLU; Linear 128->2048, ReLU; reshape [128, 4, 4];
    ConvTranspose 128->64 and 64->32 (k4 s2 p1), ReLU; Conv 32->10 (k3) to logits.

    Example:
        >>> model = BetaVAE()
        >>> sum(p.numel() for p in model.parameters())
        801034
        >>> logits, mu, logvar = model(torch.zeros(2, 16, 16, dtype=torch.long))
        >>> tuple(logits.shape), tuple(mu.shape)
        ((2, 10, 16, 16), (2, 32))
    """

    def __init__(self, num_colors: int = 10, latent_dim: int = 32) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ArcvaeError(f"Expected latent_dim >= 1, but got {latent_dim}")
        self.num_colors = num_colors
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(num_colors, 32, 3, stride=1, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 128), nn.ReLU(),
        )  # fmt: skip
        self.fc_mu = nn.Linear(128, latent_dim)
        self.fc_logvar = nn.Linear(128, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(),
            nn.Linear(128, 128 * 4 * 4), nn.ReLU(),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, num_colors, 3, stride=1, padding=1),
        )  # fmt: skip

    def encode(self, grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 16, 16]`` integer grids -> ``mu, logvar`` of shape ``[B, latent]``."""
        one_hot = F.one_hot(grids.long(), self.num_colors).permute(0, 3, 1, 2).float()
        h = self.encoder(one_hot)
        return self.fc_mu(h).clamp(-5.0, 5.0), self.fc_logvar(h).clamp(-20.0, 2.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, latent]`` -> logits ``[B, C, 16, 16]``."""
        return self.decoder(z)

    def forward(
        self, grids: torch.Tensor, *, sample: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``logits, mu, logvar``; samples ``z`` in training mode, uses ``mu`` in eval mode."""
        mu, logvar = self.encode(grids)
        if self.training if sample is None else sample:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted colour per pixel, ``[B, H, W]``: ``max(dim=1).indices``, the first maximum like
    ``argmax(dim=1)``, which is ~40x slower on CPU for ``[B, 10, 16, 16]`` logits."""
    return logits.max(dim=1).indices


@torch.no_grad()
def reconstruct(model: BetaVAE, grids: torch.Tensor | np.ndarray) -> np.ndarray:
    """The model's reconstructions of ``grids`` ``[N, 16, 16]``: decoded from ``mu`` in eval mode, as uint8 colours."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = torch.as_tensor(np.asarray(grids) if isinstance(grids, np.ndarray) else grids).to(device).long()
    logits, _, _ = model(batch)
    model.train(was_training)
    return predictions(logits).to(torch.uint8).cpu().numpy()
