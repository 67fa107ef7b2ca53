"""Looking around an actor's latent space: a random walk, an interpolation, a sample grid.

- ``walk.mp4``: the blog's ``sample``: random N(0, I) points joined by straight steps, decoded.
- ``interpolate.mp4``: the latent codes (posterior means) of two of the actor's own faces mixed
  linearly, there and back; the two real faces flank the decoded mix.
- ``samples.png``: a grid of decoded N(0, I) draws.

Every random number comes from ``numpy.random.default_rng([seed, k])`` with a fixed ``k`` per
output, so each file is reproducible on its own; seeds and choices are written into the files'
metadata (the mp4 comment, PNG text) and returned.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from facevae import FacevaeError, __version__, modelio
from facevae.atomic import atomic_path
from facevae.compose import Layout, resize_face
from facevae.expression import mouth_open_ratio
from facevae.faces.io import read_faces
from facevae.modelio import pick_device
from facevae import FACE_SIZE
from facevae import sheets
from facevae.video import VideoWriter
from facevae.plotting import pyplot

log = logging.getLogger(__name__)

STREAM_WALK, STREAM_SAMPLES = 1, 2


def walk_latents(latent_dim: int, points: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(path, anchors): ``points`` N(0, I) anchors and the ``(points - 1) * steps + 1`` codes
    joining them in straight lines (each anchor is on the path, at frame ``k * steps``)."""
    if points < 2 or steps < 1:
        raise FacevaeError(f"explore.walk needs points >= 2 and steps >= 1 (got {points}, {steps})")
    rng = np.random.default_rng([seed, STREAM_WALK])
    anchors = rng.standard_normal((points, latent_dim)).astype(np.float32)
    t = (np.arange(steps, dtype=np.float64) / steps)[:, None]
    segments = [(1 - t) * anchors[k] + t * anchors[k + 1] for k in range(points - 1)]
    path = np.concatenate([*segments, anchors[-1:]]).astype(np.float32)
    return path, anchors


def interpolate_latents(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, weights): ``steps`` codes from ``z_a`` to ``z_b`` inclusive, then back without
    repeating the ends (a seamless loop of ``2 * steps - 2`` frames); ``weights`` is the share of b."""
    if steps < 2:
        raise FacevaeError(f"explore.interpolate.steps must be >= 2 (got {steps})")
    w = np.linspace(0.0, 1.0, steps)
    w = np.concatenate([w, w[-2:0:-1]])
    z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
    codes = (1 - w)[:, None] * z_a[None] + w[:, None] * z_b[None]
    return codes.astype(np.float32), w


def pick_faces(landmarks: np.ndarray | None, n: int) -> tuple[int, int]:
    """Rows of the most closed and the most open mouth (by ``mouth_open_ratio``); (0, n - 1)
    when the file has no usable landmarks."""
    if landmarks is not None and len(landmarks) == n and n >= 2:
        ratio = mouth_open_ratio(landmarks)
        if np.isfinite(ratio).sum() >= 2:
            return int(np.nanargmin(ratio)), int(np.nanargmax(ratio))
    return 0, max(n - 1, 0)


def sample_grid(images: np.ndarray, rows: int, cols: int, gap: int = 2) -> np.ndarray:
    """``rows * cols`` images (N, S, S, 3) tiled with ``gap`` px of black between them."""
    cells = list(images[: rows * cols])
    cells += [np.zeros(images.shape[1:], np.uint8)] * (rows * cols - len(cells))  # black where an image is missing
    return sheets.tile(cells, cols, gap=gap)


def save_png(path, image: np.ndarray, metadata: dict) -> None:
    """RGB uint8 PNG with text metadata, through a temporary file."""
    plt = pyplot()

    with atomic_path(path, ".png") as tmp:
        plt.imsave(tmp, image, format="png", metadata={k: str(v) for k, v in metadata.items()})


def _faces_and_landmarks(faces_path) -> tuple[np.ndarray, np.ndarray | None]:
    faces = read_faces(faces_path)
    data = faces["data"]
    if data.ndim != 4 or data.shape[1:] != (FACE_SIZE, FACE_SIZE, 3) or len(data) == 0:
        raise FacevaeError(f"{faces_path}: expected faces uint8 N x {FACE_SIZE} x {FACE_SIZE} x 3, got {data.shape}")
    return data, faces.get("landmarks")


def render_explore(model_path, faces_path, outputs: dict, cfg: dict, actor: str, progress: bool = True) -> dict:
    """Write ``outputs['walk']``, ``outputs['interpolate']`` and ``outputs['samples']`` (any subset).

    ``cfg`` is the ``explore:`` config section (defaults filled in). Returns what was chosen.
    """
    from tqdm import tqdm

    model = modelio.load_model(model_path, device=pick_device(cfg.get("device", "auto"), "render.device"))
    dim = model.config.latent_dim
    seed = int(cfg.get("seed", 0))
    panel = int(cfg.get("panel_size", 256))
    fps = float(cfg.get("fps", 25))
    base = {"actor": actor, "seed": seed, "latent_dim": dim, "facevae": __version__}
    summary: dict = dict(base)

    if outputs.get("walk"):
        wcfg = cfg.get("walk", {})
        path, _ = walk_latents(dim, int(wcfg.get("points", 10)), int(wcfg.get("steps", 25)), seed)
        layout = Layout([["walk"]], panel, 8, (0, 0, 0), {"walk": f"{actor}: N(0, I) walk, seed {seed}"})
        info = {**base, "what": "walk", "points": int(wcfg.get("points", 10)), "steps": int(wcfg.get("steps", 25))}
        with VideoWriter(outputs["walk"], layout.width, layout.height, fps, metadata={"comment": json.dumps(info)}) as out:
            for start in tqdm(range(0, len(path), 256), desc=f"walk {actor}", disable=not progress):
                for face in modelio.decode(model, path[start : start + 256]):
                    out.write(layout.compose({"walk": resize_face(face, panel)}))
        summary["walk_frames"] = len(path)

    if outputs.get("interpolate"):
        icfg = cfg.get("interpolate", {})
        data, landmarks = _faces_and_landmarks(faces_path)
        chosen = icfg.get("faces")
        if chosen is None:
            a, b = pick_faces(landmarks, len(data))
        else:
            a, b = (int(v) for v in chosen)
            for key, idx in (("0", a), ("1", b)):
                if idx >= len(data):
                    raise FacevaeError(f"explore.interpolate.faces.{key}: row {idx} is past the end of {faces_path} ({len(data)} faces)")
        mu = modelio.encode(model, data[[a, b]])
        codes, weights = interpolate_latents(mu[0], mu[1], int(icfg.get("steps", 50)))
        layout = Layout([["a", "mix", "b"]], panel, 8, (0, 0, 0), {"a": f"face {a}", "mix": "decoded mix", "b": f"face {b}"})
        info = {**base, "what": "interpolate", "faces": [a, b], "steps": int(icfg.get("steps", 50))}
        fixed = {"a": resize_face(data[a], panel), "b": resize_face(data[b], panel)}
        with VideoWriter(outputs["interpolate"], layout.width, layout.height, fps, metadata={"comment": json.dumps(info)}) as out:
            for start in range(0, len(codes), 256):
                for face in modelio.decode(model, codes[start : start + 256]):
                    out.write(layout.compose({**fixed, "mix": resize_face(face, panel)}))
        summary.update(interpolate_faces=[a, b], interpolate_frames=len(codes))

    if outputs.get("samples"):
        scfg = cfg.get("samples", {})
        rows, cols = int(scfg.get("rows", 8)), int(scfg.get("cols", 8))
        rng = np.random.default_rng([seed, STREAM_SAMPLES])
        z = rng.standard_normal((rows * cols, dim)).astype(np.float32)
        grid = sample_grid(modelio.decode(model, z), rows, cols)
        save_png(outputs["samples"], grid, {"Software": f"facevae {__version__}",
                                            "Comment": json.dumps({**base, "what": "samples", "rows": rows, "cols": cols})})
        summary["samples"] = rows * cols
    log.info("explore %s: %s", actor, summary)
    return summary
