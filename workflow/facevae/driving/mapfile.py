"""The map's file (``results/models/{actor}/retarget.pt``) and its ONNX graph (the page's ``drive.onnx``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from facevae.driving.retarget_map import BakedDrive, LandmarkRetarget
from facevae.modelio import atomic_torch_save, read_blob

RETARGET_FORMAT = "facevae-retarget"
# 3: the read-out's targets held in the actor's range; an older map (no range) is refused and refitted.
RETARGET_VERSION = 3


def save_retarget(path: str | os.PathLike, module: LandmarkRetarget) -> Path:
    """The map's tensors, its fixed settings and its fit report (``module.info``; weights_only-loadable), atomically."""
    return atomic_torch_save({
        "format": RETARGET_FORMAT,
        "version": RETARGET_VERSION,
        "state": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "settings": {"inv_width": module.inv_width, "features": module.features, "kind": module.kind,
                     "brow_weight": module.brow_weight, **({"mouth_after_eye": True} if module.mouth_after_eye else {})},
        "info": module.info,
    }, path)


def load_retarget(path: str | os.PathLike) -> LandmarkRetarget:
    blob = read_blob(path, RETARGET_FORMAT, RETARGET_VERSION, "retargeting map", rebuild="fit_retarget",
                     oldest=RETARGET_VERSION)
    s, cfg = blob["state"], blob["settings"]
    readout = None
    if s["readout_w"].shape[0] > 0:
        readout = {k: s[f"readout_{k}"].numpy() for k in ("w", "y", "steps", "lo", "hi")}
    module = LandmarkRetarget(s["actor_neutral"].numpy(), s["centres"].numpy(), s["coef"].numpy(), s["x_mean"].numpy(),
                              s["z_mean"].numpy(), cfg["inv_width"], cfg["features"], cfg["kind"], readout,
                              cfg["brow_weight"], blob.get("info", {}), s["blocks"].numpy() if "blocks" in s else None,
                              cfg.get("mouth_after_eye", False))
    return module.eval()


def export_onnx(module: LandmarkRetarget, path: str | os.PathLike, transfer: float = 1.0, gain: float = 1.0) -> Path:
    """The map with one drive baked in (``transfer``, ``gain``) as an ONNX graph: inputs ``landmarks``
    (N, 68, 2) float32 crop px and ``driver_neutral`` (68, 2) float32 normalised; output ``z`` (N, latent_dim)."""
    from facevae.atomic import atomic_path

    baked = BakedDrive(module, transfer, gain).eval()
    example = ((module.actor_neutral[None].repeat(2, 1, 1) * 20 + 32).float(), module.actor_neutral.float())
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(baked, example, str(tmp), input_names=["landmarks", "driver_neutral"], output_names=["z"],
                          dynamic_axes={"landmarks": {0: "frames"}, "z": {0: "frames"}}, opset_version=17, dynamo=False)
    return Path(path)
