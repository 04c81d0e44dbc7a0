"""Data set loaders (CIFAR-10 for encoder pretraining)."""
