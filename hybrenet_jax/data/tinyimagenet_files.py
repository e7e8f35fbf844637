"""Reading the standard ``tiny-imagenet-200`` release from a folder or its zip (no TensorFlow).

Expected layout (as in ``tiny-imagenet-200.zip``)::

    tiny-imagenet-200/
      wnids.txt                      one WordNet id per line (200 in the real data)
      train/<wnid>/images/*.JPEG     500 per class in the real data
      val/images/*.JPEG              10,000 in the real data
      val/val_annotations.txt        tab-separated: filename, wnid, x0, y0, x1, y1

The manual dir may hold ``tiny-imagenet-200.zip``, the extracted ``tiny-imagenet-200/``
folder, or be that folder itself. Labels are indices into the *sorted* wnids. Images are
decoded with PIL and converted to RGB (a few hundred of the real JPEGs are grayscale).
"""

from __future__ import annotations

import bisect
import io
import pathlib
import posixpath
import zipfile
from collections.abc import Iterator

import numpy as np

from hybrenet_jax.data.errors import DatasetError

ARCHIVE_NAME = "tiny-imagenet-200.zip"
FOLDER_NAME = "tiny-imagenet-200"
IMAGE_SIZE = 64
_IMAGE_SUFFIXES = (".jpeg", ".jpg")

LAYOUT = (
    f"{ARCHIVE_NAME} or its extracted folder {FOLDER_NAME}/ containing wnids.txt, "
    "train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt "
    "(tab-separated: filename, wnid, bbox)"
)


class _Tree:
    """Read-only view of the release: relative POSIX paths, from a folder or a zip."""

    def __init__(self, where: str, files: list[str], read):
        self.where = where
        self._sorted = sorted(files)
        self._files = set(files)
        self._read = read

    def exists(self, rel: str) -> bool:
        return rel in self._files

    def under(self, folder: str) -> list[str]:
        """Files below ``folder`` (any depth), sorted; a binary search, not a scan."""
        prefix = folder.rstrip("/") + "/"
        start = bisect.bisect_left(self._sorted, prefix)
        stop = bisect.bisect_left(self._sorted, prefix[:-1] + chr(ord("/") + 1))
        return self._sorted[start:stop]

    def read(self, rel: str) -> bytes:
        try:
            return self._read(rel)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise DatasetError(f"cannot read {rel} from {self.where}: {e}") from e


def _folder_tree(root: pathlib.Path) -> _Tree:
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return _Tree(str(root), files, lambda rel: (root / rel).read_bytes())


def _zip_tree(path: pathlib.Path) -> _Tree:
    try:
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{path} is not a readable zip archive ({e}); expected {LAYOUT}") from e
    roots = sorted(
        (posixpath.dirname(n) for n in names if posixpath.basename(n) == "wnids.txt"), key=len
    )
    if not roots:
        raise DatasetError(f"{path} has no wnids.txt; expected {LAYOUT}")
    prefix = roots[0] + "/" if roots[0] else ""
    files = [n[len(prefix):] for n in names if n.startswith(prefix)]
    return _Tree(f"{path}:{prefix}", files, lambda rel: archive.read(prefix + rel))


def open_release(manual_dir: str | pathlib.Path | None) -> _Tree:
    """Find the release in ``manual_dir`` (zip, sub-folder, or the folder itself).

    Args:
      manual_dir: the folder the user placed the download in.

    Returns:
      A read-only view of the release, not yet validated (see :func:`index_release`).
    """
    if manual_dir is None:
        raise DatasetError(f"tinyimagenet needs manual_dir: a folder holding {LAYOUT}")
    base = pathlib.Path(manual_dir).expanduser()
    if (base / "wnids.txt").is_file():
        return _folder_tree(base)
    if (base / FOLDER_NAME).is_dir():
        return _folder_tree(base / FOLDER_NAME)
    if (base / ARCHIVE_NAME).is_file():
        return _zip_tree(base / ARCHIVE_NAME)
    found = sorted(p.name for p in base.iterdir())[:10] if base.is_dir() else "no such folder"
    raise DatasetError(f"expected {LAYOUT} in {base}; found: {found}")


def _is_image(rel: str) -> bool:
    return rel.lower().endswith(_IMAGE_SUFFIXES)


def index_release(tree: _Tree) -> dict[str, list[tuple[str, int]]]:
    """Validate the layout and list every example.

    Args:
      tree: the view returned by :func:`open_release`.

    Returns:
      ``{"train": [(path, label), ...], "validation": [...]}`` sorted by path; labels index
      the sorted wnids.
    """
    where = tree.where
    if not tree.exists("wnids.txt"):
        raise DatasetError(f"{where}: missing wnids.txt; expected {LAYOUT}")
    wnids = sorted({w.strip() for w in tree.read("wnids.txt").decode().splitlines() if w.strip()})
    if not wnids:
        raise DatasetError(f"{where}: wnids.txt is empty")
    label = {w: i for i, w in enumerate(wnids)}

    train = []
    for w in wnids:
        images = [f for f in tree.under(f"train/{w}/images") if _is_image(f)]
        if not images:
            raise DatasetError(f"{where}: no JPEGs in train/{w}/images/ for wnid {w}")
        train += [(f, label[w]) for f in images]

    ann = "val/val_annotations.txt"
    if not tree.exists(ann):
        raise DatasetError(f"{where}: missing {ann}; expected {LAYOUT}")
    val = []
    for n, line in enumerate(tree.read(ann).decode().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label:
            raise DatasetError(f"{where}: {ann} line {n} is not 'filename<TAB>known wnid<TAB>...'")
        rel = f"val/images/{fields[0]}"
        if not tree.exists(rel):
            raise DatasetError(f"{where}: {ann} line {n} names missing image {rel}")
        val.append((rel, label[fields[1]]))
    if not val:
        raise DatasetError(f"{where}: {ann} lists no images")
    return {"train": train, "validation": sorted(val)}


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode one JPEG to ``uint8 [64, 64, 3]`` RGB (grayscale images are converted).

    Args:
      data: encoded bytes.
      name: where they came from, for the error message.

    Returns:
      The RGB image array.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{name} is not a readable image: {e}") from e
    if rgb.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DatasetError(f"{name} is {rgb.shape[1]}x{rgb.shape[0]}, expected 64x64")
    return rgb


def iter_examples(tree: _Tree, split: str) -> Iterator[tuple[str, np.ndarray, int]]:
    """Yield ``(path, image, label)`` of one split (``train`` or ``validation``) in path order."""
    for rel, label in index_release(tree)[split]:
        yield rel, decode_image(tree.read(rel), f"{tree.where}/{rel}"), label
