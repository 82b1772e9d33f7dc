"""CUB-200-2011 birds (STN §4.3, A.6) from TFDS ``caltech_birds2011``.

5,994 training and 5,794 test images of 200 species, of all sizes. Only the
class labels are used (no boxes, no parts), as in the paper.

Preparation. ``load_cub`` prepares the TFDS dataset on first use. Where there is
internet TFDS downloads ``CUB_200_2011.tgz`` (1.1 GB) and ``segmentations.tgz``
from data.caltech.edu. Offline, put those two files, under those names, in a
folder and pass it as ``manual_dir`` (``--manual_dir``): TFDS takes them from
there and checks their checksums. Preparing needs OpenCV (TFDS decodes the
segmentation masks with it): ``pip install -e ".[cub]"``.

Augmentation (A.6 and the usual Inception fine-tuning): the image is resized so
that its shorter side is ``image_size * 256 / 224`` (256 px for 224 px crops, as
the ImageNet training the paper's backbone had), then a training example is a
random ``image_size`` square crop, flipped left-right with probability 1/2; a
test example is the single centre crop. Pixels come out as float32 in [0, 1].
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from stn_tf.pipelines import images

__all__ = ["NAME", "NUM_CLASSES", "SPLITS", "load_cub", "preprocess"]

NAME = "caltech_birds2011"
NUM_CLASSES = 200
SPLITS = ("train", "test")
RESIZE_RATIO = 256 / 224  # shorter side before cropping, per pixel of the crop


def _prepare(builder, manual_dir):
    try:
        import cv2  # noqa: F401 - TFDS decodes CUB's segmentation masks with it
    except ImportError:
        raise ImportError(
            f"preparing {NAME} needs OpenCV, which TFDS uses to read its "
            'segmentation masks: pip install -e ".[cub]" (opencv-python-headless)'
        ) from None
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:
        where = f"the manual folder {manual_dir}" if manual_dir else "no manual folder"
        raise RuntimeError(
            f"could not prepare {NAME} in {builder.data_dir} ({where}): {e}. "
            "Offline, put CUB_200_2011.tgz and segmentations.tgz (from "
            "https://www.vision.caltech.edu/datasets/cub_200_2011/) in a folder and "
            "pass --manual_dir=FOLDER"
        ) from e


def load_cub(
    split: str, *, data_dir: str | None = None, manual_dir: str | None = None
) -> tuple[tf.data.Dataset, int]:
    """The stored split, ``{"image": encoded JPEG, "label": int64}``, and its size.

    Args:
        split: ``train`` or ``test``.
        data_dir: TFDS data folder (TFDS's default when None).
        manual_dir: a folder holding the downloaded archives, for offline use.

    Returns:
        ``(examples, num_examples)``; the images stay encoded (decoded by
        ``preprocess``), so shuffling holds bytes, not pixels.
    """
    if split not in SPLITS:
        raise ValueError(f"CUB splits are {SPLITS}. Received: split={split!r}")
    builder = tfds.builder(NAME, data_dir=data_dir)
    if split not in builder.info.splits:  # not prepared yet
        _prepare(builder, manual_dir)
    skip = tfds.decode.SkipDecoding()
    examples = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": skip, "segmentation_mask": skip},
    ).map(lambda ex: {"image": ex["image"], "label": ex["label"]})
    count = int(examples.cardinality())
    if count < 0:  # unknown: count the records (no decoding)
        count = int(examples.reduce(0, lambda n, _: n + 1))
    return examples, count


def preprocess(image_size: int):
    """``(encoded, key, training) -> [image_size, image_size, 3]`` float32 in [0, 1]."""
    short = round(image_size * RESIZE_RATIO)

    def apply(encoded, key, training):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        scale = short / tf.cast(tf.minimum(height, width), tf.float32)
        size = tf.cast(
            tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale),
            tf.int32,
        )
        image = tf.image.resize(image, tf.maximum(size, short), antialias=True)
        if training:
            crop_key, flip_key = tf.unstack(
                tf.random.experimental.stateless_split(
                    tf.random.experimental.stateless_fold_in(key[:2], key[2]), 2
                )
            )
            image = tf.image.stateless_random_crop(
                image, [image_size, image_size, 3], seed=crop_key
            )
            image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
        else:
            top = (tf.shape(image)[0] - image_size) // 2
            left = (tf.shape(image)[1] - image_size) // 2
            image = image[top : top + image_size, left : left + image_size]
        image = tf.clip_by_value(image / 255.0, 0.0, 1.0)
        return tf.ensure_shape(image, [image_size, image_size, 3])

    return apply


# The dataset registry's hooks (stn_tf.pipelines.datasets.FAMILIES).


def pipeline(spec, split, *, batch_size, training, seed, image_size, sources):
    """The ``split`` as an ``ImagePipeline`` of ``image_size`` images (resize and
    crop as A.6; prepared by TFDS on first use)."""
    examples, count = load_cub(
        split, data_dir=sources.data_dir, manual_dir=sources.manual_dir
    )
    return images.ImagePipeline(
        spec,
        examples,
        count,
        preprocess(image_size),
        batch_size=batch_size,
        training=training,
        seed=seed,
        origin=f"TFDS {NAME} {split} ({count} images)",
    )


def decoder(image_size: int):
    """``encoded JPEG/PNG -> example`` as the test pipeline prepares a stored
    image (resize, centre crop)."""
    prepare = preprocess(image_size)
    no_key = tf.zeros([3], tf.int32)  # a test example draws nothing
    return lambda encoded: prepare(encoded, no_key, False)


def decoding(image_size: int) -> str:
    """What ``decoder`` does, in words (for serving metadata)."""
    return (
        f"resized to a shorter side of {round(image_size * RESIZE_RATIO)} px and "
        f"centre-cropped to {image_size} px"
    )


def encoded(split, num, *, image_size, sources) -> list[bytes]:
    """The first ``num`` stored JPEGs of ``split``, as stored."""
    del image_size
    examples, _ = load_cub(
        split, data_dir=sources.data_dir, manual_dir=sources.manual_dir
    )
    return [ex["image"].numpy() for ex in examples.take(num)]
