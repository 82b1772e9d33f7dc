"""Tests of stn_tf.pipelines.svhn (digitStruct.mat, crops, labels, the svhn_multi builder),
stn_tf.models.svhn and the SVHN training command.

A tiny "full numbers" SVHN is written in tmp: ``train.tar.gz`` (PNGs first,
``digitStruct.mat`` last, as it may be in the real archives), ``test.tar.gz``
(``digitStruct.mat`` first) and an extracted ``extra/`` folder, with
``digitStruct.mat`` in the MATLAB v7.3 layout (values stored directly for one
digit, by reference for several).
"""

import json
import logging
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import run_train_cli
from PIL import Image
from test_export_contract import check_serving_contract

from stn_tf import models
from stn_tf.pipelines import svhn
from tools.sample_data import (
    BLUE,
    GREY,
    RED,
    box_png,
    write_archive,
    write_digit_struct,
)

# name -> (width, height, [(left, top, width, height, file label), ...])
TRAIN = {
    # Two digits (k > 1: values by reference), "10" (label 10 is the digit 0).
    "1.png": (100, 50, [(30, 20, 10, 20, 1), (40, 20, 10, 20, 10)]),
    # One digit (k == 1: values stored directly).
    "2.png": (40, 30, [(5, 8, 12, 14, 5)]),
    # Six digits: skipped.
    "3.png": (90, 30, [(5 + 12 * i, 5, 10, 18, i + 1) for i in range(6)]),
}
TEST = {
    "1.png": (50, 40, [(10, 10, 8, 12, 3), (18, 10, 8, 12, 10), (26, 11, 8, 12, 7)]),
    "2.png": (30, 30, [(9, 7, 10, 15, 10)]),
}
EXTRA = {"1.png": (30, 30, [(8, 6, 11, 16, 2)])}


def write_split(root, split, copies=1):
    """``root/<split>.tar.gz`` holding ``copies`` copies of TRAIN's (train) or
    TEST's images, renamed 1.png, 2.png, ... (for runs that need a few batches)."""
    source = TRAIN if split == "train" else TEST
    images = {
        f"{i + 1}.png": spec for i, spec in enumerate(list(source.values()) * copies)
    }
    root.mkdir(parents=True, exist_ok=True)
    write_archive(root / f"{split}.tar.gz", split, images, struct_first=False)


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    """train.tar.gz, test.tar.gz and an extracted extra/ folder."""
    root = tmp_path_factory.mktemp("manual")
    write_archive(root / "train.tar.gz", "train", TRAIN, struct_first=False)
    write_archive(root / "test.tar.gz", "test", TEST, struct_first=True)
    (root / "extra").mkdir()
    write_digit_struct(root / "extra" / "digitStruct.mat", EXTRA)
    for name, spec in EXTRA.items():
        (root / "extra" / name).write_bytes(box_png(*spec))
    return root


@pytest.fixture(scope="module")
def data_dir_64(manual_dir, tmp_path_factory):
    """svhn_multi/64 prepared from manual_dir (with extra)."""
    data_dir = tmp_path_factory.mktemp("tfds64")
    svhn.load("train", size=64, data_dir=data_dir, manual_dir=manual_dir)
    return data_dir


def _examples(data_dir, size, split):
    builder = tfds.builder(f"svhn_multi/{size}", data_dir=str(data_dir))
    return {
        ex["filename"].decode(): ex
        for ex in tfds.as_numpy(builder.as_dataset(split=split))
    }


# ------------------------------------------------------------------------------------
# Pure functions.


def test_read_digit_struct_both_layouts_and_label_10(tmp_path):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, {**TRAIN, "4.png": (10, 10, [(1, 2, 3, 4, 10)])})
    records = svhn.read_digit_struct(path)
    assert [name for name, _ in records] == ["1.png", "2.png", "3.png", "4.png"]
    expected = {
        "1.png": [[30, 20, 10, 20, 1], [40, 20, 10, 20, 0]],  # by reference, 10 -> 0
        "2.png": [[5, 8, 12, 14, 5]],  # stored directly
        "4.png": [[1, 2, 3, 4, 0]],  # stored directly, 10 -> 0
    }
    for name, boxes in records:
        assert boxes.dtype == np.float64 and boxes.shape[1] == 5
        if name in expected:
            np.testing.assert_array_equal(boxes, expected[name])
    assert records[2][1].shape == (6, 5)
    np.testing.assert_array_equal(records[2][1][:, 4], [1, 2, 3, 4, 5, 6])
    # The file's label 10 comes out as the digit 0, not as the null class 10.
    label = svhn.sequence_label(records[0][1][:, 4])
    np.testing.assert_array_equal(label, [1, 0, 10, 10, 10])
    with open(path, "rb") as f:  # a file object works too (read from archives)
        assert svhn.read_digit_struct(f)[0][0] == "1.png"


def test_read_digit_struct_bad_files(tmp_path):
    not_hdf5 = tmp_path / "a.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match=r"a\.mat: not a MATLAB v7\.3"):
        svhn.read_digit_struct(not_hdf5)
    wrong = tmp_path / "b.mat"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("other", data=[1])
    with pytest.raises(ValueError, match=r"b\.mat: expected datasets digitStruct/name"):
        svhn.read_digit_struct(wrong)


@pytest.mark.parametrize(
    "boxes,expand,expected",
    [
        # Union (30, 20)-(50, 40), centre (40, 30), side 20 -> 26 and 52.
        ([[30, 20, 10, 20], [40, 20, 10, 20]], 1.3, (27.0, 17.0, 53.0, 43.0)),
        ([[30, 20, 10, 20], [40, 20, 10, 20]], 2.6, (14.0, 4.0, 66.0, 56.0)),
        # Union (10, 20)-(26, 36), centre (18, 28), side 16 -> 20.8 and 41.6.
        ([[10, 20, 8, 16, 3], [20, 22, 6, 14, 4]], 1.3, (7.6, 17.6, 28.4, 38.4)),
        ([[10, 20, 8, 16, 3], [20, 22, 6, 14, 4]], 2.6, (-2.8, 7.2, 38.8, 48.8)),
        # Not square: 12 x 14 about (11, 15) -> 15.6 x 18.2.
        ([[5, 8, 12, 14, 5]], 1.3, (3.2, 5.9, 18.8, 24.1)),
    ],
)
def test_crop_box_hand_computed(boxes, expand, expected):
    box = svhn.crop_box(np.array(boxes, float), expand)
    assert all(isinstance(v, float) for v in box)
    np.testing.assert_allclose(box, expected, atol=1e-9)


def test_crop_box_rejects_bad_boxes():
    with pytest.raises(ValueError, match=r"Received shape \(0, 4\)"):
        svhn.crop_box(np.zeros((0, 4)), 1.3)
    with pytest.raises(ValueError, match=r"Received shape \(4,\)"):
        svhn.crop_box(np.zeros(4), 1.3)


def test_crop_image_pads_outside_with_black():
    white = np.full((40, 40, 3), 255, np.uint8)
    # (-9.6, -10.4) rounds to (-10, -10): the top 10 rows and left 10 columns lie
    # outside the picture. Same size out as in: no resampling.
    crop = svhn.crop_image(white, (-9.6, -10.4, 30.0, 30.0), 40)
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    assert (crop[:10] == 0).all() and (crop[:, :10] == 0).all()
    assert (crop[10:, 10:] == 255).all()
    # Grey-scale in, RGB out; downscaled 2x, black half on the left.
    grey = Image.fromarray(np.full((20, 20), 200, np.uint8))
    crop = svhn.crop_image(grey, (-20, 0, 20, 20), 10)
    assert crop.shape == (10, 10, 3)
    assert (crop[:, :4] == 0).all() and (crop[:, 6:] == 200).all()


def test_sequence_label():
    np.testing.assert_array_equal(svhn.sequence_label([1, 9]), [1, 9, 10, 10, 10])
    np.testing.assert_array_equal(svhn.sequence_label([4, 0, 2, 8, 6]), [4, 0, 2, 8, 6])
    assert svhn.sequence_label([7]).dtype == np.int64
    np.testing.assert_array_equal(svhn.sequence_label([3], max_digits=3), [3, 10, 10])
    np.testing.assert_array_equal(svhn.sequence_label([0.0]), [0, 10, 10, 10, 10])
    with pytest.raises(ValueError, match=r"at most 5 digits. Received 6"):
        svhn.sequence_label([1] * 6)
    with pytest.raises(ValueError, match=r"map the file's label 10 to 0.*10\.0"):
        svhn.sequence_label([1, 10])


def test_missing_train_archive_names_the_folder(tmp_path, manual_dir):
    only_test = tmp_path / "manual"
    only_test.mkdir()
    shutil.copy(manual_dir / "test.tar.gz", only_test)
    with pytest.raises(FileNotFoundError) as info:
        svhn.load("train", data_dir=tmp_path / "tfds", manual_dir=only_test)
    message = str(info.value)
    assert str(only_test) in message
    assert "missing train.tar.gz (or an extracted train/" in message
    assert "Found: test.tar.gz" in message
    assert not (tmp_path / "tfds" / "svhn_multi").exists()  # failed before TFDS
    with pytest.raises(FileNotFoundError, match=r"missing train.*, test.*nothing"):
        svhn.find_sources(tmp_path / "nowhere")


def test_find_sources(manual_dir):
    assert svhn.find_sources(manual_dir) == {
        "train": manual_dir / "train.tar.gz",
        "test": manual_dir / "test.tar.gz",
        "extra": manual_dir / "extra",
    }


# ------------------------------------------------------------------------------------
# The TFDS builder.


def test_load_64(data_dir_64, manual_dir):
    train = list(svhn.load("train", size=64, data_dir=data_dir_64).as_numpy_iterator())
    assert len(train) == 2  # 3.png (6 digits) is gone
    for ex in train:
        assert set(ex) == {"image", "label"}
        assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
        assert ex["label"].shape == (5,) and ex["label"].dtype == np.int32
    ds = svhn.load("test", size=64, data_dir=data_dir_64)
    assert ds.element_spec == {
        "image": tf.TensorSpec((64, 64, 3), tf.uint8),
        "label": tf.TensorSpec((5,), tf.int32),
    }
    assert sorted(tuple(ex["label"]) for ex in train) == [
        (1, 0, 10, 10, 10),
        (5, 10, 10, 10, 10),
    ]
    test = sorted(tuple(ex["label"]) for ex in ds.as_numpy_iterator())
    assert test == [(0, 10, 10, 10, 10), (3, 0, 7, 10, 10)]
    assert svhn.num_examples("train", 64, data_dir_64) == 2
    assert svhn.num_examples("test", 64, data_dir_64) == 2
    assert svhn.num_examples("extra", 64, data_dir_64) == 1
    assert svhn.num_examples("train+extra", 64, data_dir_64) == 3
    both = svhn.load("train+extra", size=64, data_dir=data_dir_64)
    labels = sorted(tuple(ex["label"]) for ex in both.as_numpy_iterator())
    assert labels == [(1, 0, 10, 10, 10), (2, 10, 10, 10, 10), (5, 10, 10, 10, 10)]


def test_features_and_crop_pixels_64(data_dir_64):
    train = _examples(data_dir_64, 64, "train")
    assert sorted(train) == ["1.png", "2.png"]
    ex = train["1.png"]
    assert ex["length"] == 2 and ex["box"].dtype == np.float32
    np.testing.assert_array_equal(ex["box"], [27, 17, 53, 43])
    np.testing.assert_allclose(train["2.png"]["box"], [3.2, 5.9, 18.8, 24.1], atol=1e-5)
    np.testing.assert_array_equal(train["2.png"]["label"], [5, 10, 10, 10, 10])
    image = ex["image"].astype(int)
    # 26 source pixels -> 64: source x maps to (x - 27) * 64 / 26. Red digit
    # x 30..40 -> 7.4..32, blue x 40..50 -> 32..56.6; both y 20..40 -> 7.4..56.6.
    np.testing.assert_allclose(image[12:52, 10:30], np.broadcast_to(RED, (40, 20, 3)))
    np.testing.assert_allclose(image[12:52, 35:54], np.broadcast_to(BLUE, (40, 19, 3)))
    np.testing.assert_allclose(image[:5], np.broadcast_to(GREY, (5, 64, 3)))
    np.testing.assert_allclose(image[:, 59:], np.broadcast_to(GREY, (64, 5, 3)))
    assert (image.sum(-1) > 0).all()  # inside the picture: no black padding


def test_load_128_with_black_padding(manual_dir, tmp_path, caplog):
    # TFDS's default manual dir, <data_dir>/downloads/manual, without extra.
    data_dir = tmp_path / "tfds"
    no_extra = data_dir / "downloads" / "manual"
    no_extra.mkdir(parents=True)
    for name in ("train.tar.gz", "test.tar.gz"):
        shutil.copy(manual_dir / name, no_extra)
    with caplog.at_level(logging.INFO, logger="absl"):  # other tests quiet absl
        ds = svhn.load("test", size=128, data_dir=data_dir)
    assert "train: skipping 1 of 3 images with more than 5 digits" in caplog.text
    assert "test: skipping 0 of 2 images" in caplog.text
    assert ds.element_spec["image"] == tf.TensorSpec((128, 128, 3), tf.uint8)
    assert len(list(ds)) == 2
    train = _examples(data_dir, 128, "train")
    ex = train["1.png"]
    np.testing.assert_array_equal(ex["box"], [14, 4, 66, 56])  # 2x the 64 crop's side
    image = ex["image"].astype(int)
    # 52 source pixels -> 128 (same scale as the 64 set): x -> (x - 14) * 128 / 52.
    # Red x 30..40 -> 39.4..64, blue 40..50 -> 64..88.6, y 20..40 -> 39.4..88.6;
    # the picture ends at y = 50 -> 113.2: black below.
    np.testing.assert_allclose(image[42:86, 42:62], np.broadcast_to(RED, (44, 20, 3)))
    np.testing.assert_allclose(image[42:86, 66:86], np.broadcast_to(BLUE, (44, 20, 3)))
    np.testing.assert_allclose(image[92:111, :], np.broadcast_to(GREY, (19, 128, 3)))
    assert (image[116:] == 0).all()
    # No extra in this manual dir: no extra split, and a clear error.
    with pytest.raises(ValueError) as info:
        svhn.load("train+extra", size=128, data_dir=data_dir)
    message = str(info.value)
    assert "unknown split 'extra' in 'train+extra'" in message
    assert "['test', 'train']" in message and "extra.tar.gz" in message


def test_unknown_split_and_size(data_dir_64):
    with pytest.raises(ValueError, match=r"'validation'.*\['extra', 'test', 'train'\]"):
        svhn.load("validation", size=64, data_dir=data_dir_64)
    with pytest.raises(ValueError, match=r"size 32; expected one of \(64, 128\)"):
        svhn.load("train", size=32, data_dir=data_dir_64)
    assert len(list(svhn.load("train[:1]", data_dir=data_dir_64))) == 1


def test_builder_configs():
    assert [c.name for c in svhn.SvhnMulti.BUILDER_CONFIGS] == ["64", "128"]
    assert [c.expand for c in svhn.SvhnMulti.BUILDER_CONFIGS] == [1.3, 2.6]
    assert "train.tar.gz" in svhn.SvhnMulti.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert str(svhn.SvhnMulti.VERSION) == "1.0.0"


@pytest.mark.parametrize(
    "name,params",
    [
        ("svhn_cnn", 32_820_951),
        ("st_cnn_single", 33_898_877),
        ("st_cnn_multi", 37_937_903),
    ],
)
def test_svhn_models_shapes_and_parameters(name, params):
    model = models.build_model(
        name, (64, 64, 3), 11, label_shape=(5,), jit_compile=False
    )
    out = model(np.random.default_rng(0).random((2, 64, 64, 3), "f4"))
    assert out["logits"].shape == (2, 5, 11)
    # A.5 by hand: convs 5x5 (48, 64, 128, 160, 192 x 4), fc 3072 x 3, heads 5 x 11;
    # the localisation nets: conv 32, conv 32, fc 32 (from 16x16x32), fc 32, θ 6;
    # Multi: fc 32 from 64x64x3, 32x32x48, 32x32x64, 16x16x128, fc 32, θ 6 each.
    convs = sum(
        25 * c_in * c_out + c_out
        for c_in, c_out in zip(
            (3, 48, 64, 128, 160, 192, 192, 192), (48, 64, 128, 160, 192, 192, 192, 192)
        )
    )
    fcs = (3072 * 3072 + 3072) * 3 + 3072 * 55 + 55
    single = (
        (25 * 3 * 32 + 32)
        + (25 * 32 * 32 + 32)
        + (32 * 32 * 32 * 32 + 32)
        + (32 * 32 + 32)
        + (32 * 6 + 6)
    )
    multi = sum(
        n * 32 + 32 + 32 * 32 + 32 + 32 * 6 + 6
        for n in (64 * 64 * 3, 32 * 32 * 48, 32 * 32 * 64, 16 * 16 * 128)
    )
    expected = (
        convs
        + fcs
        + {"svhn_cnn": 0, "st_cnn_single": single, "st_cnn_multi": multi}[name]
    )
    assert model.count_params() == expected == params
    if name != "svhn_cnn":
        theta = out["theta"].numpy()
        identity = np.array([1, 0, 0, 0, 1, 0], "f4")
        np.testing.assert_allclose(
            theta.reshape(2, -1, 6), np.broadcast_to(identity, (2, theta.size // 12, 6))
        )
        np.testing.assert_allclose(
            out["transformed"],
            np.random.default_rng(0).random((2, 64, 64, 3), "f4"),
            atol=1e-6,
        )


def test_st_cnn_multi_theta_is_the_product_of_the_transformations():
    model = models.build_model(
        "st_cnn_multi", (64, 64, 3), 11, label_shape=(5,), jit_compile=False
    )
    rng = np.random.default_rng(1)
    matrices = []
    for i in range(4):
        head = model.get_layer(f"st_{i}").head
        theta = np.array([1, 0, 0, 0, 1, 0]) + rng.normal(0, 0.1, 6)
        head.bias.assign(theta.astype("f4"))
        matrices.append(np.vstack([theta.reshape(2, 3), [0, 0, 1]]))
    out = model(np.zeros((1, 64, 64, 3), "f4"))
    total = np.eye(3)
    for k in range(4):
        total = total @ matrices[k]
        np.testing.assert_allclose(
            out["theta"][0, k], total[:2].ravel(), rtol=1e-5, atol=1e-6
        )


def test_svhn_models_refuse_other_sizes():
    with pytest.raises(ValueError, match=r"multiple of 16.*\(60, 60, 3\)"):
        models.build_model("svhn_cnn", (60, 60, 3), 11, label_shape=(5,))


# --------------------------------------------------------------------------------------
# Configs and the SVHN command


@pytest.mark.slow
@pytest.mark.parametrize("model", ["svhn_cnn", "st_cnn_single", "st_cnn_multi"])
def test_svhn_command_end_to_end(tmp_path, capsys, model):
    manual = tmp_path / "manual"
    write_split(manual, "train", copies=3)
    write_split(manual, "test")
    run_train_cli(
        "--dataset=svhn",
        f"--model={model}",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--manual_dir={manual}",
        "--steps=2",
        "--batch_size=4",
        "--eval_batch_size=4",
        "--log_every=1",
        "--picture_every=1",
        f"--workdir={tmp_path / 'run'}",
    )
    out = capsys.readouterr().out
    assert f"{model} (" in out and "of sequences wrong" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 <= results["test_sequence_error"] <= 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["weight_decay"] == 5e-4 and config["batch_size"] == 4
    assert config["loc_lr_multiplier"] == 0.1
    assert (tmp_path / "run" / "transformer.png").exists() == (model != "svhn_cnn")
    (tmp_path / "chain").mkdir()
    check_serving_contract(tmp_path / "run", tmp_path / "chain")
