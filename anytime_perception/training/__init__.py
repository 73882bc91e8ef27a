"""Offline training of anytime models (PyTorch). Produces checkpoints for ``export``."""
