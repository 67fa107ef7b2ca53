// The pipeline's geometry in the browser (facevae.faces.align and facevae.driving, same numbers):
// the similarity that fits the template's rigid points, and the landmark normalisation the driving
// path reads. tests/test_page.py checks these against Python on the same frames.

// Least-squares similarity (rotation, uniform scale, translation) taking src[i] to dst[i]
// (arrays of [x, y]). In 2-D the closed form of Umeyama's solution without reflection is
// a = sum(s.d) / sum(|s|^2), b = sum(s x d) / sum(|s|^2) on centred points: M = [[a, -b, tx], [b, a, ty]].
export function similarity(src, dst) {
  const n = src.length;
  let msx = 0, msy = 0, mdx = 0, mdy = 0;
  for (let i = 0; i < n; i++) { msx += src[i][0]; msy += src[i][1]; mdx += dst[i][0]; mdy += dst[i][1]; }
  msx /= n; msy /= n; mdx /= n; mdy /= n;
  let ss = 0, dot = 0, cross = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i][0] - msx, sy = src[i][1] - msy, dx = dst[i][0] - mdx, dy = dst[i][1] - mdy;
    ss += sx * sx + sy * sy; dot += sx * dx + sy * dy; cross += sx * dy - sy * dx;
  }
  const a = ss > 0 ? dot / ss : 1, b = ss > 0 ? cross / ss : 0;
  return [[a, -b, mdx - a * msx + b * msy], [b, a, mdy - b * msx - a * msy]];
}

export function transformPoints(m, pts) {
  return pts.map(([x, y]) => [m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2]]);
}

// crop<-frame matrix and the 68 landmarks in crop px, for landmarks (68 [x, y]) in frame px.
export function alignLandmarks(landmarks, align) {
  const src = align.points.map((i) => landmarks[i]);
  const dst = align.points.map((i) => align.template[i]);
  const m = similarity(src, dst);
  return { matrix: m, crop: transformPoints(m, landmarks) };
}

function meanOf(pts, idx) {
  let x = 0, y = 0;
  for (const i of idx) { x += pts[i][0]; y += pts[i][1]; }
  return [x / idx.length, y / idx.length];
}

// facevae.driving.normalise_landmarks: eye-centre midpoint at 0, unit inter-ocular distance.
export function normalise(landmarks, align) {
  const l = meanOf(landmarks, align.left_eye), r = meanOf(landmarks, align.right_eye);
  const iod = Math.hypot(r[0] - l[0], r[1] - l[1]);
  const cx = (l[0] + r[0]) / 2, cy = (l[1] + r[1]) / 2;
  return landmarks.map(([x, y]) => [(x - cx) / iod, (y - cy) / iod]);
}

function median(values) {
  const v = Float64Array.from(values).sort();
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

// facevae.driving.neutral_shape: the point-wise median of normalised shapes.
export function neutralShape(shapes) {
  if (!shapes.length) throw new Error("no frame with a face to take the neutral face from");
  return shapes[0].map((_, k) => [median(shapes.map((s) => s[k][0])), median(shapes.map((s) => s[k][1]))]);
}

// A square box around landmarks, enlarged by `margin`: where the landmark net looks in the next
// frame when the detector does not run (facevae tracks the same way, faces/track.py).
export function boxAround(landmarks, margin, width, height) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of landmarks) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
  const side = Math.max(x1 - x0, y1 - y0) * margin, cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const bx = Math.max(0, cx - side / 2), by = Math.max(0, cy - side / 2);
  return { x: bx, y: by, width: Math.min(width - bx, side), height: Math.min(height - by, side) };
}
