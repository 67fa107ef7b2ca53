"""The real test media: where it is (FACEVAE_MEDIA, default ../shared/data beside the repository),
the public URLs of its files for machines without it, and the skip-or-fail rule for what is missing
(a skip with the reason; under CI=true a failure -- CI must never be green by skipping)."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEDIA_ENV = "FACEVAE_MEDIA"
DEFAULT_MEDIA = REPO.parent / "shared" / "data"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facevae" / "media"

_LP = "https://raw.githubusercontent.com/KwaiVGI/LivePortrait/1986663be3b6902605d32200c01f4bfd36cda83d/"
_TPSMM = (
    "https://raw.githubusercontent.com/yoyo-nb/Thin-Plate-Spline-Motion-Model/"
    "c616878812c9870ed81ac72561be2676fd7180e2/"
)
_HDTF = "https://raw.githubusercontent.com/OpenTalker/SadTalker/68651ebaa6fedad57ca9c878221f9b57212040cb/test/examples/source_image/"
_FR = "https://raw.githubusercontent.com/ageitgey/face_recognition/master/examples/"
_FA = "https://raw.githubusercontent.com/1adrianb/face-alignment/master/test/assets/"

# Public sources of the shared media (see ../shared/data/README.md), for machines without it.
PUBLIC_MEDIA = {
    **{
        f"videos/lp_{n}.mp4": f"{_LP}assets/examples/driving/{n}.mp4"
        for n in ["d0", "d3", "d5", "d6", "d7", "d8", "d10", "d11", "d12", "d13", "d18", "d19", "d20"]
    },
    **{f"videos/lp_{n}.mp4": f"{_LP}assets/examples/source/{n}.mp4" for n in ["s18", "s20", "s29", "s32"]},
    "videos/tpsmm_driving.mp4": f"{_TPSMM}assets/driving.mp4",
    **{f"videos/hdtf_{n}.mp4": f"{_HDTF}{n}.mp4" for n in ["RD_Radio2_000", "WDA_BobMenendez_000", "WDA_EdMarkey0_000"]},
    "images/tpsmm_source.png": f"{_TPSMM}assets/source.png",
    "videos/fr_hamilton_clip.mp4": f"{_FR}short_hamilton_clip.mp4",
    "images/fr_lin-manuel-miranda.png": f"{_FR}lin-manuel-miranda.png",
    "images/fr_two_people.jpg": f"{_FR}two_people.jpg",
    "images/aflw-test.jpg": f"{_FA}aflw-test.jpg",
    **{
        f"images/liveportrait_{n}.jpg": f"{_LP}assets/examples/driving/{n}.jpg"
        for n in ["d8", "d9", "d12", "d19", "d30", "d38"]
    },
    **{f"images/liveportrait_{n}.jpg": f"{_LP}assets/examples/source/{n}.jpg" for n in ["s2", "s12", "s33"]},
    "images/insightface_t1.jpg": f"{_LP}src/utils/dependencies/insightface/data/images/t1.jpg",
}


def unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and test media is missing: {reason}", pytrace=False)
    pytest.skip(reason)


class Media:
    """Finds a media file by its path relative to the media folder (e.g. ``videos/lp_d6.mp4``)."""

    def __init__(self, root: Path | None):
        self.root = root

    def __call__(self, relpath: str) -> Path:
        if self.root is not None:
            path = self.root / relpath
            if path.exists():
                return path
            unavailable(f"{path} is missing from the media folder ({MEDIA_ENV})")
        cached = CACHE / relpath
        if cached.exists():
            return cached
        url = PUBLIC_MEDIA.get(relpath)
        if url is None:
            unavailable(f"no media folder ({MEDIA_ENV} or {DEFAULT_MEDIA}) and no public URL for {relpath}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(cached.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            unavailable(f"no media folder and fetching {url} failed: {err}")
        tmp.replace(cached)
        return cached



GITHUB_RAW = "https://raw.githubusercontent.com/"
