"""The datasets of both papers as ``tf.data`` pipelines.

A :class:`Pipeline` is one split of one dataset::

    digits = mnist.load_mnist("train")
    train = Pipeline("mnist_rts", digits, batch_size=256, training=True, seed=0)
    for batch in train.dataset(start_step=0):  # {"image", "label", "truth"}
        ...

The stream of a training split is a sequence of epochs, each a fresh permutation
of the digits (``tf.random.experimental.index_shuffle``, keyed by (seed, epoch)),
cut into batches of ``batch_size``: step ``s`` holds stream positions
``[s * B, (s + 1) * B)``, so the stream can start at any step (resume mid-epoch)
and every example is distorted anew each epoch from its own key (seed, epoch,
index). A test split is one fixed set: every digit once, in order, distorted with
the fixed key ``(TEST_SEED, 0, index)`` whatever the run's seed, batch size or
machine.

A run may also hold out a validation set and train on a fixed set (:class:`Splits`,
the RNN-SPN paper's protocol): the last ``validation_digits`` training digits become
the validation split, one example per digit keyed ``(VALIDATION_SEED, 0, index)``,
and the training split draws from the digits before them only; with
``train_examples = N`` the training split is N examples drawn once (example ``i``
from digit ``i mod digits``, keyed ``(TRAIN_SET_SEED, 0, i)``): the same images every
epoch and for every run seed, which orders them.

Distortion runs after ``.batch()``. With ``augment_on="host"`` it runs in ``tf.data``;
with ``"device"`` the dataset yields only the batch's indices and epochs (a few
bytes) and the training step calls :meth:`Pipeline.distort` itself, so the work
runs on the accelerator; both give the same images.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import tensorflow as tf

from stn_tf import fields
from stn_tf.pipelines import cub, distortions, images, mnist, svhn
from stn_tf.pipelines.mnist import Digits

__all__ = [
    "ALL_DATASETS",
    "AUGMENT_ON",
    "DATASETS",
    "FAMILIES",
    "IMAGE_DATASETS",
    "TEST_SEED",
    "DatasetSpec",
    "Family",
    "Pipeline",
    "Sources",
    "Splits",
    "get_dataset",
    "named",
]

AUGMENT_ON = ("host", "device")
# The help of --dataset and --seed (stn_tf.pipelines.flags), and of the configs'
# fields of these names.
DATASET_HELP = (
    "Dataset (see pipelines/datasets.py); cub and svhn are stored images "
    "(training only)."
)
SEED_HELP = "Seed of every random choice of the run."
# The defaults of --dataset and --seed, and of the configs' fields of these names.
DEFAULT_DATASET = "mnist_rts"
DEFAULT_SEED = 0
TEST_SEED = distortions.TEST_SEED  # every test set's key, whatever the run's seed
VALIDATION_SEED = TEST_SEED + 1  # every validation set's key
TRAIN_SET_SEED = TEST_SEED + 2  # a fixed training set's key (Splits.train_examples)
SPLITS = ("train", "validation", "test")
_SHUFFLE_SALT = 2015  # third word of the shuffle's seed (distortion keys use two)


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where a run reads its data (the ``--mnist_dir``, ``--data_dir``,
    ``--manual_dir`` and ``--mnist_source`` flags; see ``stn_tf.pipelines.mnist`` and the
    stored sets' modules)."""

    mnist_dir: str | None = fields.field(
        None,
        "Folder of MNIST-format IDX files (train-images-idx3-ubyte[.gz], t10k-..., "
        f"as distributed); default ${mnist.ENV_MNIST_DIR}. Fashion-MNIST/KMNIST "
        "folders work too.",
    )
    data_dir: str | None = fields.field(
        None, "TFDS data folder (TFDS's default when unset)."
    )
    manual_dir: str | None = fields.field(
        None,
        "cub, svhn: folder of the downloaded archives, for preparing offline "
        "(see docs/datasets.md).",
    )
    mnist_source: str = fields.field(
        "auto",
        "Where MNIST comes from: auto = --mnist_dir, else TFDS (prepared or "
        "downloadable), else the embedded sample.",
        choices=mnist.SOURCES,
    )


@dataclasses.dataclass(frozen=True)
class Splits:
    """How a run cuts its splits from MNIST's digits (the ``--validation_digits``
    and ``--train_examples`` flags; the defaults are the STN paper's protocol: no
    validation set, every training example drawn afresh each epoch)."""

    validation_digits: int = fields.field(
        0,
        "Hold out the last N digits of MNIST's training split as a validation set "
        "(one example per digit, fixed); training draws from the others only, and "
        "--eval_every evaluates the validation set (0: no validation set).",
        lower_bound=0,
    )
    train_examples: int = fields.field(
        0,
        "Train on a fixed set of N examples drawn once from the training digits "
        "(the same images every epoch and for every seed, as the RNN-SPN paper's "
        "60,000 sequences; 0: every example drawn afresh each epoch).",
        lower_bound=0,
    )

    def digits(self, split: str, train: Digits) -> Digits:
        """The digits ``split`` (train or validation) draws from, cut from MNIST's
        training ``train`` digits."""
        held = self.validation_digits
        if split == "validation" and not held:
            raise ValueError(
                "the validation split needs validation_digits > 0. "
                "Received: validation_digits=0"
            )
        if not held:
            return train
        if held > len(train) - 2:
            raise ValueError(
                f"{train.origin} has {len(train)} digits: validation_digits must "
                f"leave at least 2 to train on. Received: validation_digits={held}"
            )
        cut = len(train) - held
        part = slice(cut, None) if split == "validation" else slice(0, cut)
        first, last = (cut, len(train) - 1) if split == "validation" else (0, cut - 1)
        return Digits(
            train.images[part],
            train.labels[part],
            f"{train.origin} digits {first}-{last}",
        )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: what comes out, and how to make its pipelines.

    Attributes:
        name: the ``--dataset`` name.
        distort: ``(pool, indices, draws) -> (images, labels, truth)``, see
            ``stn_tf.pipelines.distortions`` (None for stored images).
        shape: one example's image shape, channels-last.
        num_classes: classes per label.
        label_shape: one example's label shape (``(3,)`` for sequences).
        description: one line for help texts and pictures.
        family: ``mnist`` (distorted MNIST, a :class:`Pipeline`) or the stored
            image set it is (``cub``, ``svhn``: an ``images.ImagePipeline``); its
            entry in ``FAMILIES`` makes the pipelines.
        sizes: the image sides a stored image set comes in, the default first
            (``shape`` is at the default).
        pool: the average pooling after a model's transformer (2 on TC and RTS,
            STN A.4: the classifier sees the digit at MNIST's scale).
        resizes: a stored set whose images are resized to any ``image_size``
            (CUB); otherwise its images come in ``sizes`` only (SVHN's crops).
        model: the model ``python -m stn_tf.train`` trains on it by default.
        labelled: trained with labels (the co-localisation sets are not: they
            have their own command, ``python -m stn_tf.colocalise``).
        revision: how many times the set's definition has changed (P: 1 moved
            each corner 5 px per axis, 2 a distance of 5 px, 3 per axis again,
            the reading of the text, with the distance reading kept as
            ``mnist_p_distance``); ``results.json`` records it, so a run on an
            earlier revision is not read back as current.
        formerly: ``(name, revision)`` pairs under which this very stream was
            published before (the same examples, bit for bit, as the golden data
            written then show): runs recorded under them are runs on this set.
            ``mnist_p_distance`` was ``mnist_p`` at revision 2, and ``mnist_p``'s
            revision 3 draws what its revision 1 drew.
    """

    name: str
    distort: Callable | None
    shape: tuple[int, ...]
    num_classes: int
    label_shape: tuple[int, ...] = ()
    description: str = ""
    family: str = "mnist"
    sizes: tuple[int, ...] = ()
    pool: int = 1
    resizes: bool = False
    model: str = "st_cnn"
    labelled: bool = True
    revision: int = 1
    formerly: tuple[tuple[str, int], ...] = ()

    def names(self) -> tuple[tuple[str, int], ...]:
        """Every ``(name, revision)`` this stream has been recorded under, the
        current one first."""
        return ((self.name, self.revision), *self.formerly)

    def check_run(self, config) -> None:
        """Refuses a training run (``config``: a ``runs.TrainConfig``) this set
        cannot feed: no labels to learn from, an image size it does not come in,
        distortions on the device or MNIST's splits for stored images."""
        if not self.labelled:
            raise ValueError(
                f"dataset {self.name!r} is learnt without labels: run "
                "python -m stn_tf.colocalise --dataset=... --digit=K --encoder=RUN"
            )
        size = config.image_size
        if self.family == "mnist":
            if size is not None:
                raise ValueError(
                    f"image_size is for the stored image sets; {self.name!r} has "
                    f"{self.shape[:-1]} images. Received: image_size={size}"
                )
            return
        if size is not None and not self.resizes and size not in self.sizes:
            raise ValueError(
                f"{self.name} comes in {self.sizes} px crops. Received: image_size={size}"
            )
        if config.augment_on != "host":
            raise ValueError(
                f"{self.name} is augmented on the host. Received: "
                f"augment_on={config.augment_on!r}"
            )
        if config.validation_digits or config.train_examples:
            raise ValueError(
                f"validation_digits and train_examples cut MNIST's digits; {self.name} "
                f"is a stored image set. Received: validation_digits="
                f"{config.validation_digits}, train_examples={config.train_examples}"
            )

    def make_pipeline(
        self,
        split: str,
        *,
        batch_size: int,
        training: bool,
        seed: int = 0,
        image_size: int | None = None,
        sources: Sources = Sources(),
        splits: Splits = Splits(),
    ):
        """The ``split`` (``train``, ``validation`` or ``test``) as a
        :class:`Pipeline` (distorted MNIST, cut by ``splits``) or an
        ``images.ImagePipeline`` (stored images at ``image_size``, default the
        first of ``sizes``; train and test only)."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
        more = {}
        if self.family == "mnist":
            more = {"splits": splits}
        elif split == "validation" or splits != Splits():
            raise ValueError(
                f"{self.name} is a stored image set: it has no validation split or "
                f"fixed training set here. Received: split={split!r}, {splits}"
            )
        spec = self
        if image_size is not None and image_size != self.shape[0]:
            spec = dataclasses.replace(
                self, shape=(image_size, image_size, self.shape[-1])
            )
        return FAMILIES[self.family].pipeline(
            spec,
            split,
            batch_size=batch_size,
            training=training,
            seed=seed,
            image_size=spec.shape[0],
            sources=sources,
            **more,
        )

    def decoder(self, image_size: int | None = None) -> Callable | None:
        """``encoded image bytes -> float32 example`` as the test pipeline prepares
        a stored image; None for the generated sets."""
        make = FAMILIES[self.family].decoder
        return make(image_size or self.shape[0]) if make else None

    def decoding(self, image_size: int | None = None) -> str | None:
        """What ``decoder`` does to an encoded image, in words."""
        describe = FAMILIES[self.family].decoding
        return describe(image_size or self.shape[0]) if describe else None

    def encoded_examples(
        self, split: str, num: int, *, image_size=None, sources=Sources()
    ) -> list[bytes]:
        """The first ``num`` stored images of ``split``, encoded, for serving
        requests."""
        encoded = FAMILIES[self.family].encoded
        if encoded is None:
            raise ValueError(
                f"{self.name} is generated from MNIST digits, not stored images"
            )
        return encoded(
            split, num, image_size=image_size or self.shape[0], sources=sources
        )


@dataclasses.dataclass(frozen=True)
class Family:
    """How the datasets of one family make their pipelines.

    Attributes:
        pipeline: ``(spec, split, *, batch_size, training, seed, image_size,
            sources) -> pipeline``.
        decoder: ``image_size -> (encoded -> example)``, for stored images.
        encoded: ``(split, num, *, image_size, sources) -> [bytes]``, for stored
            images.
        decoding: ``image_size -> str``, what ``decoder`` does, in words.
    """

    pipeline: Callable
    decoder: Callable | None = None
    encoded: Callable | None = None
    decoding: Callable | None = None


def _mnist_pipeline(
    spec, split, *, batch_size, training, seed, image_size, sources, splits
):
    del image_size
    digits = mnist.load_mnist(
        "test" if split == "test" else "train",
        mnist_dir=sources.mnist_dir,
        data_dir=sources.data_dir,
        source=sources.mnist_source,
    )
    if split != "test":
        digits = splits.digits(split, digits)
    fixed_set = split == "train" and splits.train_examples
    return Pipeline(
        spec.name,
        digits,
        batch_size=batch_size,
        training=training,
        seed=seed,
        examples=splits.train_examples if fixed_set else None,
        key=VALIDATION_SEED if split == "validation" else None,
    )


FAMILIES = {
    "mnist": Family(_mnist_pipeline),
    "cub": Family(cub.pipeline, cub.decoder, cub.encoded, cub.decoding),
    "svhn": Family(svhn.pipeline, svhn.decode, svhn.encoded, svhn.decoding),
}


def _spec(name, distort, shape, description, num_classes=10, label_shape=(), **kw):
    return DatasetSpec(
        name, distort, shape, num_classes, label_shape, description, **kw
    )


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        _spec("mnist", distortions.plain, (28, 28, 1), "MNIST as it is"),
        _spec("mnist_r", distortions.rotated, (28, 28, 1), "rotated ±90°"),
        _spec(
            "mnist_rts",
            distortions.rotated_translated_scaled,
            (42, 42, 1),
            "rotated ±45°, scaled 0.7-1.2, placed in 42x42",
            pool=2,
        ),
        _spec(
            "mnist_p",
            distortions.projective,
            (28, 28, 1),
            "scaled 0.75-1.0, each corner moved N(0, 5 px) along each axis",
            revision=3,
            formerly=(("mnist_p", 1),),
        ),
        _spec(
            "mnist_p_distance",
            distortions.projective_distance,
            (28, 28, 1),
            "scaled 0.75-1.0, each corner moved a distance N(0, 5 px), any direction",
            formerly=(("mnist_p", 2),),
        ),
        _spec(
            "mnist_e",
            distortions.elastic,
            (28, 28, 1),
            "scaled 0.75-1.0, 4x4 TPS control points moved N(0, 1.5 px)",
        ),
        _spec(
            "mnist_tc",
            distortions.translated_cluttered,
            (60, 60, 1),
            "placed in 60x60 with six 6x6 clutter crops",
            pool=2,
        ),
        _spec(
            "mnist_sequence",
            distortions.sequence,
            (100, 100, 1),
            "three digits on a ±45° slope in 100x100, eight 9x9 clutter crops",
            label_shape=(3,),
            model="rnn_spn",
        ),
        _spec(
            "mnist_addition",
            distortions.addition,
            (42, 42, 2),
            "two RTS digits in two 42x42 channels; label = their sum",
            num_classes=19,
            model="st_fcn_2x",
        ),
        _spec(
            "mnist_coloc_t",
            functools.partial(distortions.colocalisation, clutter=False),
            (84, 84, 1),
            "placed uniformly in 84x84",
            labelled=False,
        ),
        _spec(
            "mnist_coloc_tc",
            functools.partial(distortions.colocalisation, clutter=True),
            (84, 84, 1),
            "placed uniformly in 84x84 with sixteen 6x6 clutter crops",
            labelled=False,
        ),
        _spec(
            "mnist_3d",
            distortions.extruded_3d,
            (60, 60, 60, 1),
            "extruded, rotated ±45° about x, y, z and placed in 60x60x60",
            model="st_cnn_3d",
        ),
    )
}


# Stored real images (STN §4.2, §4.3): stn_tf.pipelines.cub, stn_tf.pipelines.svhn and
# stn_tf.pipelines.images.ImagePipeline; their image side is the run's --image_size.
IMAGE_DATASETS: dict[str, DatasetSpec] = {
    "cub": DatasetSpec(
        "cub",
        None,
        (448, 448, 3),
        200,
        description="CUB-200-2011 birds, 200 species (TFDS caltech_birds2011)",
        family="cub",
        sizes=(448, 224),
        resizes=True,
        model="st_inception",
    ),
    "svhn": DatasetSpec(
        "svhn",
        None,
        (64, 64, 3),
        11,
        label_shape=(5,),
        description="SVHN house numbers, up to 5 digits, 10 = no digit (svhn_multi)",
        family="svhn",
        sizes=(64, 128),
        model="st_cnn_multi",
    ),
}


# Every dataset of both kinds, by ``--dataset`` name: the one registry.
ALL_DATASETS: dict[str, DatasetSpec] = {**DATASETS, **IMAGE_DATASETS}


def named(name: str, revision: int) -> str | None:
    """The name today of the dataset recorded as ``name`` at ``revision`` (its
    own, or the set that draws it now: ``DatasetSpec.formerly``), or None."""
    for spec in ALL_DATASETS.values():
        if (name, revision) in spec.names():
            return spec.name
    return None


def get_dataset(name: str) -> DatasetSpec:
    """The spec of a dataset by its ``--dataset`` name."""
    try:
        return ALL_DATASETS[name]
    except KeyError:
        known = ", ".join(ALL_DATASETS)
        raise ValueError(f"Unknown dataset {name!r}; expected one of {known}") from None


class Pipeline:
    """One split of one dataset, batched, distorted on the fly.

    Args:
        dataset: a name in ``DATASETS``.
        digits: the split's MNIST digits (``stn_tf.pipelines.mnist.load_mnist``); clutter
            and extra digits are drawn from the same split.
        batch_size: examples per batch (a test split's last batch may be smaller).
        training: a shuffled, endless stream (True) or one fixed pass over every
            example in order (False).
        seed: the run's seed (training only: the order, and the distortions of a
            stream drawn anew every epoch; fixed sets ignore it).
        examples: a fixed set of this many examples, drawn once (example ``i``
            from digit ``i mod len(digits)``): the same every epoch, whatever the
            seed. None: one example per digit, drawn anew every epoch when
            training (a test split is always fixed).
        key: the fixed set's distortion key (default ``TRAIN_SET_SEED`` when
            training, ``TEST_SEED`` for a test pass; ``VALIDATION_SEED`` makes a
            validation set).
    """

    def __init__(
        self,
        dataset: str,
        digits: Digits,
        *,
        batch_size: int,
        training: bool,
        seed: int = 0,
        examples: int | None = None,
        key: int | None = None,
    ):
        self.spec = get_dataset(dataset)
        if self.spec.distort is None:
            raise ValueError(
                f"{dataset!r} is a set of stored images, not distorted MNIST: read it "
                "with stn_tf.pipelines.images.ImagePipeline (stn_tf.runs.make_pipeline)"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer. Received: {batch_size!r}"
            )
        if digits.images.shape[1:] != (distortions.DIGIT, distortions.DIGIT):
            raise ValueError(
                f"{digits.origin}: the distortions expect 28x28 digits. "
                f"Received: images of shape {digits.images.shape[1:]}"
            )
        if training and len(digits) < 2:
            raise ValueError(
                f"{digits.origin}: a training split needs at least 2 digits"
            )
        if examples is not None and (not isinstance(examples, int) or examples < 1):
            raise ValueError(
                f"examples must be a positive integer or None. Received: {examples!r}"
            )
        self.digits = digits
        self.batch_size = batch_size
        self.training = training
        if not 0 <= int(seed) < 2**31:
            raise ValueError(f"seed must be in [0, 2**31). Received: seed={seed}")
        self.seed = int(seed) if training else TEST_SEED  # the order's
        # Fixed: every example drawn once, from its own key (draw_seed, 0, index).
        self.fixed = not training or examples is not None or key is not None
        self.examples = len(digits) if examples is None else examples
        if not self.fixed:
            self.draw_seed = self.seed
        elif key is not None:
            self.draw_seed = int(key)
        else:
            self.draw_seed = TRAIN_SET_SEED if training else TEST_SEED
        self.pool = distortions.Pool(digits.images, digits.labels)
        self.distort = tf.function(
            self._distort, reduce_retracing=True, jit_compile=True
        )

    @property
    def num_examples(self) -> int:
        return self.examples

    @property
    def origin(self) -> str:
        """Where the digits come from (for logs and results)."""
        if self.training and self.fixed:
            return f"{self.digits.origin}, a fixed set of {self.examples} examples"
        return self.digits.origin

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over the split (the last may be partial for a test split)."""
        return math.ceil(self.num_examples / self.batch_size)

    def index_batches(self, start_step: int = 0) -> tf.data.Dataset:
        """Batches of ``{"index": int32 [B], "epoch": int32 [B]}``, from ``start_step`` on."""
        n, b = self.num_examples, self.batch_size
        if not self.training:
            if start_step:
                raise ValueError("a test split is one fixed pass: start_step must be 0")
            positions = tf.data.Dataset.range(n).batch(b)
            return positions.map(
                lambda p: {
                    "index": tf.cast(p, tf.int32),
                    "epoch": tf.zeros_like(p, tf.int32),
                }
            )
        seed = self.seed

        def shuffle(positions):
            epoch, slot = positions // n, positions % n
            # One permutation per (seed, epoch). The raw op takes a seed per element
            # ([B, 3]); tf.random.experimental.index_shuffle pads [B, 2] seeds wrongly.
            keys = tf.stack(
                [tf.fill(tf.shape(epoch), tf.constant(seed, tf.int64)), epoch], -1
            )
            keys = tf.pad(keys, [[0, 0], [0, 1]], constant_values=_SHUFFLE_SALT)
            index = tf.raw_ops.RandomIndexShuffle(
                index=slot, seed=keys, max_index=tf.constant(n - 1, tf.int64), rounds=4
            )
            return {
                "index": tf.cast(index, tf.int32),
                "epoch": tf.cast(epoch, tf.int32),
            }

        positions = tf.data.Dataset.range(start_step * b, 2**62).batch(
            b, drop_remainder=True
        )
        return positions.map(shuffle)

    def _distort(self, batch):
        index = batch["index"]
        epoch = tf.zeros_like(index) if self.fixed else batch["epoch"]
        draws = distortions.Draws(
            distortions.example_keys(self.draw_seed, epoch, index)
        )
        if self.examples != len(self.digits):
            index = index % len(self.digits)  # example i is digit i mod len(digits)
        images, labels, truth = self.spec.distort(self.pool, index, draws)
        return {"image": images, "label": labels, "truth": truth}

    def dataset(
        self,
        start_step: int = 0,
        augment_on: str = "host",
        parts: tuple[int, int, int] | None = None,
    ) -> tf.data.Dataset:
        """The batches: distorted ``{"image", "label", "truth"}`` (host) or index batches
        for :meth:`distort` to turn into those inside the step (device).

        ``parts=(begin, end, count)`` cuts every batch into ``count`` equal parts in
        order and yields parts ``begin .. end - 1`` of each, one after the other: what
        one input pipeline of a ``tf.distribute`` strategy feeds its replicas. Each
        example is distorted from its own seed, so the parts of all pipelines make
        up exactly the batches of one pipeline.
        """
        if augment_on not in AUGMENT_ON:
            raise ValueError(
                f"augment_on must be one of {AUGMENT_ON}. Received: {augment_on!r}"
            )
        ds = self.index_batches(start_step)
        if parts is not None:
            ds = images.split_batches(ds, parts, self.batch_size)
        if augment_on == "host":
            ds = ds.map(
                self.distort, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
        return ds.prefetch(tf.data.AUTOTUNE)
