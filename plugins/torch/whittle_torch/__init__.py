"""whittle's PyTorch backend plugin (see README.md)."""
