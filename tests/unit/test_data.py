"""Data: safe IDX/CIFAR readers, deterministic raw export, splits, and the forget/retain split."""

import gzip

import numpy as np
import pytest
import torch

from hyperforget.base.errors import DataError, IntegrityError
from hyperforget.config.params import DataConfig, ForgetConfig
from hyperforget.data.datasets import forget_split, load_dataset, save_dataset, stratified_split
from hyperforget.data.readers import (
    CIFAR_RECORD,
    import_raw,
    read_cifar_batches,
    read_idx,
    write_idx,
)


def test_idx_round_trip_raw_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a)
    (tmp_path / "a.gz").write_bytes(gzip.compress((tmp_path / "a").read_bytes()))
    assert np.array_equal(read_idx(tmp_path / "a"), a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "a", np.zeros((10, 4, 4), np.uint8))
    (tmp_path / "a").write_bytes((tmp_path / "a").read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "a")


def test_idx_with_bad_magic_is_a_clear_error(tmp_path):
    (tmp_path / "a").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 12)
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "a")


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    (tmp_path / "a.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-6])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(tmp_path / "a.gz")


def test_cifar_reader_checks_record_size(tmp_path):
    rec = np.zeros((3, CIFAR_RECORD), np.uint8)
    rec[:, 0] = [1, 2, 3]
    (tmp_path / "b.bin").write_bytes(rec.tobytes())
    x, y = read_cifar_batches([tmp_path / "b.bin"])
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [1, 2, 3]
    (tmp_path / "c.bin").write_bytes(rec.tobytes()[:-1])
    with pytest.raises(DataError, match="record size"):
        read_cifar_batches([tmp_path / "c.bin"])


def test_digits_export_is_byte_deterministic(tmp_path):
    a = import_raw(DataConfig(raw_dir=str(tmp_path / "a")))
    b = import_raw(DataConfig(raw_dir=str(tmp_path / "b")))
    for f in a.iterdir():
        assert f.read_bytes() == (b / f.name).read_bytes()


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    keep, held = stratified_split(y, 0.2, seed=1)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(len(y)))
    assert np.bincount(y[held]).tolist() == [20, 10, 6, 4]
    assert np.array_equal(held, stratified_split(y, 0.2, seed=1)[1])
    assert not np.array_equal(held, stratified_split(y, 0.2, seed=2)[1])


def test_prepare_splits_digits_without_overlap(digits):
    assert (len(digits.y_train), len(digits.y_val), len(digits.y_test)) == (1295, 143, 359)
    assert digits.input_shape == (1, 8, 8)
    assert abs(digits.x_train.mean().item()) < 1e-4


def test_forget_split_by_class_and_by_fraction(digits):
    split = forget_split(digits, ForgetConfig(classes=[3, 5]))
    assert set(digits.y_train[split.forget_idx].tolist()) == {3, 5}
    assert not torch.isin(digits.y_train[split.retain_idx], torch.tensor([3, 5])).any()
    assert split.retained_classes(10) == [0, 1, 2, 4, 6, 7, 8, 9]
    rand = forget_split(digits, ForgetConfig(fraction=0.1, seed=4))
    assert len(rand.forget_idx) == round(0.1 * len(digits.y_train))
    assert len(rand.forget_idx) + len(rand.retain_idx) == len(digits.y_train)
    again = forget_split(digits, ForgetConfig(fraction=0.1, seed=4))
    assert torch.equal(rand.forget_idx, again.forget_idx)


def test_saved_dataset_loads_back_and_detects_corruption(digits, tmp_path):
    card = save_dataset(digits, tmp_path)
    assert card["class_counts"]["train"][3] == int((digits.y_train == 3).sum())
    back = load_dataset(tmp_path)
    assert torch.equal(back.x_test, digits.x_test) and back.name == "digits"
    blob = bytearray((tmp_path / "dataset.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "dataset.safetensors").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_dataset(tmp_path)


def test_non_digits_set_without_source_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match=r"data\.source"):
        import_raw(DataConfig(name="mnist", raw_dir=str(tmp_path)))


def test_a_file_that_is_not_the_original_mnist_is_refused(tmp_path):
    """A well-formed IDX pair under MNIST's file names whose bytes are not the authors' release."""
    source = tmp_path / "source"
    write_idx(source / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8))
    write_idx(source / "t10k-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10)
    with pytest.raises(DataError, match="not the original MNIST"):
        import_raw(DataConfig(name="mnist", source=str(source), raw_dir=str(tmp_path / "raw")))
    assert not (tmp_path / "raw").exists()  # refused before anything was copied


def test_importing_again_never_overwrites_a_raw_file_an_erasure_rewrote(tmp_path):
    cfg = DataConfig(raw_dir=str(tmp_path))
    folder = import_raw(cfg)
    assert import_raw(cfg) == folder  # the same bytes again: nothing to refuse
    images = folder / "digits-images-idx3-ubyte"
    erased = images.read_bytes()[:-64]  # as if the last record's pixels were gone
    images.write_bytes(erased)
    with pytest.raises(DataError, match=r"differs from the data set's original file.*dvc checkout data.dvc"):
        import_raw(cfg)
    assert images.read_bytes() == erased
