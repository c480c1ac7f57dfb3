"""arcvae: a Beta-VAE trainer for 16x16 ARC-style colour grids, weighted with classweights."""

__version__ = "0.1.0"
