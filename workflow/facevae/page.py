"""The actor's browser page: what the page runs (ONNX graphs) and what it shows (page.json).

Rule ``page_models`` writes, beside ``results/explore/{actor}/index.html``:

- ``decoder.onnx`` -- ``z`` (N, latent_dim) float32 -> ``image`` (N, 64, 64, 3) float32 in [0, 1]
  (the decoder's sigmoid output, channels last so the page copies it straight into a canvas);
- ``drive.onnx`` -- the driving path (:class:`facevae.driving.LandmarkRetarget`): ``landmarks``
  (N, 68, 2) in aligned-crop px and ``driver_neutral`` (68, 2) normalised -> ``z``. A webcam user is
  not the actor, so the page drives by retargeting, which is what ``render.drive: auto`` picks for a
  stranger (docs/driving.md);
- ``page.json`` -- the crop geometry (template landmarks and the points the similarity fits, the
  same :mod:`facevae.faces.align` numbers as the pipeline), the latent dimensions ranked by mean KL
  over the actor's faces, a few of the actor's encoded faces, the CelebA attribute directions when the
  attribute stage ran for this actor, and the calibration length for the live neutral.

The JavaScript beside it (workflow/page/) reads nothing else; :mod:`facevae.webruntime` copies the
pinned npm runtime (onnxruntime-web, face-api and their wasm / weights) into ``vendor/``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from facevae import FACE_SIZE, FacevaeError
from facevae.atomic import atomic_path, write_text
from facevae.driving import export_onnx as export_drive_onnx
from facevae.driving import load_retarget
from facevae.faces.align import ALIGN_POINTS, LEFT_EYE, RIGHT_EYE, AlignConfig
from facevae.modelio import encode, load_model
from facevae.planning import settings_of
from facevae.sampling import evenly_spread
from facevae.train_eval import mean_kl_per_dim
from facevae.webruntime import seal_manifest

PAGE_FORMAT = "facevae-page"
PAGE_VERSION = 1
OPSET = 17
#: How many of the actor's encoded faces the page offers as starting points.
REAL_FACES = 24


class DecodeImage(torch.nn.Module):
    """z -> the decoder's image, channels last, in [0, 1] (what ``modelio.decode`` rounds to uint8)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model.decode(z)).permute(0, 2, 3, 1)


def export_decoder_onnx(model, path: str | os.PathLike) -> Path:
    """The actor's decoder as an ONNX graph (see the module docstring); batch size is dynamic."""
    module = DecodeImage(model.eval().cpu()).eval()
    example = torch.zeros(2, model.config.latent_dim)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(module, (example,), str(tmp), input_names=["z"], output_names=["image"],
                          dynamic_axes={"z": {0: "n"}, "image": {0: "n"}}, opset_version=OPSET, dynamo=False)
    return Path(path)


def attribute_directions(attributes_h5, names) -> dict[str, list[float]]:
    """The CelebA attribute vectors (mean latent with minus without) named in ``names`` that the
    attribute stage wrote for this actor; attributes it could not estimate (zero vector) are left out."""
    from facevae.attributes import read_attributes_h5

    data = read_attributes_h5(attributes_h5)
    fields = [str(f) for f in data["fields"]]
    out = {}
    for name in names:
        if name not in fields:
            raise FacevaeError(f"attributes.edit names {name!r}, which {attributes_h5} does not hold")
        vector = np.asarray(data["attribute_vectors"][fields.index(name)], np.float64)
        if np.linalg.norm(vector) > 0:
            out[name] = [round(float(v), 6) for v in vector]
    return out


def page_manifest(actor: str, model, faces: dict, retarget_info: dict, attributes: dict, align: AlignConfig,
                  live: dict, gain: float, transfer: float = 1.0) -> dict:
    """The page's one description of the actor (written as page.json). ``live``: the validated
    ``page:`` section (calibration_seconds, neutral, detect_every: defaults in its schema only)."""
    if align.size != FACE_SIZE:
        raise FacevaeError(f"faces.size is {align.size}: the page runs {FACE_SIZE} px models only")
    data = faces["data"]
    kl = mean_kl_per_dim(model, data)
    order = np.argsort(-kl, kind="stable")
    pick = evenly_spread(len(data), REAL_FACES)
    mu = encode(model, data[pick])
    return {
        "format": PAGE_FORMAT,
        "version": PAGE_VERSION,
        "actor": actor,
        "latent_dim": int(model.config.latent_dim),
        "size": FACE_SIZE,
        "dims": [{"dim": int(j), "kl": round(float(kl[j]), 6)} for j in order],
        "real_faces": [{"frame": int(faces["frame"][i]) if "frame" in faces else int(i),
                        "z": [round(float(v), 6) for v in z]} for i, z in zip(pick, mu)],
        "attributes": attributes,
        "align": {"template": np.round(align.template(), 6).tolist(), "points": ALIGN_POINTS[align.points],
                  "left_eye": LEFT_EYE, "right_eye": RIGHT_EYE},
        "drive": {"method": "retarget", "calibration_seconds": float(live["calibration_seconds"]),
                  "gain": float(gain), "transfer": float(transfer),
                  "fit": {k: retarget_info[k] for k in ("faces", "cv_r2") if k in retarget_info}},
        "live": {"detect_every": int(live["detect_every"]), "neutral": str(live["neutral"])},
        "files": {"decoder": "decoder.onnx", "drive": "drive.onnx"},
    }


def build_page_models(model_path, faces_path, retarget_path, attributes_h5, outputs: dict, settings: dict,
                      actor: str) -> dict:
    """Rule page_models. ``outputs``: decoder, drive (ONNX), manifest (page.json). ``settings``:
    ``calibration_seconds``, ``detect_every``, ``neutral`` (the page: section), ``gain`` and
    ``transfer`` (render.retarget's), ``attributes`` (names of the attribute directions to offer), ``faces``
    (the config's faces section: the crop geometry)."""
    from facevae.faces.io import read_faces

    model = load_model(model_path)
    faces = read_faces(faces_path)
    retarget = load_retarget(retarget_path)
    # The drive the pipeline's renders use (render.retarget.gain / transfer), held in the exported graph.
    gain, transfer = float(settings["gain"]), float(settings["transfer"])
    names = settings_of({"edit": settings.get("attributes")})["edit"]
    attributes = attribute_directions(attributes_h5, names) if attributes_h5 else {}
    manifest = page_manifest(actor, model, faces, retarget.info, attributes,
                             AlignConfig.from_config(settings.get("faces")), settings, gain, transfer)
    export_decoder_onnx(model, outputs["decoder"])
    export_drive_onnx(retarget, outputs["drive"], transfer, gain)
    # page.json last, with the sha256 of the graphs beside it, of the model and of itself: the
    # page rule and the page check them (a truncated graph or an edited page.json is refused).
    manifest = seal_manifest(manifest, Path(outputs["manifest"]).parent, model_path)
    write_text(outputs["manifest"], json.dumps(manifest, indent=1) + "\n")
    return manifest
