"""CUB-200-2011 (stn_tf.pipelines.cub, stn_tf.models.cub): the pipeline, the model and the
training command. CUB goes through TFDS's own ``caltech_birds2011`` builder under
``tfds.testing.mock_data`` (JPEGs the test makes)."""

import json
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_train_cli
from PIL import Image
from test_export_contract import check_serving_contract

from stn_tf import models, runs
from stn_tf.models import cub as cub_models
from stn_tf.pipelines import cub, images
from tools import sample_data

CUB_SPLITS = {"train": 12, "test": 6}


@pytest.fixture
def mock_cub():
    with sample_data.mock_cub(CUB_SPLITS):
        yield


# --------------------------------------------------------------------------------------
# CUB


def test_tiling_windows_start_on_a_grid_not_at_the_centre():
    np.testing.assert_allclose(
        cub_models.tiling(2), [[0.5, -0.5, 0.0], [0.5, 0.5, 0.0]]
    )
    np.testing.assert_allclose(
        cub_models.tiling(4),
        [[0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [0.5, -0.5, 0.5], [0.5, 0.5, 0.5]],
    )
    np.testing.assert_allclose(cub_models.tiling(1), [[0.5, 0.0, 0.0]])
    np.testing.assert_allclose(
        cub_models.tiling(3)[:, 1:], [[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]]
    )


def test_fresh_cub_model_crops_the_tiles_it_starts_at():
    # 2 transformers on 150 px input, 75 px crops: at the start transformer 0
    # reads the left half's middle, transformer 1 the right half's; θ is (0.5, tx, ty).
    model = models.build_model(
        "st_inception",
        (150, 150, 3),
        200,
        num_transformers=2,
        crop_size=75,
        jit_compile=False,
    )
    ramp = np.broadcast_to(
        np.linspace(0, 1, 150, dtype="f4")[None, :, None], (150, 150, 3)
    )
    out = model(ramp[None].copy())
    np.testing.assert_allclose(out["theta"][0], [[0.5, -0.5, 0.0], [0.5, 0.5, 0.0]])
    crops = out["transformed"].numpy()[0]  # [2, 75, 75, 3]
    # Source x of crop pixel j: 0.5 * (-1 + 2j/74) -+ 0.5, in [-1, 0] and [0, 1]:
    # columns 0 .. 74.5 and 74.5 .. 149 of the ramp, whose value is column / 149.
    np.testing.assert_allclose(crops[0, 37, [0, -1], 0], [0.0, 74.5 / 149], atol=1e-5)
    np.testing.assert_allclose(crops[1, 37, [0, -1], 0], [74.5 / 149, 1.0], atol=1e-5)
    layer_names = {layer.name for layer in model.layers}
    assert {"st", "stream_0", "stream_1", "concat", "dropout", "logits"} <= layer_names
    loc = model.get_layer("st").localization
    assert loc.get_layer("downscale").pool_size == (2, 2)  # 150 px -> 75 px
    assert loc.get_layer("reduce").filters == 128 and loc.get_layer("fc").units == 128
    assert model.get_layer("st").head.kernel.shape[-1] == 4  # 2N translations


def test_cub_model_bad_sizes():
    with pytest.raises(ValueError, match=r"at least 75 px.*60"):
        models.build_model("st_inception", (60, 60, 3), 200)
    with pytest.raises(
        ValueError, match=r"divide image_size.*crop_size=80, image_size=150"
    ):
        models.build_model(
            "st_inception", (150, 150, 3), 200, num_transformers=2, crop_size=80
        )


def test_cub_pipeline_crops_flips_and_resumes(mock_cub):
    examples, count = cub.load_cub("train")
    assert count == CUB_SPLITS["train"]
    spec = runs.dataset_spec(runs.TrainConfig(dataset="cub", image_size=80, num_st=0))
    make = lambda **kw: images.ImagePipeline(
        spec, examples, count, cub.preprocess(80), batch_size=5, **kw
    )
    stream = make(training=True, seed=3).dataset()
    batches = [b for _, b in zip(range(5), stream)]
    assert batches[0]["image"].shape == (5, 80, 80, 3)
    assert batches[0]["image"].dtype == tf.float32
    assert (
        0.0
        <= float(tf.reduce_min(batches[0]["image"]))
        <= float(tf.reduce_max(batches[0]["image"]))
        <= 1.0
    )
    # Epochs of 12 are permutations; the stream crosses epochs without gaps.
    labels = np.concatenate([b["label"].numpy() for b in batches])
    assert sorted(labels[:12]) == list(range(12)) and sorted(labels[12:24]) == list(
        range(12)
    )
    assert list(labels[:12]) != list(labels[12:24])  # a new order each epoch
    # Resuming at step 3 gives steps 3 and 4 again, pixel for pixel.
    resumed = [b for _, b in zip(range(2), make(training=True, seed=3).dataset(3))]
    for a, b in zip(batches[3:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
    # The test split: every image once, in order, centre crops.
    test = make(training=False).dataset()
    assert [b["label"].numpy().tolist() for b in test] == [
        list(range(5)),
        list(range(5, 10)),
        [10, 11],
    ]


def test_cub_centre_crop_of_a_known_image():
    # 100 x 200 image, left half black, right half white; image_size 80: resized
    # to 91 x 182 (shorter side 80 * 256 / 224), centre crop: columns 51 .. 130.
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, 100:] = 255
    encoded = tf.io.encode_png(pixels)
    image = cub.preprocess(80)(encoded, tf.constant([0, 0, 0]), False).numpy()
    assert image.shape == (80, 80, 3)
    # The edge (column 91 of 182) lands at crop column 40.
    np.testing.assert_allclose(image[:, :38], 0.0, atol=1e-6)
    np.testing.assert_allclose(image[:, 42:], 1.0, atol=1e-6)
    flipped = [
        cub.preprocess(80)(encoded, tf.constant([0, 0, i]), True).numpy()
        for i in range(16)
    ]
    # Random crops of a left-dark image: some flipped (dark on the right).
    assert {bool(f[:, 0].mean() < f[:, -1].mean()) for f in flipped} == {True, False}


def test_cub_without_opencv_says_how_to_prepare(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(ImportError, match=r"OpenCV.*\.\[cub\]"):
        cub.load_cub("train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"CUB splits are.*'validation'"):
        cub.load_cub("validation")


@pytest.mark.slow
@pytest.mark.heavy
# No transformer, and the largest model (4 streams, 111M parameters). The 2-stream
# model is the same class with another N: its windows and crops are checked above
# (test_fresh_cub_model_crops_the_tiles_it_starts_at); its whole run took 5 min.
@pytest.mark.parametrize("num_st", [0, 4])
def test_cub_command_end_to_end(mock_cub, tmp_path, capsys, num_st):
    image = 75 if num_st == 0 else 150
    run_train_cli(
        "--dataset=cub",
        f"--num_st={num_st}",
        "--weights=none",
        f"--image_size={image}",
        "--crop_size=75",
        "--steps=2",
        "--batch_size=4",
        # At A.6's rate (0.1), two steps from random weights take Inception's
        # inference outputs to inf: NaN probabilities, which compare equal to NaN,
        # so the chain below would check nothing.
        "--learning_rate=0.0001",
        # Accumulation in one run: each part doubles the step's graph.
        f"--accumulate={2 if num_st == 0 else 1}",
        "--eval_batch_size=3",
        "--log_every=1",
        "--picture_every=1",
        f"--workdir={tmp_path}",
    )
    out = capsys.readouterr().out
    kind = "attention" if num_st else "no transformer"
    assert f"st_inception ({kind}) on cub:" in out and "parameters" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_examples"] == CUB_SPLITS["test"] and results["steps"] == 2
    assert "caltech_birds2011 train (12 images)" in results["data"]["train"]
    config = json.loads((tmp_path / "config.json").read_text())
    # The paper's recipe (A.6) for every flag not given, boundaries scaled to 2 steps.
    assert config["learning_rate"] == 1e-4 and config["loc_lr_multiplier"] == 1e-4
    assert config["momentum"] == 0.9 and config["optimizer"] == "sgd"
    assert config["weight_decay"] == 1e-5 and config["dropout"] == 0.7
    assert config["lr_boundaries"] == [1]
    if num_st:
        with Image.open(tmp_path / "transformer.png") as picture:
            assert picture.size[0] > 2 * image
    else:
        assert not (tmp_path / "transformer.png").exists()
    # The run goes on to .keras, TF Serving (photos posted to serving_bytes) and
    # LiteRT.
    (tmp_path / "chain").mkdir()
    check_serving_contract(tmp_path, tmp_path / "chain")


# --------------------------------------------------------------------------------------
# SVHN models
