"""Tests of stn_tf.runs: which configs a run accepts, and its defaults per dataset."""

import dataclasses
import json

import pytest
from conftest import tiny_config

from stn_tf import runs
from stn_tf.pipelines import datasets


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"dataset": "mnist_sequence", "model": "cnn"},
            "models for it: rnn_spn, ffn_spn, conv_net",
        ),
        (
            {"dataset": "mnist_3d", "model": "st_cnn"},
            "models for it: st_cnn_3d, cnn_3d",
        ),
        ({"dataset": "mnist_coloc_t"}, "python -m stn_tf.colocalise"),
        (
            {"optimizer": "rmsprop", "model": "st_fcn", "loc_lr_multiplier": 0.1},
            "only under SGD",
        ),
        (
            {"model": "st_cnn_3d", "dataset": "mnist_3d", "transform": "affine"},
            "affine3d",
        ),
    ],
)
def test_configs_that_cannot_work_are_refused_with_what_fits(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(dataset="cub", model="cnn"), r"does not fit dataset 'cub'.*st_inception"),
        (
            dict(dataset="mnist_rts", num_st=2),
            r"num_st is an option of \['st_inception'\]; model 'st_cnn'",
        ),
        (dict(dataset="mnist_rts", image_size=64), r"image_size is for.*\(42, 42\)"),
        (dict(dataset="svhn", image_size=100), r"svhn comes in \(64, 128\)"),
        (dict(dataset="cub", image_size=60), r"at least 75 px.*60"),
        (dict(dataset="cub", crop_size=200), r"crop_size must.*divide image_size"),
        (dict(dataset="cub", weights="places"), r"weights must be one of"),
        (dict(dataset="svhn", augment_on="device"), r"augmented on the host"),
        (
            dict(dataset="svhn", batch_size=10, accumulate=3),
            r"accumulate must be a positive divisor",
        ),
    ],
)
def test_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        runs.TrainConfig(**kwargs)


def test_default_models_per_dataset():
    assert runs.TrainConfig(dataset="cub").model == "st_inception"
    assert runs.TrainConfig(dataset="cub").num_st == 4
    assert runs.TrainConfig(dataset="svhn").model == "st_cnn_multi"
    assert runs.TrainConfig(dataset="mnist_rts").model == "st_cnn"


def test_the_dataset_registry_names_a_fitting_default_model_and_the_pooling():
    for name in runs.TRAIN_DATASETS:
        spec = runs.ALL_DATASETS[name]
        assert spec.family in datasets.FAMILIES
        config = runs.TrainConfig(dataset=name)  # refuses a model that does not fit
        assert config.model == spec.model
        assert config.pooling == (2 if name in ("mnist_rts", "mnist_tc") else 1)  # A.4
    assert set(runs.COLOCALISATION_DATASETS) == {"mnist_coloc_t", "mnist_coloc_tc"}


def test_the_resolved_width_is_saved_and_a_given_one_checked():
    config = runs.TrainConfig(dataset="mnist_rts", model="st_cnn", param_budget=30_000)
    resolved = runs.with_width(config)
    assert resolved.width == runs.build_model(config).get_config()["width"]
    assert (
        runs.build_model(resolved).count_params()
        == runs.build_model(config).count_params()
    )
    saved = dataclasses.asdict(resolved)
    assert resolved.same_run(saved) == []
    assert resolved.same_run({**saved, "width": resolved.width + 1}) == ["width"]
    # A bfloat16 run is another run: resuming it in float32 would write a float32
    # config over results trained in bfloat16.
    assert resolved.same_run({**saved, "precision": "mixed_bfloat16"}) == ["precision"]
    older = {k: v for k, v in saved.items() if k != "precision"}  # before the field
    assert resolved.same_run(older) == []
    del saved["width"]
    assert resolved.same_run(saved) == []  # runs saved before the width was kept
    fixed = runs.with_width(runs.TrainConfig(dataset="svhn", model="svhn_cnn"))
    assert fixed.width is None  # the paper's layers: no width to choose
    with pytest.raises(
        ValueError,
        match=r"width is an option of .*model 'svhn_cnn' does not take it.*width=8",
    ):
        runs.TrainConfig(dataset="svhn", model="svhn_cnn", width=8)


def test_model_options_go_only_to_models_that_take_them():
    with pytest.raises(ValueError, match=r"starts is an option of \['rnn_spn'\]"):
        runs.TrainConfig(model="st_cnn", starts="left_to_right")
    with pytest.raises(ValueError, match=r"shared_localization is an option of"):
        runs.TrainConfig(model="st_cnn", shared_localization=True)
    with pytest.raises(ValueError, match=r"model_version must be one of"):
        runs.TrainConfig(model_version=7)
    aided = runs.TrainConfig(
        dataset="mnist_sequence", starts="left_to_right", learn_offsets=True
    )
    model = runs.build_model(aided)
    assert [w for w in model.weights if "step_offsets" in w.path]


def test_a_config_without_model_version_builds_version_1s_models(tmp_path):
    config = runs.TrainConfig(dataset="mnist_addition", param_budget=60_000)
    saved = dataclasses.asdict(config)
    del saved["model_version"]  # as every run written before it existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = runs.read_config(tmp_path / "config.json")
    assert old.model_version == 1 and config.model_version == 2
    assert [t.name for t in runs.build_model(old).transformers] == ["st"]  # shared
    assert [t.name for t in runs.build_model(config).transformers] == ["st_0", "st_1"]
    assert config.same_run(saved) == ["model_version"]  # resuming it is refused


def test_a_run_is_resolved_once_and_handed_down(tmp_path, monkeypatch):
    from stn_tf.training import train_and_evaluate

    made, looked_up = [], []
    of, spec = runs.Run.of.__func__, runs.dataset_spec

    def counting_of(cls, config):
        made.append(config)
        return of(cls, config)

    def counting_spec(config):
        looked_up.append(config)
        return spec(config)

    config = tiny_config(model="st_cnn", steps=2)
    monkeypatch.setattr(runs.Run, "of", classmethod(counting_of))
    monkeypatch.setattr(runs, "dataset_spec", counting_spec)
    train_and_evaluate(config, tmp_path / "run")
    # One Run, for the loop, the step, the summaries and the pictures (its width
    # solved on it); the dataset's spec read by that Run and by the checks of the
    # config with its width (8 lookups before).
    assert len(made) == 1 and made[0].width is None
    assert len(looked_up) == 2, len(looked_up)
    saved = runs.read_config(tmp_path / "run" / "config.json")
    assert saved.width == runs.with_width(config).width > 0


def test_run_builds_what_the_config_names():
    run = runs.Run.of(
        runs.TrainConfig(dataset="mnist_addition", model="st_fcn_2x", width=6)
    )
    assert run.data.shape == (42, 42, 2) and run.model.name == "st_fcn_2x"
    assert (
        not run.sequences
        and runs.Run.of(
            tiny_config(dataset="mnist_sequence", model="rnn_spn")
        ).sequences
    )
    model = run.build_model(jit_compile=False)
    assert model.input_shape == (None, 42, 42, 2) and len(model.transformers) == 2
    batch = next(iter(run.pipeline("test", batch_size=3, training=False).dataset()))
    assert batch["image"].shape == (3, 42, 42, 2)


def test_pool_pools_after_the_addition_transformers_and_widens_the_classifier():
    # A.4 pools after the transformer on RTS and TC; the addition digits are RTS
    # digits (A.1), so --pool=2 gives the 2xST-FCN what A.4 gives RTS's ST-FCN.
    def classifier_inputs(config):
        model = runs.build_model(config)
        kernels = [w.shape for w in model.weights if len(w.shape) == 2]
        # Each localisation net's first kernel reads the 42x42x2 input; the
        # classifier's first reads both transformers' outputs, pooled or not.
        return [k for k in kernels if k[0] not in (42 * 42 * 2, 32)], model

    plain = runs.with_width(runs.TrainConfig(dataset="mnist_addition"))
    pooled = runs.with_width(runs.TrainConfig(dataset="mnist_addition", pool=2))
    (first, *_), small = classifier_inputs(plain)
    (pooled_first, *_), big = classifier_inputs(pooled)
    assert (plain.pooling, pooled.pooling) == (1, 2)
    assert tuple(first) == (42 * 42 * 4, plain.width)
    assert tuple(pooled_first) == (21 * 21 * 4, pooled.width)
    assert pooled.width > 3 * plain.width  # the same budget, a 4x smaller input
    for model in (small, big):
        assert abs(model.count_params() - 400_000) < 0.01 * 400_000
    assert pooled.same_run(dataclasses.asdict(plain)) == ["pool", "width"]
    with pytest.raises(
        ValueError, match=r"pool is an option of .*'st_fcn_2x'.*Received: pool=2"
    ):
        runs.TrainConfig(dataset="mnist_addition", model="cnn", pool=2)
