"""The real MNIST files in ../shared: imported as the authors released them (md5), split as the project says
(the test split alone: 8k/2k; all four files: the original 10k test split, validation carved from the 60k)."""

import numpy as np
import torch

from hyperforget.config.params import DataConfig
from hyperforget.data.datasets import prepare
from hyperforget.data.readers import MNIST_MD5, check_mnist_md5, import_raw


def test_mnist_test_split_alone_is_split_8k_2k(tmp_path, mnist_t10k):
    cfg = DataConfig(name="mnist", source=str(mnist_t10k), raw_dir=str(tmp_path))
    import_raw(cfg)
    ds = prepare(cfg)
    assert len(ds.y_test) == 2000
    assert len(ds.y_train) + len(ds.y_val) == 8000
    assert ds.input_shape == (1, 28, 28)
    assert np.bincount(ds.y_test.numpy()).tolist() == [196, 227, 206, 202, 196, 178, 192, 206, 195, 202]


def test_full_mnist_keeps_the_original_test_split_and_carves_val_from_train(tmp_path, mnist_full):
    """The four original files: test = the 10k t10k images, validation carved (seeded, stratified) from the 60k."""
    assert set(check_mnist_md5(mnist_full).values()) == set(MNIST_MD5.values())
    cfg = DataConfig(name="mnist", source=str(mnist_full), raw_dir=str(tmp_path), val_fraction=0.1)
    import_raw(cfg)
    ds = prepare(cfg)
    assert len(ds.y_test) == 10000 and len(ds.y_train) + len(ds.y_val) == 60000
    assert abs(len(ds.y_val) - 6000) <= 5  # 10% of every class, rounded per class
    assert np.bincount(ds.y_test.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train_counts = np.bincount(ds.y_train.numpy()) + np.bincount(ds.y_val.numpy())
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.allclose(np.bincount(ds.y_val.numpy()) / train_counts, 0.1, atol=1e-3)  # stratified
    again = prepare(cfg)
    assert torch.equal(again.y_val, ds.y_val) and torch.equal(again.x_val, ds.x_val)  # seeded
