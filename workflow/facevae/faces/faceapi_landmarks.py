"""A PyTorch port of @vladmandic/face-api 1.7.15's ``faceLandmark68Net``: the same 68 landmarks in
Python as the actor's page computes in the browser (workflow/page/app.js, ``landmarksIn``)::

    const [crop] = await faceapi.extractFaces(frameCanvas, [box]);
    const found = await faceapi.nets.faceLandmark68Net.detectLandmarks(crop);
    return found.positions.map((p) => [p.x + box.x, p.y + box.y]);

and the box the page follows a face with between detector frames (align.js ``boxAround``, floored
by app.js ``trackBox``).

The net (face-api src/faceFeatureExtractor, src/faceLandmarkNet), NHWC RGB input 112x112 in 0..255:

- normalise: ``(x - [122.782, 117.001, 104.298]) / 255``;
- four dense blocks (32, 64, 128, 256 channels), each: ``conv0`` stride 2 (a plain 3x3 conv in
  dense0, a depthwise-separable one after), then three separable 3x3 convs ``conv1..3`` stride 1,
  each fed the ReLU of the sum of the outputs before it (out1 = relu(conv0); out_k = conv_k(relu(
  out1 + ... + out_{k-1})); block output relu(out1 + ... + out4)); every conv has a bias, no batch
  norm; padding is TensorFlow's 'same' (stride 2 on an even side pads 0 before, 1 after);
  112 -> 56 -> 28 -> 14 -> 7;
- 7x7 average pool (one 1x1x256 cell), fully connected 256 -> 136: (x, y) interleaved, as
  fractions of the 112 square.

Weights: model/face_landmark_68_model-weights_manifest.json + .bin of the npm package, uint8
quantised, dequantised as tfjs does (``q * scale + min`` in double, stored as float32).

Preprocessing (NetInput.toBatchTensor(112, isCenterInputs=true)): the crop (extractFaces: the
box clipped at the frame, pixels copied) is scaled so its longer side is 112 and centred on a
black 112x112 square. The page hands face-api a canvas, so the browser resamples with canvas
``drawImage``: ``resample="canvas"`` (default) reproduces Chromium's software Skia bit for bit
(4-bit fixed-point bilinear, see ``canvas_square``). face-api's tensor path (a tf.Tensor input, as
in node) pads to square with integer zero padding, then ``tf.image.resizeBilinear``
(half_pixel_centers=false, float values): ``resample="tensor"``. The two put the landmarks of a
face box up to ~2 px apart. Output mapping (FaceLandmark68NetBase.postProcess + FaceLandmarks68):
``crop_px = (out * 112 - offset) / (side * scale) * side`` per axis, offset = the centring offset
in the square; the page then adds the box origin.

Measured agreement (bench/archive/check_faceapi_port.py; face-api 1.7.15 on tfjs 4.22.0's wasm backend,
the page's): raw net output on a random 112x112 input max |diff| 3e-7 (node); landmarks in image
pixels on 20 tpsmm_driving boxes (detector + tracking boxes) 5e-5 px on the tensor path end to end
(node), and in headless Chromium 150 (the page's own extractFaces + detectLandmarks on a canvas,
those boxes plus 60 random ones) the net input is identical (0 of 80x112x112x3 values differ) and
the landmarks agree to 1.3e-4 px. ``box_around`` equals align.js boxAround + floor on every box.
Another browser (Firefox, Safari) or a Chromium whose Skia filters differently would change the
net input and so the landmarks (by up to ~2 px, the size of the canvas/tensor difference).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
MODEL_NAME = "face_landmark_68_model"
_CHANNELS = (32, 64, 128, 256)


# ----------------------------------------------------------------------------- weights


def read_tfjs_weights(manifest_path: str | Path) -> dict[str, np.ndarray]:
    """A tfjs weights manifest and its shards -> {name: float32 array in tfjs layout}, dequantised
    as tfjs-core io.decodeWeights does (uint8/uint16: ``q * scale + min``)."""
    manifest_path = Path(manifest_path)
    groups = json.loads(manifest_path.read_text())
    out: dict[str, np.ndarray] = {}
    for group in groups:
        buf = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            n = math.prod(spec["shape"])
            quant = spec.get("quantization")
            if quant is None:
                if spec["dtype"] != "float32":
                    raise ValueError(f"{spec['name']}: unsupported dtype {spec['dtype']}")
                values = np.frombuffer(buf, "<f4", n, offset)
                offset += 4 * n
            elif quant["dtype"] in ("uint8", "uint16"):
                qtype = np.dtype("u1" if quant["dtype"] == "uint8" else "<u2")
                q = np.frombuffer(buf, qtype, n, offset).astype(np.float64)
                offset += qtype.itemsize * n
                values = (q * quant["scale"] + quant["min"]).astype(np.float32)
            else:
                raise ValueError(f"{spec['name']}: unsupported quantisation {quant['dtype']}")
            out[spec["name"]] = np.asarray(values, np.float32).reshape(spec["shape"])
        if offset != len(buf):
            raise ValueError(f"{manifest_path}: {len(buf) - offset} bytes left after the weights")
    return out


# ----------------------------------------------------------------------------- the net


def _pad_same(x: torch.Tensor, stride: int, k: int = 3) -> torch.Tensor:
    """TensorFlow 'same' padding of an NCHW tensor (the extra row/column goes after)."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + k - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class _SepConv(nn.Module):
    """tf.separableConv2d(depthwise 3x3, pointwise 1x1, 'same') + bias."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.pointwise(self.depthwise(_pad_same(x, self.stride)))


class _Conv(nn.Module):
    """tf.conv2d(3x3, 'same') + bias (dense0/conv0)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride, bias=True)

    def forward(self, x):
        return self.conv(_pad_same(x, self.stride))


class _DenseBlock4(nn.Module):
    """face-api denseBlock4 (isScaleDown): conv0 stride 2, conv1..3 stride 1, dense sums."""

    def __init__(self, cin: int, cout: int, first: bool):
        super().__init__()
        self.conv0 = _Conv(cin, cout, 2) if first else _SepConv(cin, cout, 2)
        self.conv1 = _SepConv(cout, cout, 1)
        self.conv2 = _SepConv(cout, cout, 1)
        self.conv3 = _SepConv(cout, cout, 1)

    def forward(self, x):
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + (out2 + out3)))
        return F.relu(out1 + (out2 + (out3 + out4)))


class FaceLandmark68Net(nn.Module):
    """NHWC float RGB 0..255 (N, 112, 112, 3) -> (N, 136): x0, y0, x1, y1, ... as fractions of the
    112 square (face-api's runNet: the raw output, before postProcess)."""

    def __init__(self):
        super().__init__()
        cin = 3
        for i, c in enumerate(_CHANNELS):
            setattr(self, f"dense{i}", _DenseBlock4(cin, c, first=i == 0))
            cin = c
        self.fc = nn.Linear(256, 136)
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        x = (x - self.mean_rgb) / 255.0
        for i in range(4):
            x = getattr(self, f"dense{i}")(x)
        x = x.mean(dim=(2, 3))  # avgPool 7x7 stride 2 'valid' on 7x7: one cell
        return self.fc(x)

    def load_tfjs(self, weights: dict[str, np.ndarray]) -> None:
        """Copy tfjs weights (HWIO filters, [3,3,C,1] depthwise, [in,out] fc) into the modules."""
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        used = set()

        def take(name):
            used.add(name)
            return weights[name]

        with torch.no_grad():
            for i in range(4):
                block = getattr(self, f"dense{i}")
                for j in range(4):
                    p, mod = f"dense{i}/conv{j}", getattr(block, f"conv{j}")
                    if isinstance(mod, _Conv):
                        mod.conv.weight.copy_(t(take(f"{p}/filters").transpose(3, 2, 0, 1)))
                        mod.conv.bias.copy_(t(take(f"{p}/bias")))
                    else:
                        mod.depthwise.weight.copy_(t(take(f"{p}/depthwise_filter").transpose(2, 3, 0, 1)))
                        mod.pointwise.weight.copy_(t(take(f"{p}/pointwise_filter").transpose(3, 2, 0, 1)))
                        mod.pointwise.bias.copy_(t(take(f"{p}/bias")))
            self.fc.weight.copy_(t(take("fc/weights").T))
            self.fc.bias.copy_(t(take("fc/bias")))
        if set(weights) - used:
            raise ValueError(f"unused weights: {sorted(set(weights) - used)}")


def load_faceapi_landmark_net(model_dir: str | Path) -> FaceLandmark68Net:
    """face-api's faceLandmark68Net from the npm package's ``model/`` folder; eval mode, float32."""
    net = FaceLandmark68Net()
    net.load_tfjs(read_tfjs_weights(Path(model_dir) / f"{MODEL_NAME}-weights_manifest.json"))
    return net.eval().float()


# ----------------------------------------------------------------------------- boxes and crops


def box_around(landmarks, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """align.js ``boxAround`` then app.js ``trackBox``'s flooring: the square of side
    ``margin * max(extent)`` centred on the landmarks' bounding box, its origin clipped at 0 and its
    size at the frame (width, height); (x, y, w, h) floored. Same double arithmetic as JS."""
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for x, y in np.asarray(landmarks, np.float64).tolist():
        x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
    side = max(x1 - x0, y1 - y0) * margin
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bx, by = max(0, cx - side / 2), max(0, cy - side / 2)
    w, h = min(width - bx, side), min(height - by, side)
    return math.floor(bx), math.floor(by), math.floor(w), math.floor(h)


def clip_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """face-api Box.clipAtImageBorders (what extractFaces crops): origin clipped at 0, right/bottom
    at the image, floored."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = max(x, 0.0), max(y, 0.0)
    cw, ch = min(x + w - cx, width - cx), min(y + h - cy, height - cy)
    return math.floor(cx), math.floor(cy), math.floor(cw), math.floor(ch)


def extract_face(image_rgb: np.ndarray, box) -> np.ndarray:
    """faceapi.extractFaces(canvas, [box])[0]: the clipped box's pixels, copied (no resampling)."""
    x, y, w, h = clip_box(box, image_rgb.shape[1], image_rgb.shape[0])
    if w <= 0 or h <= 0:
        raise ValueError(f"box {tuple(box)} is empty inside a {image_rgb.shape[1]}x{image_rgb.shape[0]} image")
    return image_rgb[y:y + h, x:x + w, :3]


def _placement(w: int, h: int, size: int = INPUT_SIZE):
    """imageToSquare / postProcess geometry (double, as JS): scaled size and centring offset."""
    scale = size / max(h, w)
    sw, sh = w * scale, h * scale
    offset = abs(sw - sh) / 2
    return sw, sh, (offset if sw < sh else 0.0), (offset if sh < sw else 0.0)


def _bilinear_rows(n_src: int, coords: np.ndarray):
    """Clamp-to-edge bilinear taps and weights for sample coordinates in source pixel units."""
    c = coords.astype(np.float32)
    i0 = np.floor(c)
    f = (c - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return np.clip(i0, 0, n_src - 1), np.clip(i0 + 1, 0, n_src - 1), f


def _lerp2(src, ya, yb, fy, xa, xb, fx) -> np.ndarray:
    """Bilinear mix in tf's order: top = tl + (tr - tl) * fx, ..., top + (bottom - top) * fy."""
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = src[ya][:, xa] + (src[ya][:, xb] - src[ya][:, xa]) * fx
    bot = src[yb][:, xa] + (src[yb][:, xb] - src[yb][:, xa]) * fx
    return (top + (bot - top) * fy).astype(np.float32)


def _skia_taps(start: int, count: int, dst_off: float, dst_len: float, src_len: int, incremental: bool):
    """Skia's legacy bilinear (SkBitmapProcState, scale + translate, clamp) along one axis for
    destination pixels start..start+count-1 of a src -> dst rect draw: (tap0, tap1, 4-bit weight
    of tap1). The destination is a float32 SkRect (left, left + len: its width is right - left,
    rounded), the matrix float32 (SkMatrix::RectToRect, then invert), the pixel centre is mapped,
    biased by half a source pixel, in 32.32 fixed point (x: one mapping then += step, as
    shadeSpan does; y: one mapping per row), 16.16 taps, 4 fraction bits kept."""
    f32 = np.float32
    left = f32(dst_off)
    inv = f32(1.0) / f32(f32(f32(left + f32(dst_len)) - left) / f32(src_len))
    t = f32(-left * inv)
    if incremental:
        fx0 = int(np.float64(f32(f32(start + 0.5) * inv + t)) * 2**32) - (0x8000 << 16)
        frac = fx0 + np.arange(count, dtype=np.int64) * int(np.float64(inv) * 2**32)
    else:
        pts = (np.arange(start, start + count) + 0.5).astype(f32) * inv + t
        frac = np.trunc(pts.astype(np.float64) * 2**32).astype(np.int64) - (0x8000 << 16)
    fixed = frac >> 16
    return (np.clip(fixed >> 16, 0, src_len - 1), np.clip((fixed + 0x10000) >> 16, 0, src_len - 1),
            (fixed >> 12) & 0xF)


def canvas_square(crop: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The browser's imageToSquare(crop canvas, 112, centred) + tf.browser.fromPixels, as Chromium
    computes it -> uint8 (size, size, 3), zeros outside the drawn rectangle.

    ``drawImage(crop, dx, dy, sw, sh)`` on a transparent 112x112 canvas that face-api opens with
    willReadFrequently (software Skia): imageSmoothingQuality "low" = bilinear without mipmaps,
    drawn by Skia's legacy bitmap shader: 4-bit sub-pixel weights, (sum of 8-bit weighted taps)
    >> 8, truncated; no antialiasing of the (possibly fractional) rectangle: columns/rows
    round(edge) .. round(edge)-1. Bit-exact with Chromium 150's toBatchTensor(112) output on the
    boxes of bench/archive/check_faceapi_port.py (square and not, up- and downscaled). Other browsers
    (Firefox, Safari) filter differently."""
    h, w = crop.shape[:2]
    sw, sh, dx, dy = _placement(w, h, size)
    out = np.zeros((size, size, 3), np.uint8)
    c0, c1 = math.floor(dx + 0.5), math.floor(dx + sw + 0.5)
    r0, r1 = math.floor(dy + 0.5), math.floor(dy + sh + 0.5)
    xa, xb, fx = _skia_taps(c0, c1 - c0, dx, sw, w, incremental=True)
    ya, yb, fy = _skia_taps(r0, r1 - r0, dy, sh, h, incremental=False)
    a = crop.astype(np.int32)
    fx, fy = fx[None, :, None].astype(np.int32), fy[:, None, None].astype(np.int32)
    top, bot = a[ya], a[yb]
    acc = ((top[:, xa] * (16 - fx) + top[:, xb] * fx) * (16 - fy)
           + (bot[:, xa] * (16 - fx) + bot[:, xb] * fx) * fy)
    out[r0:r1, c0:c1] = (acc >> 8).astype(np.uint8)
    return out


def tensor_square(crop: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """face-api's tensor path of toBatchTensor(112, centred): padToSquare (zeros, round(diff/2)
    after, the rest before), then tf.image.resizeBilinear(alignCorners=false,
    halfPixelCenters=false) when not already size x size -> float32 (size, size, 3)."""
    img = crop.astype(np.float32)
    h, w = img.shape[:2]
    if h != w:
        diff = abs(h - w)
        after = math.floor(diff * 0.5 + 0.5)  # JS Math.round
        before = diff - after
        pad = ((0, 0), (before, after)) if h > w else ((before, after), (0, 0))
        img = np.pad(img, pad + ((0, 0),))
    n = img.shape[0]
    if n == size:
        return img
    scale = np.float32(n / size)
    xa, xb, f = _bilinear_rows(n, np.arange(size, dtype=np.float32) * scale)
    return _lerp2(img, xa, xb, f, xa, xb, f)


def net_input(crop: np.ndarray, resample: str = "canvas") -> np.ndarray:
    """The 112x112x3 float32 tensor face-api feeds the net for this crop (see module docstring)."""
    if resample == "canvas":
        return canvas_square(crop).astype(np.float32)
    if resample == "tensor":
        return tensor_square(crop)
    raise ValueError(f"resample must be 'canvas' or 'tensor', not {resample!r}")


def crop_landmarks(raw: np.ndarray, w: int, h: int) -> np.ndarray:
    """postProcess + FaceLandmarks68: raw (136,) net output -> (68, 2) in crop pixels (float32 tf
    arithmetic, then the double scaling by the crop size that FaceLandmarks does)."""
    sw, sh, dx, dy = _placement(w, h)
    xy = np.asarray(raw, np.float32).reshape(68, 2) * np.float32(INPUT_SIZE)
    xy = (xy - np.array([dx, dy], np.float32)) / np.array([sw, sh], np.float32)
    return xy.astype(np.float64) * np.array([w, h], np.float64)


@torch.no_grad()
def faceapi_landmarks_batch(images_rgb: Sequence[np.ndarray] | np.ndarray, boxes, net: nn.Module,
                            resample: str = "canvas") -> np.ndarray:
    """Several (image, box) pairs in one forward pass -> (N, 68, 2) in image pixels. One image
    (H, W, 3) is used for every box. See ``faceapi_landmarks``."""
    boxes = [tuple(int(v) for v in b) for b in boxes]
    if isinstance(images_rgb, np.ndarray) and images_rgb.ndim == 3:
        images_rgb = [images_rgb] * len(boxes)
    crops = [extract_face(img, b) for img, b in zip(images_rgb, boxes, strict=True)]
    batch = torch.from_numpy(np.stack([net_input(c, resample) for c in crops]))
    raw = net(batch).numpy()
    out = np.empty((len(boxes), 68, 2), np.float64)
    for i, (crop, (x, y, _, _)) in enumerate(zip(crops, boxes)):
        out[i] = crop_landmarks(raw[i], crop.shape[1], crop.shape[0]) + np.array([x, y], np.float64)
    return out


def faceapi_landmarks(image_rgb: np.ndarray, box, net: nn.Module, resample: str = "canvas") -> np.ndarray:
    """The page's ``landmarksIn(faceapi, box)``: (68, 2) float64 landmarks in image pixels.

    ``image_rgb``: (H, W, 3) uint8 RGB frame (the page's frameCanvas); ``box``: integer (x, y, w, h)
    (the page floors its boxes). extractFaces crops the box clipped at the image borders; the box's
    own origin is added back, as the page does (so a box with a negative origin is mapped as the
    page maps it). The page skips boxes under 16 px a side before calling this; that check is the
    caller's. ``resample``: "canvas" (the browser, default) or "tensor" (face-api on a tf.Tensor)."""
    return faceapi_landmarks_batch([image_rgb], [box], net, resample)[0]


TRACK_MARGIN = 1.25  # app.js: the box around the last landmarks the page's net runs in
MOUTH_POINTS = list(range(48, 68))  # the 68-point scheme's mouth (outer and inner lips)


def track_landmarks(track, video_path, net: nn.Module, rows) -> np.ndarray:
    """face-api's 68 landmarks for the track rows ``rows`` (each must have dlib landmarks), in the
    track's crop px: on the decoded video frame, the net runs as the page's tracking runs it -- in
    the box around the track's points (margin 1.25), then once more around its own answer -- and
    the points go into the crop by the track's transform. (len(rows), 68, 2) float64."""
    import cv2

    from facevae.faces.align import invert_transform, transform_points

    rows = np.asarray(rows, np.int64)
    want = {int(track.frame[r]): i for i, r in enumerate(rows)}
    out = np.full((len(rows), 68, 2), np.nan)
    dlib = np.asarray(track.landmarks[:], np.float64)
    cap = cv2.VideoCapture(str(video_path))
    index = 0
    try:
        while want:
            ok, bgr = cap.read()
            if not ok:
                break
            i = want.pop(index, None)
            if i is not None:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                h, w = rgb.shape[:2]
                m = track.transforms[rows[i]]
                first = faceapi_landmarks(rgb, box_around(transform_points(invert_transform(m), dlib[rows[i]]), TRACK_MARGIN, w, h), net)
                second = faceapi_landmarks(rgb, box_around(first, TRACK_MARGIN, w, h), net)
                out[i] = transform_points(m, second)
            index += 1
    finally:
        cap.release()
    if want:
        raise ValueError(f"{video_path}: {len(want)} of the track's frames are not in the video (it ends at frame {index})")
    return out


def with_faceapi_mouth(dlib_landmarks: np.ndarray, faceapi: np.ndarray) -> np.ndarray:
    """dlib's 68 points with the mouth's 20 (48-67) taken from face-api's: the drivers' points the
    retargeting reads by default (render.retarget.mouth_points; bench/results/landmark_sweep.md)."""
    out = np.array(dlib_landmarks, np.float64, copy=True)
    out[..., MOUTH_POINTS, :] = np.asarray(faceapi, np.float64)[..., MOUTH_POINTS, :]
    return out
