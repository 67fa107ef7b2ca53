# Over 450 lines: CelebA's list readers, the aligner pool and the aligned-faces file share one record and one worker initialiser; the module is the whole CelebA stage.
"""CelebA input: the attribute and identity lists, and the faces aligned like the actors' faces.

CelebA ships ``img_align_celeba/`` (178 x 218 JPEGs, roughly eye-aligned), ``list_attr_celeba.txt``
and ``identity_CelebA.txt``. This module

* parses the two text files in their real format (:func:`read_attributes`, :func:`read_identities`):
  line 1 of the attribute list is the row count, line 2 the 40 attribute names, then one row per
  image, ``<file> <40 values of 1 or -1>``, with any line endings (the originals use CRLF) and any
  run of spaces between fields. A malformed line is one error naming the file and the line number;
* re-aligns every image with the project's own aligner and template
  (:func:`facevae.faces.aligners.make_aligner`, :func:`facevae.faces.align.align_face`), so a CelebA
  face and an actor's face share one geometry and an attribute vector computed on CelebA means the
  same thing in an actor's latent space (:func:`align_celeba`, :func:`write_aligned`).

CelebA's own crops are too small for dlib's HOG detector at reduced sizes (the shared sample's
89 x 109 images have faces about 45 px wide, the detector needs about 80): each image is resized to
the widths in ``detect_widths`` in turn (upsampled, never below its own width) until a face is
found; the landmarks are mapped back and the crop is warped from the original image.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from facevae import FacevaeError
from facevae.atomic import atomic_path, write_png
from facevae.faces.align import AlignConfig, align_face
from facevae import sheets
from facevae.faces.aligners import aligner_kwargs, from_scaled, make_aligner

log = logging.getLogger(__name__)

#: The 40 attribute names of CelebA, in the order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

DEFAULT_DETECT_WIDTHS = (178, 267, 356)
_VALUES = {"1": 1, "-1": -1}


# --- the text files ------------------------------------------------------------------------------


def _lines(path: str | os.PathLike, what: str) -> list[str]:
    """The file's lines, any line endings (LF, CRLF, CR), a UTF-8 BOM ignored."""
    path = Path(path)
    if not path.is_file():
        raise FacevaeError(f"CelebA {what} file {path} not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FacevaeError(f"{path}: not a text file ({err})") from err
    return text.splitlines()


def read_attributes(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt`` -> (attribute names, image file names, int8 (N, 40) of +1/-1).

    Raises FacevaeError naming the file and the 1-based line number of the first malformed line:
    a missing or wrong count, a name line that is not names, a row with the wrong number of values
    or a value other than 1/-1, a file name listed twice, or fewer/more rows than the count says.
    Blank lines are ignored.
    """
    lines = _lines(path, "attribute")
    numbered = [(i + 1, line.split()) for i, line in enumerate(lines)]
    numbered = [(n, tokens) for n, tokens in numbered if tokens]
    if not numbered:
        raise FacevaeError(f"{path}: empty attribute file")
    (count_line, first) = numbered[0]
    if len(first) != 1 or not first[0].isdigit():
        raise FacevaeError(
            f"{path}, line {count_line}: expected the number of images (CelebA's list_attr_celeba.txt starts "
            f"with a count line), got {' '.join(first)[:80]!r}"
        )
    count = int(first[0])
    if len(numbered) < 2:
        raise FacevaeError(f"{path}: no attribute-name line after the count on line {count_line}")
    names_line, names = numbered[1]
    bad = [name for name in names if name in _VALUES or not (name[0].isalpha() or name[0].isdigit())]
    if bad or "." in "".join(names):
        raise FacevaeError(
            f"{path}, line {names_line}: expected the attribute names (e.g. 5_o_Clock_Shadow Arched_Eyebrows ...), "
            f"got {' '.join(names)[:80]!r}"
        )
    if len(set(names)) != len(names):
        dup = next(name for name in names if names.count(name) > 1)
        raise FacevaeError(f"{path}, line {names_line}: attribute name {dup!r} appears twice")
    width = len(names)
    filenames: list[str] = []
    values = np.empty((len(numbered) - 2, width), dtype=np.int8)
    seen: dict[str, int] = {}
    for row, (number, tokens) in enumerate(numbered[2:]):
        if len(tokens) != width + 1:
            raise FacevaeError(
                f"{path}, line {number}: expected a file name and {width} values of 1 or -1, "
                f"got {len(tokens)} fields"
            )
        try:
            values[row] = [_VALUES[token] for token in tokens[1:]]
        except KeyError:
            wrong = next(token for token in tokens[1:] if token not in _VALUES)
            raise FacevaeError(
                f"{path}, line {number}: attribute values must be 1 or -1, got {wrong!r}"
            ) from None
        name = tokens[0]
        if name in seen:
            raise FacevaeError(f"{path}, line {number}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = number
        filenames.append(name)
    if len(filenames) != count:
        raise FacevaeError(
            f"{path}, line {count_line}: the count says {count} images but the file lists {len(filenames)}"
        )
    return list(names), filenames, values


def read_identities(path: str | os.PathLike) -> dict[str, int]:
    """Parse ``identity_CelebA.txt`` (``<file> <identity>`` per line) -> {file name: identity}.

    A malformed line (not two fields, a non-integer identity, a file listed twice) is an error naming
    the file and the line number. Blank lines are ignored.
    """
    identities: dict[str, int] = {}
    for number, line in enumerate(_lines(path, "identity"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise FacevaeError(f"{path}, line {number}: expected '<image file> <identity number>', got {line.strip()[:80]!r}")
        name, ident = tokens
        try:
            value = int(ident)
        except ValueError:
            raise FacevaeError(f"{path}, line {number}: identity must be an integer, got {ident!r}") from None
        if name in identities:
            raise FacevaeError(f"{path}, line {number}: {name} is listed twice")
        identities[name] = value
    if not identities:
        raise FacevaeError(f"{path}: empty identity file")
    return identities


# --- alignment -----------------------------------------------------------------------------------


def read_rgb(path: str | os.PathLike) -> np.ndarray | None:
    """An image file as uint8 H x W x 3 RGB, or None when it cannot be decoded."""
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        return None
    return np.ascontiguousarray(bgr[:, :, ::-1])


def pick_face(faces, width: int, height: int):
    """The detected face CelebA means: the one whose box centre is nearest the image centre
    (CelebA's aligned images centre the labelled face; a second face is a bystander)."""
    if not faces:
        return None
    centre = np.array([width / 2.0, height / 2.0])

    def distance(face):
        x0, y0, x1, y1 = face.box
        return float(np.hypot(*(np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - centre)))

    return min(faces, key=distance)


def detect_upsampled(aligner, rgb: np.ndarray, widths=DEFAULT_DETECT_WIDTHS):
    """Detect on ``rgb`` resized to each width in turn (never smaller than it is) until a face is
    found. Returns (face with box/landmarks in ``rgb``'s pixels, the scale used) or (None, None)."""

    h, w = rgb.shape[:2]
    tried = set()
    for target in widths:
        scale = max(1.0, float(target) / w)
        if scale in tried:
            continue
        tried.add(scale)
        big = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        faces = aligner.detect(np.ascontiguousarray(big))
        face = pick_face(faces, big.shape[1], big.shape[0])
        if face is not None:
            x0, y0, x1, y1 = face.box
            found = type(face)(
                box=(x0 / scale, y0 / scale, x1 / scale, y1 / scale),
                score=face.score,
                landmarks=from_scaled(face.landmarks, scale),  # pixel centres: (x + 0.5) / s - 0.5
            )
            return found, scale
    return None, None


@dataclass
class Aligned:
    """The result of aligning a list of CelebA images (rows in the order of the input list)."""

    crops: np.ndarray  # uint8 (N, S, S, 3)
    landmarks: np.ndarray  # float32 (N, 68, 2) in crop pixels
    index: np.ndarray  # int64 (N,): row of each kept face in the input list
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count
    aligner: str = ""  # the name of the aligner that ran


# Per-process state of the worker pool: one aligner per process.
_WORKER: dict = {}


def _init_worker(aligner_name: str, aligner_kw: dict, cfg_dict: dict, widths) -> None:
    try:  # the parent owns the cores: one thread of OpenCV/torch per worker process
        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - only a speed hint
        pass
    _WORKER["aligner"] = make_aligner(aligner_name, **aligner_kw)
    _WORKER["cfg"] = AlignConfig(**cfg_dict)
    _WORKER["widths"] = tuple(widths)


def _align_one(path: str):
    """(crop, landmarks, None, size) or (None, None, reason, size) for one image file."""
    if not os.path.isfile(path):
        return None, None, "file missing", None
    rgb = read_rgb(path)
    if rgb is None:
        return None, None, "cannot decode image", None
    size = f"{rgb.shape[1]}x{rgb.shape[0]}"
    face, _ = detect_upsampled(_WORKER["aligner"], rgb, _WORKER["widths"])
    if face is None:
        return None, None, "no face detected", size
    crop, landmarks, _ = align_face(rgb, face.landmarks, _WORKER["cfg"])
    return crop, landmarks, None, size


def _align_chunk(paths: list[str]):
    return _WORKER["aligner"].name, [_align_one(p) for p in paths]


def align_celeba(
    image_dir: str | os.PathLike,
    filenames: list[str],
    cfg,
    aligner: str = "auto",
    aligner_kw: dict | None = None,
    detect_widths=DEFAULT_DETECT_WIDTHS,
    workers: int = 1,
    chunk: int = 64,
    progress: bool = True,
) -> Aligned:
    """Detect, landmark and align each listed image of ``image_dir`` with ``cfg`` (an AlignConfig).

    ``workers`` processes forked from this one (which builds the aligner) share the list. Images without a detectable
    face, missing or undecodable ones are returned in ``rejected`` with the reason.
    """

    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FacevaeError(f"CelebA images folder {image_dir} not found")
    paths = [str(image_dir / name) for name in filenames]
    init = (aligner, dict(aligner_kw or {}), asdict(cfg), tuple(detect_widths))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    used: set[str] = set()
    s = cfg.size
    # Kept faces go straight into one preallocated array (real CelebA: 200k faces, 2.4 GB at 64 px),
    # never a list of crops plus a stacked copy.
    crops = np.empty((len(paths), s, s, 3), np.uint8)
    landmarks = np.empty((len(paths), 68, 2), np.float32)
    index: list[int] = []
    rejected: list[tuple[str, str]] = []
    sizes: dict[str, int] = {}
    row = 0

    def collect(part_result):
        nonlocal row
        for crop, lm, reason, size in part_result:
            if size:
                sizes[size] = sizes.get(size, 0) + 1
            if reason is not None:
                rejected.append((filenames[row], reason))
            else:
                crops[len(index)] = crop
                landmarks[len(index)] = lm
                index.append(row)
            row += 1
        bar.update(len(part_result))

    bar = tqdm(total=len(paths), desc="aligning CelebA", unit="img", disable=not progress, mininterval=2.0)
    # The aligner is built once here ("auto" imports face_alignment to look for its weights, seconds);
    # forked workers inherit it. A torch aligner (face_alignment) stays in this process: CUDA and
    # OpenMP do not survive a fork.
    _init_worker(*init)
    try:
        if _WORKER["aligner"].name != "dlib" or workers <= 1 or len(chunks) <= 1 or os.name == "nt":
            for part in chunks:
                name, part_result = _align_chunk(part)
                used.add(name)
                collect(part_result)
        else:
            import multiprocessing

            # fork: the workers inherit the aligner; and a rule script run by Snakemake cannot be
            # re-imported by spawn/forkserver children.
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for name, part_result in pool.map(_align_chunk, chunks):  # in order
                    used.add(name)
                    collect(part_result)
    finally:
        _WORKER.clear()
    bar.close()
    n = len(index)
    return Aligned(
        crops=crops[:n],
        landmarks=landmarks[:n],
        index=np.asarray(index, dtype=np.int64),
        rejected=rejected,
        image_sizes=sizes,
        aligner=",".join(sorted(used)),
    )


def _strings(values) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def write_aligned(
    out: str | os.PathLike,
    aligned: Aligned,
    names: list[str],
    filenames: list[str],
    values: np.ndarray,
    identities: dict[str, int] | None,
    attrs: dict,
) -> Path:
    """Write ``results/celeba/aligned.h5`` (interface 4) atomically: a temp file beside it, then rename."""
    out = Path(out)
    kept_files = [filenames[i] for i in aligned.index]
    identity = np.array([(identities or {}).get(name, -1) for name in kept_files], dtype=np.int64)
    text = h5py.string_dtype()
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            n, s = len(aligned.crops), aligned.crops.shape[1]
            f.create_dataset("data", data=aligned.crops, chunks=(max(1, min(256, n)), s, s, 3) if n else None)
            f.create_dataset("attributes", data=values[aligned.index].astype(np.int8))
            f.create_dataset("fields", data=_strings(names), dtype=text)
            f.create_dataset("filenames", data=_strings(kept_files), dtype=text)
            f.create_dataset("identity", data=identity)
            f.create_dataset("landmarks", data=aligned.landmarks.astype(np.float32))
            f.create_dataset("rejected_filenames", data=_strings(n for n, _ in aligned.rejected), dtype=text)
            f.create_dataset("rejected_reasons", data=_strings(r for _, r in aligned.rejected), dtype=text)
            for key, value in attrs.items():
                f.attrs[key] = value
    return out


def read_aligned(path: str | os.PathLike, skip: tuple[str, ...] = ()) -> dict:
    """``aligned.h5`` as a dict of numpy arrays (strings decoded) plus ``attrs``; datasets named in
    ``skip`` (e.g. ``data``, to read the faces in slices) are left out."""
    path = Path(path)
    if not path.is_file():
        raise FacevaeError(f"aligned CelebA file {path} not found")
    out: dict = {}
    with h5py.File(path, "r") as f:
        for key in f:
            if key in skip:
                continue
            data = f[key]
            if h5py.check_string_dtype(data.dtype) is not None:
                out[key] = np.array(data.asstr()[()], dtype=object)
            else:
                out[key] = data[()]
        out["attrs"] = dict(f.attrs)
    return out


def contact_sheet(crops: np.ndarray, columns: int = 16, rows: int = 8, scale: int = 1) -> np.ndarray:
    """The first ``columns x rows`` crops tiled into one RGB image (black where none)."""
    n = min(len(crops), columns * rows)
    if n == 0:
        return np.zeros((8, 8, 3), np.uint8)
    return sheets.enlarge(sheets.tile(list(crops[:n]), columns, min_width=columns * crops.shape[1]), scale)


def prepare(celeba_cfg: dict) -> tuple[list[str], list[str], np.ndarray, dict[str, int] | None]:
    """Read the lists named in the ``celeba:`` config and apply ``limit`` (the first N rows).

    Returns (names, file names, values, identities or None)."""
    names, filenames, values = read_attributes(celeba_cfg["attributes"])
    if len(names) != len(CELEBA_ATTRIBUTES) or list(names) != list(CELEBA_ATTRIBUTES):
        log.warning("%s: attribute names differ from CelebA's 40 (%d names)", celeba_cfg["attributes"], len(names))
    identities = read_identities(celeba_cfg["identities"]) if celeba_cfg.get("identities") else None
    limit = celeba_cfg.get("limit")
    if limit:
        filenames, values = filenames[: int(limit)], values[: int(limit)]
    if identities is not None:
        unknown = [name for name in filenames if name not in identities]
        if unknown:
            log.warning("%d of %d images have no identity in %s (identity -1), e.g. %s",
                        len(unknown), len(filenames), celeba_cfg["identities"], unknown[0])
    return names, filenames, values, identities


def build_aligned(celeba_cfg: dict, faces_cfg: dict, out_h5, out_sheet=None, out_rejected=None,
                  workers: int = 1, min_aligned: float | None = None) -> dict:
    """The whole ``celeba_align`` rule: read the lists, align, check, write the outputs. Returns counts."""

    started = time.time()
    names, filenames, values, identities = prepare(celeba_cfg)
    cfg = AlignConfig.from_config(faces_cfg)
    aligner_kw = aligner_kwargs(faces_cfg or {})
    aligner_name = aligner_kw.pop("name")
    widths = celeba_cfg.get("detect_widths") or DEFAULT_DETECT_WIDTHS
    aligned = align_celeba(celeba_cfg["images"], filenames, cfg, aligner_name, aligner_kw, widths, workers=workers)
    n_in, n_ok = len(filenames), len(aligned.index)
    reasons: dict[str, int] = {}
    for _, reason in aligned.rejected:
        reasons[reason] = reasons.get(reason, 0) + 1
    summary = {"images": n_in, "aligned": n_ok, "rejected": reasons, "seconds": round(time.time() - started, 1)}
    log.info("CelebA: %d of %d images aligned (%.1f%%); rejected: %s; image sizes: %s; %.1f s",
             n_ok, n_in, 100.0 * n_ok / max(n_in, 1), reasons or "none", aligned.image_sizes, summary["seconds"])
    if reasons.get("file missing", 0) == n_in:
        raise FacevaeError(
            f"celeba.images: none of the {n_in} images listed in {celeba_cfg['attributes']} is in {celeba_cfg['images']}"
        )
    threshold = celeba_cfg.get("min_aligned", 0.5) if min_aligned is None else min_aligned
    if n_ok < threshold * n_in or n_ok == 0:
        raise FacevaeError(
            f"celeba: only {n_ok} of {n_in} images aligned ({100.0 * n_ok / max(n_in, 1):.1f}%, rejected: {reasons}); "
            f"celeba.min_aligned asks for {100 * threshold:.0f}% -- is celeba.images the img_align_celeba folder?"
        )
    attrs = {
        "aligner": aligned.aligner,
        **cfg.as_attrs(),
        "images_dir": str(celeba_cfg["images"]),
        "attributes_file": str(celeba_cfg["attributes"]),
        "identities_file": str(celeba_cfg.get("identities") or ""),
        "limit": int(celeba_cfg.get("limit") or 0),
        "detect_widths": np.asarray(widths, dtype=np.int64),
        "images_listed": n_in,
        "image_sizes": ", ".join(f"{k}: {v}" for k, v in sorted(aligned.image_sizes.items())),
    }
    write_aligned(out_h5, aligned, names, filenames, values, identities, attrs)
    if out_sheet:
        write_png(out_sheet, contact_sheet(aligned.crops, 16, 8, scale=max(1, 128 // cfg.size)))
    if out_rejected:
        write_rejected_sheet(out_rejected, celeba_cfg["images"], aligned.rejected)
    return summary


def write_rejected_sheet(path, image_dir, rejected, columns: int = 12, height: int = 109) -> Path:
    """A contact sheet of the first rejected images (resized to ``height``), so a user can see why."""
    tiles = []
    for name, _ in rejected[: columns * 4]:
        rgb = read_rgb(Path(image_dir) / name)
        if rgb is None:
            continue
        w = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
        tiles.append(cv2.resize(rgb, (w, height), interpolation=cv2.INTER_AREA))
    if not tiles:
        return write_png(path, np.zeros((8, 8, 3), np.uint8))
    width = max(t.shape[1] for t in tiles)
    padded = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles]
    return write_png(path, sheets.tile(padded, columns, min_width=columns * width))


# --- for rules/celeba.smk ------------------------------------------------------------------------
