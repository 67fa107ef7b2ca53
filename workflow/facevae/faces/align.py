"""Similarity alignment of a face onto a canonical 68-point template.

One function, :func:`align_face`, serves actors, drivers and CelebA images so every crop in the
project shares one geometry. The default template is OpenFace's MINMAX template (the 68-point
mean face normalised so the landmarks span [0, 1] on both axes): the face from brows to chin fills
the square, as in the OpenFace-aligned crops the 2017 blog trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

# OpenFace's mean 68-point face (openface/align_dlib.py, Apache-2.0), iBUG-300W order.
_OPENFACE_TEMPLATE = np.array(
    [
        (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943),
        (0.0967927109165, 0.575648016728), (0.122141515615, 0.691921601066),
        (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
        (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149),
        (0.531777802068, 1.06080371126), (0.641296298053, 1.03981924107),
        (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
        (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421),
        (0.96111933829, 0.562238253072), (0.970579841181, 0.441758925744),
        (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
        (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323),
        (0.367460241458, 0.203582210627), (0.4392945113, 0.233135599851),
        (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
        (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114),
        (0.8707571886, 0.235293377042), (0.51534533827, 0.31863546193),
        (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
        (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668),
        (0.475501237769, 0.62076344024), (0.520712933176, 0.634268222208),
        (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
        (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002),
        (0.355749724218, 0.303020650651), (0.403718978315, 0.33867711083),
        (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
        (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267),
        (0.73597236153, 0.294721285802), (0.782865376271, 0.321305281656),
        (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
        (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073),
        (0.477677654595, 0.706835892494), (0.522732900812, 0.717092275768),
        (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
        (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972),
        (0.576410514055, 0.835436670169), (0.525398405766, 0.841706377792),
        (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
        (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612),
        (0.523389793327, 0.748924302636), (0.571057789237, 0.74332894691),
        (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
        (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951),
    ],
    dtype=np.float64,
)
_TPL_MIN, _TPL_MAX = _OPENFACE_TEMPLATE.min(axis=0), _OPENFACE_TEMPLATE.max(axis=0)
#: OpenFace's MINMAX_TEMPLATE: landmarks span exactly [0, 1] on both axes.
MINMAX_TEMPLATE = (_OPENFACE_TEMPLATE - _TPL_MIN) / (_TPL_MAX - _TPL_MIN)

LEFT_EYE = list(range(36, 42))  # the eye on the image's left (the subject's right)
RIGHT_EYE = list(range(42, 48))
NOSE = list(range(27, 36))
# Points the similarity fit uses, by name. "eyes_nose" (default): eye contours and nose bridge/base
# are the rigid part of the face -- mouth, jaw and brows move with expressions, so fitting them
# would make an open mouth or raised brows shift/zoom the whole crop (the VAE must see those
# expressions, not have them normalised away). "openface": OpenFace's inner eyes + lower lip,
# least-squares similarity instead of its exact 3-point affine. "all": every landmark.
ALIGN_POINTS = {
    "eyes_nose": LEFT_EYE + RIGHT_EYE + NOSE,
    "openface": [39, 42, 57],
    "all": list(range(68)),
}

# The frontal-face detector box (dlib HOG convention: square) of the template face, in MINMAX
# units. Measured: dlib's HOG box on 181 faces of 8 real clips (every 15th frame of lp_d6, d10, d3,
# d8, d12, d0, d19, tpsmm_driving), its centre and width mapped into template coordinates through
# each face's alignment; medians: centre (0.502, 0.391), width 1.029 (std 0.03, 0.04, 0.06).
# It is what the shape predictor expects as its starting box, so tracking and re-measuring an
# aligned crop can run the predictor without the detector (tests/test_faces_align.py checks it).
_TEMPLATE_FACE_BOX = (-0.0130, -0.1238, 1.0164, 0.9056)


@dataclass(frozen=True)
class AlignConfig:
    """Crop geometry. ``template_scale`` < 1 zooms out (more context around the face);
    ``template_offset_y`` moves the face down (+) or up (-) by that fraction of ``size``."""

    size: int = 64
    template_scale: float = 1.0
    template_offset_y: float = 0.0
    points: str = "eyes_nose"

    def __post_init__(self) -> None:
        from facevae import FacevaeError

        if int(self.size) < 8:
            raise FacevaeError(f"faces: size must be >= 8 px, got {self.size}")
        if not 0.05 <= float(self.template_scale) <= 4:
            raise FacevaeError(f"faces: template_scale must be in [0.05, 4], got {self.template_scale}")
        if self.points not in ALIGN_POINTS:
            raise FacevaeError(f"faces: points must be one of {sorted(ALIGN_POINTS)}, got {self.points!r}")

    @classmethod
    def from_config(cls, faces: dict | None) -> "AlignConfig":
        """The geometry from the config's ``faces`` section (keys ``size``, ``template_scale``,
        ``template_offset_y``, ``align_points``; missing keys take the defaults)."""
        faces = faces or {}
        return cls(
            size=int(faces.get("size", cls.size)),
            template_scale=float(faces.get("template_scale", cls.template_scale)),
            template_offset_y=float(faces.get("template_offset_y", cls.template_offset_y)),
            points=str(faces.get("align_points", cls.points)),
        )

    @classmethod
    def from_attrs(cls, attrs: dict) -> "AlignConfig":
        """Back from the attributes written by ``as_attrs`` (tracks/faces HDF5 files)."""
        return cls(
            size=int(attrs["size"]),
            template_scale=float(attrs["template_scale"]),
            template_offset_y=float(attrs["template_offset_y"]),
            points=str(attrs["points"]),
        )

    def as_attrs(self) -> dict:
        return asdict(self)

    def template(self) -> np.ndarray:
        """The template's 68 landmarks in crop pixels (float64 (68, 2))."""
        return template_landmarks(self.size, self.template_scale, self.template_offset_y)

    def face_box(self) -> tuple[float, float, float, float]:
        """The detector-style face box of the template face in crop pixels."""
        return template_face_box(self.size, self.template_scale, self.template_offset_y)


def template_landmarks(size: int = 64, scale: float = 1.0, offset_y: float = 0.0) -> np.ndarray:
    """The template's 68 landmarks in crop pixels (float64, (68, 2)).

    Scaling is about the crop centre, so ``scale`` zooms without moving the face."""
    pts = 0.5 + scale * (MINMAX_TEMPLATE - 0.5)
    pts = pts + np.array([0.0, offset_y])
    return pts * size


def _cfg_template(cfg: AlignConfig) -> np.ndarray:
    return template_landmarks(cfg.size, cfg.template_scale, cfg.template_offset_y)


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """(2, 2): centre of the image-left eye, centre of the image-right eye (mean of 6 points each)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[LEFT_EYE].mean(axis=0), lm[RIGHT_EYE].mean(axis=0)])


def template_eye_centres(size: int = 64, scale: float = 1.0, offset_y: float = 0.0) -> np.ndarray:
    return eye_centres(template_landmarks(size, scale, offset_y))


def template_face_box(size: int = 64, scale: float = 1.0, offset_y: float = 0.0) -> tuple[float, float, float, float]:
    """The detector-style face box (x0, y0, x1, y1) of the template face in crop pixels."""
    b = np.array(_TEMPLATE_FACE_BOX)
    xs = (0.5 + scale * (b[[0, 2]] - 0.5)) * size
    ys = (0.5 + scale * (b[[1, 3]] - 0.5) + offset_y) * size
    return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])


def face_box_in_frame(m: np.ndarray, cfg: "AlignConfig") -> tuple[float, float, float, float]:
    """The square detector-style box, in frame pixels, of the face aligned by crop<-frame ``m``."""
    x0, y0, x1, y1 = cfg.face_box()
    inv = invert_transform(m)
    cx, cy = transform_points(inv, np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]
    half = (x1 - x0) / similarity_scale(m) / 2
    return float(cx - half), float(cy - half), float(cx + half), float(cy + half)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking src to dst.

    Closed form (Umeyama 1991): deterministic, unlike cv2.estimateAffinePartial2D's RANSAC.
    Returns the 2x3 matrix M with dst ~ M @ [x, y, 1]."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_transform(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def similarity_scale(m: np.ndarray) -> float:
    """Uniform scale of a similarity matrix (crop px per frame px for crop<-frame)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))


def alignment_matrix(landmarks: np.ndarray, cfg: AlignConfig = AlignConfig()) -> np.ndarray:
    """2x3 float64 crop<-frame similarity fitting ``cfg.points`` onto the template."""
    idx = ALIGN_POINTS[cfg.points]
    return umeyama(np.asarray(landmarks)[idx], _cfg_template(cfg)[idx])


def warp_crop(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp ``rgb`` into a size x size crop through crop<-frame ``m``.

    A big face shrunk straight to 64 px with bilinear sampling aliases (jaggy, sparkling hair):
    warp at an integer multiple of the size near the native resolution, then area-average down."""
    k = int(np.clip(np.floor(1.0 / max(similarity_scale(m), 1e-6)), 1, 8))
    if k == 1:
        return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Big pixel X covers crop coordinate (X + 0.5) / k - 0.5 (pixel centres stay put under INTER_AREA).
    big_m = m * k
    big_m[:, 2] += (k - 1) / 2.0
    big = cv2.warpAffine(rgb, big_m, (size * k, size * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def align_face(
    rgb: np.ndarray, landmarks: np.ndarray, cfg: AlignConfig = AlignConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align one face: (crop uint8 size x size x 3 RGB, landmarks in crop px (68, 2) float32,
    2x3 float64 crop<-frame matrix). The same function for actors, drivers and still images."""
    m = alignment_matrix(landmarks, cfg)
    crop = warp_crop(rgb, m, cfg.size)
    return crop, transform_points(m, landmarks).astype(np.float32), m
