"""Datasets: the project's own safe readers (IDX, CIFAR-10 binary), preparation, splits and forget splits."""
