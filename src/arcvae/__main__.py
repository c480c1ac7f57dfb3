"""``python -m arcvae`` runs the command line."""

from arcvae.cli import main

main()
