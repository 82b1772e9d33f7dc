"""Multi-digit SVHN ("full numbers" format) as a TFDS dataset: ``svhn_multi``.

The STN paper (§4.2, A.5) reads house numbers of up to five digits from SVHN,
preprocessed as Goodfellow et al. 2014 ("Multi-digit number recognition from Street
View imagery"): each image is cropped around the union of its digit boxes expanded
by 30% in x and in y, and the crop is resized to 64x64. TFDS only has
``svhn_cropped`` (single digits, 32x32), so this module builds the multi-digit set
from the original archives.

Source (manual download, http://ufldl.stanford.edu/housenumbers/)
-------------------------------------------------------------------
``train.tar.gz`` (33,402 images), ``test.tar.gz`` (13,068) and optionally
``extra.tar.gz`` (202,353). Each holds a folder (``train/``, ``test/``, ``extra/``)
of PNGs ``1.png, 2.png, ...`` and ``digitStruct.mat``, a MATLAB v7.3 (HDF5) file:
group ``digitStruct`` with datasets ``name`` and ``bbox`` of shape ``(N, 1)``
holding object references. ``name[i][0]`` points to the file name as ``uint16``
character codes; ``bbox[i][0]`` to a group with datasets ``left``, ``top``,
``width``, ``height`` and ``label``, each of shape ``(k, 1)`` for ``k`` digits:
with ``k == 1`` the dataset holds the value itself, with ``k > 1`` it holds
references to ``(1, 1)`` datasets with the values. Label 10 is the digit 0.

The archives are read as streams, no PNG is extracted to disk: a first pass
fetches ``digitStruct.mat`` (which may come after the PNGs; it is spooled to a
temporary file for h5py), a second one reads the PNGs. Folders already extracted (``train/``, ``test/``, ``extra/`` with their
``digitStruct.mat``) work too; an archive wins over a folder of the same split.

Preprocessing (choices)
-----------------------
* Images with more than 5 digits are skipped, as Goodfellow et al. do (they are
  rare); the number skipped is logged per split.
* Config ``64``: the union of the digit boxes, expanded about its centre by 1.3 in
  x and in y (the box is not made square, the resize squashes it as in Goodfellow
  et al.), cropped with PIL ``Image.crop`` (whole pixels, parts outside the image
  are black) and resized to 64x64 with ``Image.BILINEAR``, in RGB.
* Config ``128`` ("with more background", the paper gives no numbers): same centre,
  each side of the 64 crop doubled (expansion 2.6), resized to 128x128. A digit has
  the same size in pixels in both sets, and a 128 image shows 4x the area of the 64
  one around it.
* ``label``: the digits in the order of the file (left to right), padded to 5 with
  the null class 10. ``length``: the number of digits (1 to 5).

``load(split, size=...)`` prepares the dataset if needed (``manual_dir`` holding
the archives) and gives ``{"image": uint8 [S, S, 3], "label": int32 [5]}``.
Nothing is fetched over the network: the archives come from ``manual_dir`` only and
TFDS's GCS mirror is never asked.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from stn_tf.pipelines import images

__all__ = [
    "EXPAND",
    "MAX_DIGITS",
    "NULL_LABEL",
    "OPTIONAL_SPLITS",
    "REQUIRED_SPLITS",
    "SIZES",
    "SvhnMulti",
    "SvhnMultiConfig",
    "crop_box",
    "crop_image",
    "decode",
    "find_sources",
    "load",
    "num_examples",
    "pixels",
    "read_digit_struct",
    "sequence_label",
    "training_split",
]

MAX_DIGITS = 5
NULL_LABEL = 10  # "no digit" in the padded label; not the file's label 10 (= digit 0)
SIZES = (64, 128)
# Crop side / side of the union of the digit boxes, per output size (see docstring).
EXPAND = {64: 1.3, 128: 2.6}
REQUIRED_SPLITS = ("train", "test")
OPTIONAL_SPLITS = ("extra",)
_FIELDS = ("left", "top", "width", "height", "label")
_HOMEPAGE = "http://ufldl.stanford.edu/housenumbers/"


def _h5_values(f, dataset) -> np.ndarray:
    """The ``k`` values of one bbox field: stored directly (k == 1) or by reference."""
    import h5py

    values = np.asarray(dataset[()])
    if h5py.check_ref_dtype(dataset.dtype) is not None:
        return np.array(
            [np.asarray(f[ref][()]).item() for ref in values.ravel()], np.float64
        )
    return values.ravel().astype(np.float64)


def read_digit_struct(
    path: str | os.PathLike | BinaryIO,
) -> list[tuple[str, np.ndarray]]:
    """Reads a ``digitStruct.mat`` (MATLAB v7.3 / HDF5, layout in the module docstring).

    Args:
        path: the file, or a binary file object opened on it.

    Returns:
        One ``(file name, boxes)`` per image, in file order; ``boxes`` is
        ``float64 [k, 5]``: ``(left, top, width, height, digit)`` per digit, in file
        order, with the label 10 already mapped to the digit 0.

    Raises:
        ValueError: if the file is not HDF5 or not laid out as above, naming it.
    """
    import h5py

    where = path if isinstance(path, (str, os.PathLike)) else "digitStruct.mat"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(
            f"{where}: not a MATLAB v7.3 (HDF5) digitStruct.mat ({e})"
        ) from e
    with f:
        try:
            names = np.asarray(f["digitStruct/name"][()]).ravel()
            bboxes = np.asarray(f["digitStruct/bbox"][()]).ravel()
        except KeyError as e:
            raise ValueError(
                f"{where}: expected datasets digitStruct/name and digitStruct/bbox. "
                f"Received top-level keys: {sorted(f.keys())}"
            ) from e
        if len(names) != len(bboxes):
            raise ValueError(
                f"{where}: digitStruct/name has {len(names)} entries but "
                f"digitStruct/bbox has {len(bboxes)}"
            )
        records = []
        for i, (name_ref, bbox_ref) in enumerate(zip(names, bboxes)):
            name = "".join(map(chr, np.asarray(f[name_ref][()]).ravel()))
            group = f[bbox_ref]
            try:
                columns = [_h5_values(f, group[key]) for key in _FIELDS]
            except KeyError as e:
                raise ValueError(
                    f"{where}: bbox of image {i} ({name}) has fields "
                    f"{sorted(group.keys())}; expected {list(_FIELDS)}"
                ) from e
            if len({len(c) for c in columns}) != 1:
                raise ValueError(
                    f"{where}: bbox fields of image {i} ({name}) differ in length: "
                    + ", ".join(f"{k} {len(c)}" for k, c in zip(_FIELDS, columns))
                )
            boxes = np.stack(columns, axis=1)
            boxes[:, 4] = np.where(boxes[:, 4] == 10, 0, boxes[:, 4])
            records.append((name, boxes))
    return records


def crop_box(boxes: np.ndarray, expand: float) -> tuple[float, float, float, float]:
    """The crop around a number: its digits' union, scaled about its centre.

    Args:
        boxes: ``[k, >=4]``, ``(left, top, width, height, ...)`` per digit, pixels.
        expand: factor on the width and on the height of the union (1.3 is
            Goodfellow et al.'s "expanded by 30%"; 2.6 for the 128 set).

    Returns:
        ``(left, top, right, bottom)`` in source pixels, floats; may extend past
        the image.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 4 or not len(boxes):
        raise ValueError(
            "Expected boxes [k, >=4] with k >= 1 (left, top, width, height, ...). "
            f"Received shape {boxes.shape}"
        )
    if not expand > 0:
        raise ValueError(f"Expected expand > 0. Received: {expand}")
    left, top = boxes[:, 0].min(), boxes[:, 1].min()
    right = (boxes[:, 0] + boxes[:, 2]).max()
    bottom = (boxes[:, 1] + boxes[:, 3]).max()
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half_w, half_h = (right - left) * expand / 2, (bottom - top) * expand / 2
    return (
        float(cx - half_w),
        float(cy - half_h),
        float(cx + half_w),
        float(cy + half_h),
    )


def crop_image(
    image: Image.Image | np.ndarray,
    box: Sequence[float],
    size: int,
) -> np.ndarray:
    """Crops ``box`` (rounded to whole pixels) and resizes it to ``size`` x ``size``.

    Parts of the box outside the image come out black (PIL ``Image.crop``); the
    resize is ``Image.BILINEAR``. The result is RGB, ``uint8 [size, size, 3]``.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    left, top, right, bottom = (math.floor(v + 0.5) for v in box)
    right, bottom = max(right, left + 1), max(bottom, top + 1)  # at least 1 pixel
    crop = image.convert("RGB").crop((left, top, right, bottom))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), np.uint8)


def sequence_label(digits: Sequence[int], max_digits: int = MAX_DIGITS) -> np.ndarray:
    """The digits in the given (file) order, padded with the null class 10.

    Args:
        digits: 1 to ``max_digits`` digits 0-9 (:func:`read_digit_struct` has
            already turned the file's label 10 into 0).
        max_digits: length of the label.

    Returns:
        ``int64 [max_digits]``, e.g. ``[1, 9, 10, 10, 10]`` for "19".
    """
    digits = np.asarray(digits, np.float64).ravel()
    if len(digits) > max_digits:
        raise ValueError(
            f"Expected at most {max_digits} digits. Received {len(digits)}: "
            f"{digits.tolist()}"
        )
    if not np.all((digits >= 0) & (digits <= 9) & (digits == np.round(digits))):
        raise ValueError(
            "Expected digits 0-9 (map the file's label 10 to 0 first). "
            f"Received: {digits.tolist()}"
        )
    label = np.full(max_digits, NULL_LABEL, np.int64)
    label[: len(digits)] = digits.astype(np.int64)
    return label


# ------------------------------------------------------------------------------------
# Sources in the manual folder.


def find_sources(manual_dir: str | os.PathLike) -> dict[str, Path]:
    """The archive or folder for each split present in ``manual_dir``.

    Returns:
        ``{"train": path, "test": path[, "extra": path]}``: ``<split>.tar.gz``, or
        a ``<split>/`` folder with a ``digitStruct.mat`` when there is no archive.

    Raises:
        FileNotFoundError: if train or test is missing, naming the folder, the
            files looked for and the folder's content.
    """
    manual_dir = Path(manual_dir).expanduser()
    sources = {}
    for split in REQUIRED_SPLITS + OPTIONAL_SPLITS:
        archive, folder = manual_dir / f"{split}.tar.gz", manual_dir / split
        if archive.is_file():
            sources[split] = archive
        elif (folder / "digitStruct.mat").is_file():
            sources[split] = folder
    missing = [s for s in REQUIRED_SPLITS if s not in sources]
    if missing:
        present = (
            sorted(p.name + ("/" if p.is_dir() else "") for p in manual_dir.iterdir())
            if manual_dir.is_dir()
            else []
        )
        wanted = ", ".join(
            f"{s}.tar.gz (or an extracted {s}/ with digitStruct.mat)" for s in missing
        )
        raise FileNotFoundError(
            f"SVHN manual dir {manual_dir}: missing {wanted}. Found: "
            + (", ".join(present[:20]) if present else "nothing (missing or empty)")
            + f". Download train.tar.gz and test.tar.gz (extra.tar.gz optional) "
            f"from {_HOMEPAGE} into it."
        )
    return sources


def _digit_struct_from_archive(archive: Path) -> list[tuple[str, np.ndarray]]:
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.isfile() and Path(member.name).name == "digitStruct.mat":
                # h5py needs to seek: spool the member to a temporary file.
                with tempfile.TemporaryFile() as tmp:
                    src = tar.extractfile(member)
                    while chunk := src.read(1 << 24):
                        tmp.write(chunk)
                    tmp.seek(0)
                    return read_digit_struct(tmp)
    raise FileNotFoundError(f"{archive}: no digitStruct.mat in this archive")


def _pngs_from_archive(archive: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith(".png"):
                yield Path(member.name).name, tar.extractfile(member).read()


def _examples(
    source: Path, split: str, size: int, expand: float
) -> Iterator[tuple[str, dict]]:
    """``(key, example)`` for every image of ``source`` with at most 5 digits."""
    if source.is_dir():
        records = read_digit_struct(source / "digitStruct.mat")
        pngs = (
            (name, (source / name).read_bytes())
            for name, boxes in records
            if len(boxes) <= MAX_DIGITS
        )
    else:
        records = _digit_struct_from_archive(source)
        pngs = _pngs_from_archive(source)
    boxes_by_name = dict(records)
    if len(boxes_by_name) != len(records):
        raise ValueError(f"{source}: digitStruct.mat names some files twice")
    kept = {name for name, boxes in records if len(boxes) <= MAX_DIGITS}
    skipped = len(records) - len(kept)
    logging.info(
        "svhn_multi %s: skipping %d of %d images with more than %d digits "
        "(as Goodfellow et al. 2014)",
        split,
        skipped,
        len(records),
        MAX_DIGITS,
    )
    seen = set()
    for name, data in pngs:
        if name not in kept:
            continue
        seen.add(name)
        boxes = boxes_by_name[name]
        box = crop_box(boxes, expand)
        image = Image.open(io.BytesIO(data))
        yield (
            name,
            {
                "image": crop_image(image, box, size),
                "label": sequence_label(boxes[:, 4]),
                "length": len(boxes),
                "filename": name,
                "box": np.asarray(box, np.float32),
            },
        )
    if missing := sorted(kept - seen):
        raise ValueError(
            f"{source}: digitStruct.mat lists {len(missing)} PNGs that are not there "
            f"(e.g. {', '.join(missing[:5])}); truncated download or extraction?"
        )


# ------------------------------------------------------------------------------------
# The TFDS builder.


@dataclasses.dataclass(eq=False)
class SvhnMultiConfig(tfds.core.BuilderConfig):
    """A crop size and its expansion of the digits' union (see module docstring)."""

    size: int = 64
    expand: float = 1.3


class SvhnMulti(tfds.core.GeneratorBasedBuilder):
    """Multi-digit SVHN, cropped around the digits as Goodfellow et al. 2014."""

    VERSION = tfds.core.Version("1.0.0")
    # TFDS finds a builder's folder from its module name, which points into
    # stn_tf/ for a module installed from pipelines/ (an editable install).
    pkg_dir_path = tfds.core.Path(__file__).parent
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[SvhnMultiConfig]] = [
        SvhnMultiConfig(
            name=str(size),
            size=size,
            expand=EXPAND[size],
            description=(
                f"Union of the digit boxes expanded {EXPAND[size]}x about its "
                f"centre, resized to {size}x{size}."
            ),
        )
        for size in SIZES
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download train.tar.gz and test.tar.gz (and optionally extra.tar.gz) of the
"Format 1: full numbers" SVHN from {_HOMEPAGE} and put them, as they are, in
the manual dir (`manual_dir=` of `stn_tf.pipelines.svhn.load`, or TFDS's
`<data_dir>/downloads/manual/`):

    <manual_dir>/train.tar.gz
    <manual_dir>/test.tar.gz
    <manual_dir>/extra.tar.gz   (optional: the `extra` split exists only with it)

Already extracted archives work too: <manual_dir>/train/digitStruct.mat and
<manual_dir>/train/1.png, 2.png, ... (the same for test/ and extra/).
"""

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return self.dataset_info_from_configs(
            description=(
                "SVHN house numbers of 1-5 digits (Netzer et al. 2011), cropped as "
                "Goodfellow et al. 2014: see pipelines/svhn.py."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "label": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int64),
                    "length": tfds.features.ClassLabel(num_classes=MAX_DIGITS + 1),
                    "filename": tfds.features.Text(),
                    "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGE,
            citation="""\
@inproceedings{netzer2011reading,
  title={Reading Digits in Natural Images with Unsupervised Feature Learning},
  author={Netzer, Yuval and Wang, Tao and Coates, Adam and Bissacco, Alessandro
          and Wu, Bo and Ng, Andrew Y.},
  booktitle={NIPS Workshop on Deep Learning and Unsupervised Feature Learning},
  year={2011}
}""",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sources = find_sources(dl_manager.manual_dir)
        return {
            split: self._generate_examples(source, split)
            for split, source in sources.items()
        }

    def _generate_examples(self, source: Path, split: str):
        config = self.builder_config
        yield from _examples(Path(source), split, config.size, config.expand)


# ------------------------------------------------------------------------------------
# Loading.


def _builder(size: int, data_dir: str | os.PathLike | None):
    if size not in SIZES:
        raise ValueError(f"Unknown svhn_multi size {size!r}; expected one of {SIZES}")
    return tfds.builder(
        f"svhn_multi/{size}",
        data_dir=None if data_dir is None else os.fspath(data_dir),
        try_gcs=False,
    )


def _prepared_builder(size, data_dir, manual_dir):
    builder = _builder(size, data_dir)
    if not builder.is_prepared():
        if manual_dir is None:
            manual_dir = Path(builder.data_dir_root) / "downloads" / "manual"
        find_sources(manual_dir)  # our error message before TFDS's
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(manual_dir),
                try_download_gcs=False,
            )
        )
    return builder


def _check_split(split: str, builder) -> None:
    known = sorted(builder.info.splits.keys())
    # "train+extra[:10%]" -> train, extra
    names = [re.sub(r"\[.*\]$", "", part.strip()) for part in str(split).split("+")]
    unknown = [n for n in names if n not in known and n != "all"]
    if unknown:
        hint = (
            " (extra exists only when extra.tar.gz or extra/ was in the manual dir "
            f"when the dataset was prepared; delete {builder.data_dir} to rebuild)"
            if "extra" in unknown
            else ""
        )
        raise ValueError(
            f"svhn_multi/{builder.builder_config.name} in {builder.data_dir}: unknown "
            f"split {', '.join(map(repr, unknown))} in {split!r}; expected splits "
            f"of {known}, or TFDS expressions such as 'train+extra'{hint}"
        )


def load(
    split: str,
    *,
    size: int = 64,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> tf.data.Dataset:
    """One split of ``svhn_multi/{size}``, prepared from ``manual_dir`` if needed.

    Args:
        split: ``"train"``, ``"test"``, ``"extra"`` (if prepared with it) or a TFDS
            split expression (``"train+extra"``, ``"train[:90%]"``).
        size: 64 or 128, the crop size (see the module docstring).
        data_dir: TFDS data folder (TFDS's default when None).
        manual_dir: folder with the archives (``<data_dir>/downloads/manual`` when
            None); only read when the dataset is not prepared yet.

    Returns:
        Examples ``{"image": uint8 [size, size, 3], "label": int32 [5]}``, the
        label padded with 10, in a fixed order (not shuffled).
    """
    builder = _prepared_builder(size, data_dir, manual_dir)
    _check_split(split, builder)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return ds.map(
        lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def num_examples(
    split: str,
    size: int = 64,
    data_dir: str | os.PathLike | None = None,
    *,
    manual_dir: str | os.PathLike | None = None,
) -> int:
    """The number of examples of ``split`` (a split expression works too)."""
    builder = _prepared_builder(size, data_dir, manual_dir)
    _check_split(split, builder)
    return int(builder.info.splits[split].num_examples)


def training_split(
    size: int = 64,
    data_dir: str | os.PathLike | None = None,
    *,
    manual_dir: str | os.PathLike | None = None,
) -> str:
    """``"train+extra"`` when the dataset was prepared with extra, else ``"train"``
    (Goodfellow et al. and the STN paper train on both)."""
    builder = _prepared_builder(size, data_dir, manual_dir)
    return "train+extra" if "extra" in builder.info.splits else "train"


def pixels(image, key, training):
    """A stored crop as the models see it: float32 in [0, 1] (A.5 names no
    augmentation, so training and test examples are alike)."""
    del key, training
    return tf.cast(image, tf.float32) / 255.0


def decode(size: int):
    """``encoded -> [size, size, 3]`` float32 in [0, 1]: an encoded crop (PNG or
    JPEG, cut around the number as the dataset's crops are) as a test example.

    A crop of another size is resized to ``size`` x ``size`` as the dataset's
    crops were (bilinear, antialiased, aspect not kept); a stored crop, encoded
    losslessly, comes out exactly as ``pixels`` gives it.
    """

    def apply(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
        image = tf.cond(
            same,
            lambda: tf.cast(image, tf.float32),
            # Rounded: the stored crops are 8-bit too.
            lambda: tf.round(tf.image.resize(image, [size, size], antialias=True)),
        )
        return tf.ensure_shape(pixels(image, None, False), [size, size, 3])

    return apply


# The dataset registry's hooks (stn_tf.pipelines.datasets.FAMILIES).


def pipeline(spec, split, *, batch_size, training, seed, image_size, sources):
    """The ``split`` of ``svhn_multi/{image_size}`` as an ``ImagePipeline``
    (training reads train+extra when prepared with extra)."""
    where = dict(data_dir=sources.data_dir, manual_dir=sources.manual_dir)
    if split == "train":
        split = training_split(image_size, **where)
    examples = load(split, size=image_size, **where)
    count = num_examples(split, image_size, **where)
    return images.ImagePipeline(
        spec,
        examples,
        count,
        pixels,
        batch_size=batch_size,
        training=training,
        seed=seed,
        origin=f"svhn_multi/{image_size} {split} ({count} images)",
    )


def decoding(image_size: int) -> str:
    """What ``decode`` does, in words (for serving metadata)."""
    return f"crops around the number resized to {image_size} px"


def encoded(split, num, *, image_size, sources) -> list[bytes]:
    """The first ``num`` crops of ``split``, encoded as PNG."""
    examples = load(
        split, size=image_size, data_dir=sources.data_dir, manual_dir=sources.manual_dir
    )
    return [tf.io.encode_png(ex["image"]).numpy() for ex in examples.take(num)]
