"""The ``folder:`` and ``tfds:`` readers: list, check and split what a source holds, lazily.

``folder(PATH)``: one sub-folder of images per class (the layout of
``keras.utils.image_dataset_from_directory``), ``PATH/train`` + ``PATH/test`` when both
exist; every file's header is checked when the folder is listed (:func:`probe`: magic bytes,
size, channels, and the end marker for truncation, two small reads per file, no decoding),
so a corrupt file, a gray/RGB mix or a size mismatch is named before training. ``tfds_source``:
any tensorflow-datasets dataset with supervised keys and an image or 1-D vector feature,
its labels read in one pass with image decoding skipped. Both return a :class:`Source` of
``recipes.sources`` lazy examples and labels; ``recipes.data.load`` splits and checks it.

Hand-written (DESIGN.md "library first"): the file and class bookkeeping and the header
probe; decoding and resizing are TensorFlow's, dataset access is tensorflow-datasets'.

Layer 2: imports ``recipes.sources`` (and tensorflow_datasets lazily).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from recipes import sources

_TAIL = 1024  # bytes read at a file's end to find its end marker
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels decode_image gives
_BMP_CHANNELS = {8: 1, 24: 3, 32: 4}  # bits per pixel TensorFlow's BMP decoder reads


@dataclasses.dataclass(frozen=True)
class Header:
    """What a file's header says: format, size and the channels ``decode_image`` gives."""

    format: str
    height: int
    width: int
    channels: int

    @property
    def gray(self) -> bool:
        """1 or 2 channels (gray, gray + alpha)."""
        return self.channels <= 2


def _int(raw: bytes, order: str = "big", signed: bool = False) -> int:
    return int.from_bytes(raw, order, signed=signed)


def _jpeg_frame(f: Any) -> tuple[int, int, int] | None:
    """(height, width, components) of a JPEG's frame header (SOFn), walking its segments."""
    pos = 2
    while True:
        f.seek(pos)
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = f.read(6)  # precision, height (2), width (2), components
            return (_int(frame[1:3]), _int(frame[3:5]), frame[5]) if len(frame) == 6 else None
        elif marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            return None
        else:
            pos += 2 + _int(head[2:4])


def _header(f: Any, head: bytes, file_size: int) -> tuple[str, int, int, int, bool]:
    """(format, height, width, channels, whole) from the first bytes and the tail."""
    f.seek(max(0, file_size - _TAIL))
    tail = f.read()
    if head.startswith(_PNG) and head[12:16] == b"IHDR":
        return ("PNG", _int(head[20:24]), _int(head[16:20]), _PNG_CHANNELS.get(head[25], 0),
                b"IEND" in tail[-12:])
    if head.startswith(b"\xff\xd8"):
        frame = _jpeg_frame(f) or (0, 0, 0)
        return ("JPEG", frame[0], frame[1], frame[2] if frame[2] in (1, 3, 4) else 0,
                b"\xff\xd9" in tail)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ("GIF", _int(head[8:10], "little"), _int(head[6:8], "little"), 3,
                tail.rstrip(b"\x00")[-1:] == b";")
    if head.startswith(b"BM") and len(head) >= 30:
        if _int(head[14:18], "little") == 12:  # OS/2 header: 16-bit sizes
            h, w, bits = (_int(head[20:22], "little"), _int(head[18:20], "little"),
                          _int(head[24:26], "little"))
        else:
            h, w = abs(_int(head[22:26], "little", True)), _int(head[18:22], "little", True)
            bits = _int(head[28:30], "little")
        return "BMP", h, w, _BMP_CHANNELS.get(bits, 0), file_size >= _int(head[2:6], "little")
    raise ValueError(f"not a PNG, JPEG, BMP or GIF image (it starts with {head[:8]!r})")


def probe(path: str | os.PathLike) -> Header:
    """Reads a file's header and end marker (no decoding): its format, size and channels.

    Raises:
        ValueError: naming the file when it cannot be read, is empty, is no PNG/JPEG/BMP/GIF,
            has a damaged header, a layout TensorFlow cannot decode, or no end marker
            (truncated).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(32)
            if not head:
                raise ValueError("the file is empty")
            fmt, h, w, c, whole = _header(f, head, size)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e}); fix its permissions or delete it"
                         ) from e
    except ValueError as e:
        raise ValueError(f"{path}: {e}; replace or delete it") from None
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"{path}: damaged or unsupported {fmt} header (size {h}x{w}, "
                         f"{c or 'unknown'} channels); re-save it as an 8-bit PNG or JPEG")
    if not whole:
        raise ValueError(f"{path}: truncated {fmt} (its end marker is missing); the file is "
                         "damaged: replace or delete it")
    return Header(fmt, h, w, c)


# --- sources: folder and tfds ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """A lazy source: ``splits`` maps "train" (and "test" if it has one) to (x, labels)."""

    splits: dict[str, tuple[sources.Images, np.ndarray]]
    class_names: tuple[str, ...]
    source: str


def check_image_options(image_size: Any, color_mode: Any) -> tuple[tuple[int, int] | None, str]:
    """``dataset.image_size`` as (H, W) or None (= the first image's), and ``color_mode``.

    Raises:
        ValueError: naming the field, its value and what it takes.
    """
    if color_mode not in sources.COLOR_MODES:
        raise ValueError(f"dataset.color_mode={color_mode!r}: expected one of "
                         f"{', '.join(sources.COLOR_MODES)}")
    if image_size is None or (isinstance(image_size, (tuple, list)) and not image_size):
        return None, color_mode
    ok = isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s >= 1
        for s in image_size)
    if not ok:
        raise ValueError(f"dataset.image_size={image_size!r}: expected (height, width) in "
                         "pixels, e.g. (64, 64), or () for the first image's size")
    return (int(image_size[0]), int(image_size[1])), color_mode


def _listing(where: str, directory: Path) -> tuple[list[str], list[list[str]]]:
    """Class folders of ``directory`` (sorted) and each one's image files (sorted, recursive)."""
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not classes:
        loose = sum(e.name.lower().endswith(sources.IMAGE_EXTENSIONS) for e in entries)
        found = f"it holds {loose} images but no sub-folders" if loose else (
            f"it holds {', '.join(e.name for e in entries[:6]) or 'nothing'}")
        raise ValueError(
            f"{where}: {directory} has no class sub-folders ({found}); expected one "
            f"sub-folder of images per class, {directory}/CLASS/IMAGE.png (the layout of "
            "keras.utils.image_dataset_from_directory)")
    files = []
    for name in classes:
        found = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(directory / name, followlinks=True)
            for f in names
            if f.lower().endswith(sources.IMAGE_EXTENSIONS) and not f.startswith("."))
        if not found:
            raise ValueError(
                f"{where}: class folder {directory / name} holds no images "
                f"({', '.join(sources.IMAGE_EXTENSIONS)}, any case); add images or remove "
                "the folder")
        files.append(found)
    return classes, files


def _layout(where: str, root: Path) -> dict[str, Path]:
    """``{"train": root/train, "test": root/test}`` if both exist, else ``{"train": root}``."""
    if not root.exists():
        raise ValueError(f"{where}: no such directory; give a folder holding one sub-folder of "
                         "images per class (or train/ and test/ folders of those)")
    if not root.is_dir():
        raise ValueError(f"{where}: is a file; give the folder holding one sub-folder of "
                         "images per class")
    train, test = root / "train", root / "test"
    if train.is_dir() and test.is_dir():
        return {"train": train, "test": test}
    if train.is_dir() != test.is_dir():
        have, lack = ("train", "test") if train.is_dir() else ("test", "train")
        raise ValueError(f"{where}: has {have}/ but no {lack}/; add {root / lack} with the "
                         f"same class folders, or put the class folders directly in {root} "
                         "(a test split is then carved with dataset.test_size)")
    return {"train": root}


def _channels(where: str, headers: list[Header], paths: list[str], color_mode: str) -> int:
    """1 or 3 channels: the mode's, or under ``auto`` the first image's (no gray/RGB mix)."""
    if color_mode != "auto":
        return 1 if color_mode == "grayscale" else 3
    first = headers[0].gray
    for path, header in zip(paths, headers):
        if header.gray != first:
            gray, rgb = (paths[0], path) if first else (path, paths[0])
            raise ValueError(
                f"{where}: grayscale and color images are mixed ({gray} is grayscale, {rgb} "
                "is color) and dataset.color_mode=auto takes the first image's channels; set "
                "dataset.color_mode=rgb (or grayscale) to convert them all")
    return 1 if first else 3


def _size(where: str, headers: list[Header], paths: list[str],
          image_size: tuple[int, int] | None) -> tuple[int, int]:
    """``image_size``, or the first image's size, which every image must then have."""
    if image_size:
        return image_size
    h, w = headers[0].height, headers[0].width
    for path, header in zip(paths, headers):
        if (header.height, header.width) != (h, w):
            raise ValueError(
                f"{where}: {path} is {header.height}x{header.width} but {paths[0]} is "
                f"{h}x{w}; images of different sizes need one size: set dataset.image_size="
                f"({h}, {w}) (height, width) to resize them all")
    return h, w


def folder(path: str | os.PathLike, *, image_size: Any = (), color_mode: str = "auto"
           ) -> Source:
    """``folder:PATH``: one sub-folder of images per class, read lazily as ``sources.FileImages``.

    ``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*`` are the splits when both exist (same
    classes), else ``PATH/CLASS/*`` is the train split alone. Class names are the folder
    names, sorted; image files (.png .jpg .jpeg .bmp .gif, any case, in sub-folders too) are
    sorted by path; other files and hidden ones (``.name``, e.g. macOS ``._x.png``) are
    ignored, as Keras ignores other files. Every file's header is probed
    (:func:`probe`): corrupt files, a size mismatch without ``image_size`` and a gray/colour
    mix under ``color_mode=auto`` are refused before anything is decoded.

    Raises:
        ValueError: naming the path, the file and the fix.
    """
    where = f"dataset.name='folder:{os.fspath(path)}'"
    size, color_mode = check_image_options(image_size, color_mode)
    root = Path(path).expanduser().resolve()
    layout = _layout(where, root)
    listed = {k: _listing(where, d) for k, d in layout.items()}
    classes = listed["train"][0]
    if "test" in listed and listed["test"][0] != classes:
        only_train = sorted(set(classes) - set(listed["test"][0]))
        only_test = sorted(set(listed["test"][0]) - set(classes))
        raise ValueError(f"{where}: train/ and test/ need the same class folders; only in "
                         f"train/: {only_train or 'none'}, only in test/: {only_test or 'none'}")
    paths = [p for k in listed for files in listed[k][1] for p in files]
    headers = [probe(p) for p in paths]
    channels = _channels(where, headers, paths, color_mode)
    size = _size(where, headers, paths, size)
    splits = {}
    for k, (_, files) in listed.items():
        labels = np.concatenate([np.full(len(f), c, np.int64) for c, f in enumerate(files)])
        splits[k] = (sources.FileImages([p for f in files for p in f], size, channels), labels)
    return Source(splits, tuple(classes), str(root))


def split_spec(spec: str) -> list[str]:
    """``NAME[/CONFIG][:SPLIT[:SPLIT]]`` cut at the colons outside brackets (``train[:80%]``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += (ch == "[") - (ch == "]")
        if ch == ":" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    return [*parts, spec[start:]]


def _tfds_splits(where: str, available: list[str], named: list[str]) -> list[str | None]:
    """[train, test or None (carve it)]: the named splits, else the builder's."""
    if len(named) > 2 or any(not s for s in named):
        raise ValueError(f"{where}: expected tfds:NAME[/CONFIG][:TRAIN_SPLIT[:TEST_SPLIT]], "
                         "e.g. tfds:mnist:train:test or tfds:tf_flowers:train[:80%]")
    if named:
        return [named[0], named[1] if len(named) == 2 else None]
    if not available:  # an unprepared builder (or tfds.testing.mock_data) lists no splits
        return ["train", "test"]
    if "train" not in available:
        raise ValueError(f"{where}: no 'train' split (it has {', '.join(available)}); name "
                         "them: tfds:NAME:TRAIN_SPLIT[:TEST_SPLIT]")
    test = next((s for s in ("test", "validation") if s in available), None)
    return ["train", test]


def _describe(features: Any) -> str:
    try:
        return ", ".join(f"{k}: {type(v).__name__}{tuple(v.shape)}" for k, v in features.items())
    except Exception:  # noqa: BLE001 - only for a message
        return repr(features)


def _supervised(where: str, info: Any, tfds: Any) -> tuple[str, Any, Any, bool]:
    """(input key, input feature, label feature, is_image) of a builder, or a ValueError."""
    keys, features = info.supervised_keys, info.features
    supported = ("supported: an image (tfds.features.Image) or 1-D numeric vector "
                 "(tfds.features.Tensor of shape (D,)) input with a ClassLabel label")
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise ValueError(f"{where}: the dataset has no (input, label) supervised keys "
                         f"(supervised_keys={keys!r}; features: {_describe(features)}); "
                         f"{supported}")
    x_feature, label = features[keys[0]], features[keys[1]]
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(f"{where}: the label {keys[1]!r} is {type(label).__name__}, not a "
                         f"ClassLabel (classification only; features: {_describe(features)}); "
                         f"{supported}")
    is_image = isinstance(x_feature, tfds.features.Image)
    dtype = np.dtype(getattr(x_feature, "np_dtype", np.object_))
    is_vector = (type(x_feature) is tfds.features.Tensor and len(x_feature.shape) == 1
                 and bool(x_feature.shape[0]) and np.issubdtype(dtype, np.number))
    if not (is_image or is_vector):
        raise ValueError(f"{where}: the input {keys[0]!r} is {type(x_feature).__name__}"
                         f"{tuple(x_feature.shape)} (features: {_describe(features)}); "
                         f"{supported}")
    return keys[0], x_feature, label, is_image


def _tfds_images(where: str, feature: Any, size: tuple[int, int] | None, color_mode: str
                 ) -> tuple[tuple[int, ...], np.dtype, Callable]:
    """(example shape, dtype, convert) for an Image feature read with SkipDecoding."""
    h, w, c = feature.shape
    channels = (c or 3) if color_mode == "auto" else (1 if color_mode == "grayscale" else 3)
    if size is None and not (h and w):
        raise ValueError(f"{where}: the images vary in size ({feature.shape}); set "
                         "dataset.image_size=(height, width) to resize them all")
    size = size or (int(h), int(w))
    dtype = np.dtype(np.uint8 if np.dtype(feature.np_dtype) == np.uint8 else np.float32)

    def convert(raw):
        image = sources.convert_image(feature.decode_example(raw), channels, size)
        return tf.cast(image, tf.as_dtype(dtype))

    return (*size, channels), dtype, convert


def tfds_source(spec: str, *, data_dir: str | os.PathLike | None = None, image_size: Any = (),
                color_mode: str = "auto") -> Source:
    """``tfds:NAME[/CONFIG][:TRAIN_SPLIT[:TEST_SPLIT]]`` as lazy ``sources.StreamImages``.

    Read through ``tfds.builder(NAME/CONFIG, data_dir)`` with ``as_supervised=True`` and
    ``shuffle_files=False`` (the same order on every pass). Splits: the named ones (TFDS
    slicing such as ``train[:80%]`` allowed), else ``train`` and ``test`` (or
    ``validation``); with no test split the caller carves one. Labels come from one pass
    with the image decoding skipped (``tfds.decode.SkipDecoding``); images are decoded only
    when read, converted by ``dataset.color_mode`` and resized to ``dataset.image_size``.

    Raises:
        ValueError: unknown dataset, no supervised keys, an input that is neither an image
            nor a 1-D vector (text, audio, ...), a non-ClassLabel label, or data that TFDS
            cannot load (offline), each naming what exists and what is supported.
    """
    import tensorflow_datasets as tfds  # slow to import: only when a tfds: source is used

    where = f"dataset.name='tfds:{spec}'"
    size, color_mode = check_image_options(image_size, color_mode)
    name, *named = split_spec(spec)
    how = ("run once with internet access so TFDS downloads it (into dataset.data_dir if set, "
           "else TFDS's default ~/tensorflow_datasets), or set dataset.data_dir to a TFDS data "
           "dir that holds it")
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir else None)
    except Exception as e:  # tfds raises many kinds: not found, bad config, bad version
        raise ValueError(f"{where}: tensorflow_datasets cannot open {name!r} "
                         f"({type(e).__name__}: {sources.first_line(e)})") from e
    x_key, feature, label, is_image = _supervised(where, builder.info, tfds)
    splits = _tfds_splits(where, list(builder.info.splits.keys()), named)
    if is_image:
        shape, dtype, convert = _tfds_images(where, feature, size, color_mode)
    else:
        dtype = np.dtype(np.uint8 if np.dtype(feature.np_dtype) == np.uint8 else np.float32)
        shape, convert = tuple(feature.shape), sources.cast_examples(dtype, False)
    decoders = {x_key: tfds.decode.SkipDecoding()} if is_image else None
    out, split = {}, splits[0]
    try:
        builder.download_and_prepare()
        for k, split in zip(("train", "test"), splits):
            if split is None:
                continue
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False,
                                    decoders=decoders)
            labels = [b.numpy() for b in ds.map(lambda _, y: y).batch(65536)]
            y = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
            images = sources.StreamImages(ds.map(lambda x, _: x), len(y), shape, dtype, convert)
            out[k] = (images, y)
    except Exception as e:  # offline, not prepared, a bad split name: all need the same fix
        raise ValueError(f"{where}: TFDS could not read split {split!r} "
                         f"({type(e).__name__}: {sources.first_line(e)}). Fix: {how}") from e
    return Source(out, tuple(label.names), f"tfds:{spec}")
