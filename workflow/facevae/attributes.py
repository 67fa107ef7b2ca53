"""CelebA attributes in an actor's latent space: vectors, edits, directions and linear probes.

Every aligned CelebA face (``results/celeba/aligned.h5``) is encoded by one actor's VAE; its
posterior mean ``mu`` is that face's ``latent_vars`` row. Then, per actor:

* ``attribute_vectors`` (40 x latent): for each CelebA attribute, the mean ``mu`` of the faces with
  the attribute minus the mean ``mu`` of the faces without it (facenet's "smile vector", for all 40);
* orthogonalised (conditional) directions: one attribute's vector with the components along the
  other chosen attributes' vectors projected out (so "Smiling" no longer also means "Female" or
  "Mouth_Slightly_Open" where those go together in CelebA);
* principal directions of the actor's OWN latent codes (what the actor's face does most);
* edit grids: faces (the actor's own and a driver's) decoded with growing amounts of a direction
  added.

The two rules also write the diagnostics of :mod:`facevae.attribute_diagnostics` (the identity-split
linear probe, the mouth curves against random directions).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from facevae import FACE_SIZE, FacevaeError
from facevae.atomic import atomic_path, write_png
from facevae.celeba import read_aligned
from facevae.faces.align import AlignConfig
from facevae.faces.io import read_face_array, sample_faces
from facevae.attribute_diagnostics import mouth_curves, plot_mouth, plot_probe, probe
from facevae.modelio import edit_faces, encode, load_model
from facevae.tables import write_tsv
from facevae.planning import settings_of
from facevae import sheets
from facevae.sampling import evenly_spread

log = logging.getLogger(__name__)


# --- vectors and directions ----------------------------------------------------------------------


def attribute_vectors(latent: np.ndarray, attributes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors (K, D) float32, positives (K,), negatives (K,)) from ``latent`` (N, D) and
    ``attributes`` (N, K) of +1/-1: mean latent with the attribute minus mean latent without.

    An attribute that no face (or every face) has gets a zero vector (its counts say why)."""
    latent = np.asarray(latent, dtype=np.float64)
    attributes = np.asarray(attributes)
    if latent.ndim != 2 or attributes.ndim != 2 or len(latent) != len(attributes):
        raise FacevaeError(f"latent {latent.shape} and attributes {attributes.shape} do not match")
    pos = attributes == 1
    n_pos = pos.sum(axis=0)
    n_neg = (~pos).sum(axis=0)
    vectors = np.zeros((attributes.shape[1], latent.shape[1]))
    for k in range(attributes.shape[1]):
        if n_pos[k] and n_neg[k]:
            vectors[k] = latent[pos[:, k]].mean(axis=0) - latent[~pos[:, k]].mean(axis=0)
    return vectors.astype(np.float32), n_pos.astype(np.int64), n_neg.astype(np.int64)


def orthogonalise(vectors: np.ndarray, fields: list[str], chosen: list[str]) -> np.ndarray:
    """For each attribute in ``chosen``: its vector minus its projection onto the span of the other
    chosen attributes' vectors (least squares, so the result is orthogonal to each of them).
    Returns (len(chosen), D) float32."""
    index = {name: i for i, name in enumerate(fields)}
    missing = [name for name in chosen if name not in index]
    if missing:
        raise FacevaeError(f"attributes.orthogonalise: unknown attribute(s) {missing} (fields: {', '.join(fields)})")
    vecs = np.asarray(vectors, dtype=np.float64)
    out = np.zeros((len(chosen), vecs.shape[1]))
    for i, name in enumerate(chosen):
        v = vecs[index[name]]
        others = np.stack([vecs[index[o]] for o in chosen if o != name], axis=1) if len(chosen) > 1 else None
        if others is None or not np.any(others):
            out[i] = v
            continue
        coef, *_ = np.linalg.lstsq(others, v, rcond=None)
        out[i] = v - others @ coef
    return out.astype(np.float32)


def principal_components(latent: np.ndarray, n: int) -> dict:
    """PCA of ``latent`` (N, D): ``mean`` (D,), ``components`` (n, D) unit rows, ``std`` (n,) the
    standard deviation along each, ``explained`` (n,) share of the total variance. A component's
    sign is fixed so its largest-magnitude coordinate is positive (reproducible across runs)."""
    x = np.asarray(latent, dtype=np.float64)
    if len(x) < 2:
        raise FacevaeError(f"PCA needs at least 2 latent codes, got {len(x)}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    n = int(min(n, len(s)))
    comps = vt[:n]
    signs = np.sign(comps[np.arange(n), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    var = s**2 / (len(x) - 1)
    return {
        "mean": mean.astype(np.float32),
        "components": comps.astype(np.float32),
        "std": np.sqrt(var[:n]).astype(np.float32),
        "explained": (var[:n] / var.sum()).astype(np.float32),
    }


# --- decoding, measuring, drawing ----------------------------------------------------------------


def grid_image(blocks: list[tuple[str, np.ndarray]], column_labels: list[str], title: str, scale: int = 2) -> np.ndarray:
    """Tile blocks of faces into one labelled RGB image.

    ``blocks``: (name, faces uint8 (rows, columns, S, S, 3)); each block's name is drawn on a strip
    above its rows. ``column_labels`` name the columns; ``title`` goes on top."""
    columns = blocks[0][1].shape[1]
    s = blocks[0][1].shape[2] * scale
    width = columns * s
    parts = [sheets.label(width, 22, title, 0.45), _column_labels(column_labels, s)]
    for name, faces in blocks:
        if len(faces) == 0:
            continue
        parts.append(sheets.label(width, 18, name, 0.4))
        parts.append(sheets.grid([[sheets.enlarge(face, scale) for face in row] for row in faces]))
    return np.concatenate(parts, axis=0)


def _column_labels(labels: list[str], s: int) -> np.ndarray:
    return np.concatenate([sheets.label(s, 18, text, 0.4) for text in labels], axis=1)


def edit_grid(model, rows: list[tuple[str, np.ndarray]], direction: np.ndarray, amounts, title: str,
              originals: bool = True) -> np.ndarray:
    """A grid for one direction: for each block of (name, faces uint8 (N, 64, 64, 3)), rows of
    faces, the input face first (when ``originals``) then the decoded face with each amount added."""
    blocks = []
    for name, faces in rows:
        if len(faces) == 0:
            continue
        mu = encode(model, faces)
        edited = edit_faces(model, mu, direction, amounts).transpose(1, 0, 2, 3, 4)  # (N, A, ...)
        if originals:
            edited = np.concatenate([_resize_faces(faces, edited.shape[2])[:, None], edited], axis=1)
        blocks.append((name, edited))
    if not blocks:
        raise FacevaeError(f"no faces to draw for {title}")
    labels = (["input"] if originals else []) + [_amount_label(a) for a in amounts]
    return grid_image(blocks, labels, title)


def _amount_label(a: float) -> str:
    return "0" if a == 0 else f"{a:+g}"


def _resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    if faces.shape[1] == size:
        return faces
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces])


# --- files ---------------------------------------------------------------------------------------


def encode_file(model, path, key: str = "data", block: int = 4096) -> np.ndarray:
    """``mu`` of every face of an HDF5 dataset, read ``block`` faces at a time (full CelebA does not
    have to fit in memory as images), resized to the model's 64 px when needed."""

    out = []
    with h5py.File(path, "r") as f:
        data = f[key]
        for start in tqdm(range(0, len(data), block), desc="encoding", unit="block", mininterval=5.0):
            out.append(encode(model, to_model_size(data[start : start + block])))
    return np.concatenate(out) if out else np.zeros((0, model.config.latent_dim), np.float32)


def to_model_size(faces: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    return _resize_faces(np.asarray(faces, dtype=np.uint8), size)


def write_attributes_h5(path: str | os.PathLike, data: dict, attrs: dict) -> Path:
    """Write ``results/attributes/{actor}.h5`` atomically. String arrays become UTF-8 datasets."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in data.items():
                arr = np.asarray(value)
                if arr.dtype.kind in ("U", "O"):
                    f.create_dataset(key, data=np.array([str(v) for v in arr], dtype=object), dtype=h5py.string_dtype())
                else:
                    f.create_dataset(key, data=arr)
            for key, value in attrs.items():
                f.attrs[key] = value
    return Path(path)


def read_attributes_h5(path: str | os.PathLike) -> dict:
    """``results/attributes/{actor}.h5`` as a dict of numpy arrays (strings decoded) plus ``attrs``."""
    return read_aligned(path)


def vector_of(data: dict, name: str, kind: str = "mean") -> np.ndarray:
    """One direction from a read attributes file: ``mean`` (attribute_vectors) or ``orthogonal``."""
    if kind == "mean":
        fields = list(data["fields"])
        if name not in fields:
            raise FacevaeError(f"unknown CelebA attribute {name!r} (fields: {', '.join(fields)})")
        return data["attribute_vectors"][fields.index(name)]
    fields = list(data["orthogonal_fields"])
    if name not in fields:
        raise FacevaeError(f"{name!r} is not among the orthogonalised attributes ({', '.join(fields)})")
    return data["orthogonal_vectors"][fields.index(name)]


# --- the two rules -------------------------------------------------------------------------------

def build_attributes(model_path, aligned_path, faces_path, out_h5, out_probe, out_probe_png, settings: dict,
                     actor: str) -> dict:
    """Rule ``attributes_vectors``: encode aligned CelebA with the actor's model; write the vectors,
    the orthogonalised and principal directions (``out_h5``) and the identity-split probe table."""

    started = time.time()
    settings = settings_of(settings)
    model = load_model(model_path)
    celeba = read_aligned(aligned_path, skip=("data",))
    if len(celeba["filenames"]) == 0:
        raise FacevaeError(f"{aligned_path} holds no aligned faces")
    fields = [str(f) for f in celeba["fields"]]
    log.info("actor %s: encoding %d aligned CelebA faces", actor, len(celeba["filenames"]))
    latent = encode_file(model, aligned_path)
    vectors, n_pos, n_neg = attribute_vectors(latent, celeba["attributes"])
    empty = [fields[k] for k in range(len(fields)) if not (n_pos[k] and n_neg[k])]
    if empty:
        log.warning("attributes with faces on one side only (zero vector): %s", ", ".join(empty))
    chosen = list(settings["orthogonalise"])
    ortho = orthogonalise(vectors, fields, chosen) if chosen else np.zeros((0, latent.shape[1]), np.float32)
    own = encode(model, to_model_size(read_face_array(faces_path)))
    n_pca = int(settings["pca_components"])
    if n_pca > min(len(own) - 1, latent.shape[1]):
        raise FacevaeError(
            f"attributes.pca_components is {n_pca} but actor {actor} has {len(own)} faces and a "
            f"{latent.shape[1]}-d latent space: at most {min(len(own) - 1, latent.shape[1])} components"
        )
    pca = principal_components(own, n_pca) if n_pca else {
        "mean": own.mean(axis=0).astype(np.float32), "components": np.zeros((0, latent.shape[1]), np.float32),
        "std": np.zeros(0, np.float32), "explained": np.zeros(0, np.float32)}
    rows = probe(latent, celeba["attributes"], fields, celeba["identity"], settings["probe_folds"],
                 settings["seed"], settings["probe_l2"])
    data = {
        "latent_vars": latent.astype(np.float32),
        "attributes": celeba["attributes"].astype(np.int8),
        "fields": np.array(fields, dtype=object),
        "attribute_vectors": vectors,
        "filenames": celeba["filenames"],
        "identity": celeba["identity"].astype(np.int64),
        "positives": n_pos,
        "negatives": n_neg,
        "orthogonal_vectors": ortho,
        "orthogonal_fields": np.array(chosen, dtype=object),
        "pca_mean": pca["mean"],
        "pca_components": pca["components"],
        "pca_std": pca["std"],
        "pca_explained": pca["explained"],
    }
    attrs = {
        "actor": actor,
        "model": str(model_path),
        "latent_dim": int(model.config.latent_dim),
        "arch": str(model.config.arch),
        "aligned": str(aligned_path),
        "faces": str(faces_path),
        "actor_faces": int(len(own)),
        "seed": int(settings["seed"]),
        "vector": "mean latent with the attribute minus mean latent without",
    }
    write_attributes_h5(out_h5, data, attrs)
    first = rows[0]
    write_tsv(out_probe, rows, [
        f"actor {actor}: logistic regression on mu ({latent.shape[1]}-d) of {first['faces']} aligned CelebA faces "
        f"of {first['identities']} identities, {first['folds']}-fold cross-validation split by {first['split']} "
        f"(no person in both the training and the test faces of a fold; seed {settings['seed']}); "
        "majority = the more frequent class's share of the same test faces",
    ])
    plot_probe(out_probe_png, rows, actor)
    summary = {r["attribute"]: round(r["gain"], 3) for r in rows}
    log.info("probe gains over the majority rate: %s; %.1f s", summary, time.time() - started)
    return {"faces": len(latent), "probe": rows}


def build_edits(model_path, attributes_h5, faces_path, drivers: dict[str, list[str]], outdir, settings: dict,
                align_cfg, actor: str) -> dict:
    """Rule ``attributes_edits``: the edit grids (``add_{A}.png``), orthogonalised-direction grids
    (``orth_{A}.png``), principal-direction traversals (``pca_{k}.png``) and the mouth-width curves
    (``mouth.tsv``, ``mouth.png``) of one actor. ``drivers`` maps a driver name to its face files
    (tracks or blog-format HDF5)."""
    settings = settings_of(settings)
    outdir = Path(outdir)
    model = load_model(model_path)
    data = read_attributes_h5(attributes_h5)
    own = to_model_size(read_face_array(faces_path))
    n_rows = int(settings["rows"])
    rows = [(f"actor {actor}", own[evenly_spread(len(own), n_rows)])]
    for driver, files in drivers.items():
        faces = sample_faces(files, n_rows)
        if len(faces) == 0:
            log.warning("driver %s has no kept faces: no driver rows", driver)
            continue
        rows.append((f"driver {driver}", to_model_size(faces)))
    amounts = [float(a) for a in settings["amounts"]]
    written = []
    for name in settings["edit"]:
        v = vector_of(data, name)
        title = f"{actor}: + {name} (mean difference, |v| = {np.linalg.norm(v):.2f})"
        written.append(write_png(outdir / f"add_{name}.png", edit_grid(model, rows, v, amounts, title)))
    for name in [str(f) for f in data["orthogonal_fields"]]:
        v = vector_of(data, name, "orthogonal")
        others = [str(f) for f in data["orthogonal_fields"] if str(f) != name]
        title = f"{actor}: + {name} without {', '.join(others)} (|v| = {np.linalg.norm(v):.2f})"
        written.append(write_png(outdir / f"orth_{name}.png", edit_grid(model, rows, v, amounts, title)))
    steps = [float(t) for t in settings["pca_steps"]]
    for k in range(len(data["pca_components"])):
        std = float(data["pca_std"][k])
        title = f"{actor}: principal direction {k + 1} ({100 * data['pca_explained'][k]:.1f}% of variance), columns in SD"
        image = edit_grid(model, rows[:1], data["pca_components"][k] * std, steps, title)
        written.append(write_png(outdir / f"pca_{k + 1}.png", image))
    curves = mouth_curves(model, own, vector_of(data, "Smiling"), amounts, settings, align_cfg)
    write_tsv(outdir / "mouth.tsv", curves, [
        f"actor {actor}: mouth width (corners 48-54) and inner-lip opening, each / inter-ocular distance, of "
        f"decoded faces (landmarks re-measured) after adding a direction; random_* = random directions of the "
        f"Smiling vector's norm (seed {settings['seed']})",
    ])
    plot_mouth(outdir / "mouth.png", curves, actor)
    return {"written": [str(p) for p in written], "mouth": curves}


def decoded_face_geometry(faces_cfg: dict | None):
    """The AlignConfig of the faces a model decodes: the config's template at 64 px."""

    return replace(AlignConfig.from_config(faces_cfg or {}), size=FACE_SIZE)
