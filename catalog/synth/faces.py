"""Procedural face rendering with PIL: one in-the-wild image per call.

Every shape is built as points in the face frame of :mod:`catalog.synth.geometry`,
turned with the head (yaw), then rotated, scaled and moved into the image in one small
numpy step, and filled as a polygon: no image is ever rotated, which keeps a 500-pixel
image at a few milliseconds. Eyes, nose and mouth are drawn *at* the integer landmarks
(their shapes are translated so that the eye centre, the nose tip and the two mouth
corners land exactly on the annotated pixels), so the annotations are exact.

Random draws made here (background clutter, sensor noise) come from generators seeded
by ``(pose.seed, pose.index)`` and never depend on the attributes, so rendering one
face twice with one attribute flipped changes only the pixels of that attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from catalog.formats import ALIGNED_SIZE, ATTRIBUTES
from catalog.names import suggest
from catalog.synth import geometry
from catalog.synth.population import (
    BALD,
    BUN,
    CURLY,
    LONG,
    MEDIUM,
    SHORT,
    WAVY,
    FaceTraits,
    Layout,
    Pose,
)

_RNG_STREAM = 0x5EED  # keeps the renderer's draws apart from the population's
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601 weights, as PIL's convert("L")


@dataclass(frozen=True)
class RenderedFace:
    """One rendered in-the-wild image and its ground truth.

    ``image`` is RGB, before JPEG encoding. ``landmarks`` (5, 2) int64 and ``bbox``
    ``(x_1, y_1, width, height)`` are in its pixels (the in-the-wild frame);
    ``aligned_matrix`` (2, 3) maps those pixels to the 178x218 aligned frame.
    """

    image: Image.Image
    landmarks: np.ndarray
    bbox: tuple[int, int, int, int]
    aligned_matrix: np.ndarray

    def aligned(self) -> Image.Image:
        """The 178x218 aligned crop (aligned frame)."""
        return aligned_crop(self.image, self.aligned_matrix)


def aligned_crop(image: Image.Image, matrix: np.ndarray) -> Image.Image:
    """Warp an in-the-wild image into the 178x218 aligned frame.

    ``matrix`` (2, 3) maps in-the-wild pixel coordinates (integers at pixel centres) to
    aligned ones. PIL samples with pixel centres at +0.5, hence the half-pixel shifts.
    """
    a = matrix[:, :2]
    t = matrix[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    inv = np.linalg.inv(a)
    off = -inv @ t
    data = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    return image.transform(ALIGNED_SIZE, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)


def _attribute_flags(attributes: Mapping[str, bool | int] | np.ndarray) -> dict[str, bool]:
    if isinstance(attributes, Mapping):
        unknown = set(attributes) - set(ATTRIBUTES)
        if unknown:
            names = sorted(unknown)
            near = suggest(names[0], ATTRIBUTES) if len(names) == 1 else ""
            raise ValueError(f"unknown attribute names: {names}{near}")
        return {name: bool(attributes.get(name, False) in (True, 1)) for name in ATTRIBUTES}
    values = np.asarray(attributes).ravel()
    if values.shape != (len(ATTRIBUTES),):
        raise ValueError(f"expected {len(ATTRIBUTES)} attribute values, got {values.shape}")
    return {name: bool(v > 0) for name, v in zip(ATTRIBUTES, values, strict=True)}


def face_layout(traits: FaceTraits, pose: Pose, attributes: Mapping[str, bool]) -> Layout:
    """Ground truth of one face (one-row ``traits`` and ``pose``), as the population has it."""
    smiling = np.array([attributes["Smiling"]])
    mouth_open = np.array([attributes["Mouth_Slightly_Open"]])
    rel, box = geometry.relative_layout(
        traits.columns(),
        pose.roll,
        pose.yaw,
        pose.pitch,
        pose.face_h,
        pose.box_jitter,
        smiling,
        mouth_open,
    )
    landmarks, bbox = geometry.place(rel, box, pose.cx, pose.cy)
    matrix = geometry.similarity_to_template(landmarks)
    return Layout(
        landmarks=landmarks,
        bbox=bbox,
        aligned_matrix=matrix,
        aligned_landmarks=geometry.aligned_landmarks(matrix, landmarks),
    )


def render_face(
    traits: FaceTraits,
    pose: Pose,
    attributes: Mapping[str, bool | int] | np.ndarray,
    layout: Layout | None = None,
) -> RenderedFace:
    """Draw one in-the-wild image.

    ``traits`` and ``pose`` are one-row tables (``population.traits.row(k)``,
    ``population.poses.row(i)``; :meth:`Population.face` gives all three arguments).
    ``attributes`` maps attribute names to booleans (missing names are False) or is a
    vector of 40 -1/1 values. Per-image attributes (Smiling, Eyeglasses, Wearing_Hat,
    Blurry, make-up, jewellery, ...) are read from it; the identity's look (hair, beard,
    nose, ...) comes from ``traits``. ``layout`` (one row) is the precomputed ground
    truth; by default it is computed from the arguments, so flipping Smiling moves the
    mouth-corner landmarks.

    The function is pure: the same arguments give the same pixels.
    """
    flags = _attribute_flags(attributes)
    if layout is None:
        layout = face_layout(traits, pose, flags)
    t = SimpleNamespace(**{k: v[0] for k, v in traits.columns().items()})
    p = SimpleNamespace(**{k: v[0] for k, v in pose.columns().items()})
    if p.skin_gain != 1.0:
        # Today's complexion (tan, flush, foundation): skin and lips, not hair or eyes.
        t.skin, t.lip_rgb = t.skin * p.skin_gain, t.lip_rgb * p.skin_gain
    landmarks = layout.landmarks[0]
    image = _Painter(t, p, flags, landmarks).paint()
    return RenderedFace(
        image=image,
        landmarks=landmarks,
        bbox=tuple(int(v) for v in layout.bbox[0]),  # type: ignore[arg-type]
        aligned_matrix=layout.aligned_matrix[0],
    )


def _rgb(c: np.ndarray, scale: float = 1.0, alpha: int | None = None) -> tuple[int, ...]:
    v = [int(min(255.0, max(0.0, x * scale))) for x in c]
    return (*v, alpha) if alpha is not None else tuple(v)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> tuple[np.ndarray, ...]:
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return cx + rx * np.cos(phi), cy + ry * np.sin(phi)


class _Painter:
    """Draws one face; holds the face-to-image transform of that image."""

    def __init__(
        self, t: SimpleNamespace, p: SimpleNamespace, flags: dict[str, bool], landmarks: np.ndarray
    ) -> None:
        self.t, self.p, self.f, self.lm = t, p, flags, landmarks.astype(np.float64)
        self.a = t.face_w / 2.0
        self.h = float(p.face_h)
        self.cr, self.sr = float(np.cos(p.roll)), float(np.sin(p.roll))
        self.yaw = float(np.cos(p.yaw)), float(np.sin(p.yaw))
        self.pitch = float(np.cos(p.pitch)), float(np.sin(p.pitch))
        self.sin_yaw = self.yaw[1]
        self.line = max(1, round(0.011 * self.h))
        smiling, mouth_open = flags["Smiling"], flags["Mouth_Slightly_Open"]
        self.mouth_hw, self.mouth_y = geometry.mouth_corners(
            t.mouth_hw, t.eye_y + t.mouth_drop, smiling, mouth_open
        )
        self.nose_y = t.eye_y + t.nose_len

    # -- coordinates -------------------------------------------------------------------
    def _to_image(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Turned face-frame points -> image pixels (n, 2): rotate by roll, scale, move."""
        h, cr, sr = self.h, self.cr, self.sr
        return np.stack([self.p.cx + h * (cr * x - sr * y), self.p.cy + h * (sr * x + cr * y)], 1)

    def pts(self, x: np.ndarray, y: np.ndarray, dz: float | np.ndarray = 0.0) -> np.ndarray:
        """Face-frame points on the head surface (plus ``dz`` depth) -> image (n, 2)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = geometry.surface_depth(x, y, self.a) + dz
        return self._to_image(*geometry.turn(x, y, z, self.yaw, self.pitch))

    def flat(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Points off the face (neck, clothes, hair outline): roll and scale, no turn."""
        return self._to_image(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def anchored(
        self,
        x: np.ndarray,
        y: np.ndarray,
        ax: float,
        ay: float,
        target: np.ndarray,
        dz: float | np.ndarray = 0.0,
        adz: float = 0.0,
    ) -> np.ndarray:
        """Points drawn so that face-frame (ax, ay) lands exactly on pixel ``target``."""
        pts = self.pts(x, y, dz)
        anchor = self.pts(np.array([ax]), np.array([ay]), adz)[0]
        return pts + (target - anchor)

    def mouth_frame(self, s: np.ndarray, tt: np.ndarray) -> np.ndarray:
        """Mouth frame: s = -1 / +1 are the two mouth-corner landmarks exactly, tt is
        the distance below the corner line in face units."""
        left, right = self.lm[3], self.lm[4]
        mid, half = (left + right) / 2.0, (right - left) / 2.0
        # Down is the face frame's +y: roll's image direction (-sin, cos).
        down = np.array([-self.sr, self.cr]) * self.h
        return mid + np.outer(s, half) + np.outer(tt, down)

    # -- drawing -----------------------------------------------------------------------
    def poly(self, pts: np.ndarray, fill: tuple[int, ...]) -> None:
        self.draw.polygon(pts.ravel().tolist(), fill=fill)

    def polyline(self, pts: np.ndarray, fill: tuple[int, ...], width: int) -> None:
        self.draw.line(pts.ravel().tolist(), fill=fill, width=width, joint="curve")

    def paint(self) -> Image.Image:
        p = self.p
        w, h = int(p.width), int(p.height)
        rng = np.random.default_rng([int(p.seed), int(p.index), _RNG_STREAM])
        # Vertical background gradient.
        col = np.linspace(p.bg0, p.bg1, h).astype(np.uint8)
        img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(col[:, None], (h, w, 3))))
        self.draw = ImageDraw.Draw(img, "RGBA")
        self.clutter(rng, w, h)
        self.back_hair()
        self.body()
        self.ears()
        self.face()
        self.facial_hair()
        self.eyes()
        self.brows()
        self.nose()
        self.mouth()
        self.side_light()
        self.front_hair()
        if self.f["Wearing_Hat"]:
            self.hat()
        if self.f["Eyeglasses"]:
            self.glasses()
        img = self.photo(img, rng)
        if self.f["Blurry"]:
            img = img.filter(ImageFilter.GaussianBlur(float(p.blur)))
        return img

    def clutter(self, rng: np.random.Generator, w: int, h: int) -> None:
        """Random background shapes, so that the face is not alone on a gradient."""
        n = int(rng.integers(3, 9))
        kind = rng.integers(0, 3, n)
        centre = rng.uniform(0.0, 1.0, (n, 2)) * (w, h)
        size = rng.uniform(0.04, 0.5, (n, 2)) * max(w, h)
        angle = rng.uniform(0.0, np.pi, n)
        colour = rng.integers(10, 246, (n, 3))
        alpha = rng.integers(90, 256, n)
        for i in range(n):
            if kind[i] == 0:
                x, y = _ellipse(0.0, 0.0, size[i, 0] / 2, size[i, 1] / 2, 16)
            elif kind[i] == 1:
                x = np.array([-1.0, 1.0, 1.0, -1.0]) * size[i, 0] / 2
                y = np.array([-1.0, -1.0, 1.0, 1.0]) * size[i, 1] / 2
            else:
                x = np.array([-0.5, 0.5, 0.1]) * size[i, 0]
                y = np.array([0.3, 0.4, -0.6]) * size[i, 1]
            c, s = np.cos(angle[i]), np.sin(angle[i])
            pts = np.stack([centre[i, 0] + c * x - s * y, centre[i, 1] + s * x + c * y], axis=1)
            self.poly(pts, (*colour[i].tolist(), int(alpha[i])))

    def back_hair(self) -> None:
        t, a, p = self.t, self.a, self.p
        style = p.hair_style  # today's hair: the Pose's; the person's natural colour: t's
        if style == BALD:
            # A fringe of hair around the ears and the back, none on top.
            for s in (-1.0, 1.0):
                x = s * np.array([a * 0.9, a + 0.03, a + 0.035, a * 0.9])
                y = np.array([t.eye_y - 0.14, t.eye_y - 0.12, t.eye_y + 0.1, t.eye_y + 0.12])
                self.poly(self.flat(x, y), _rgb(p.hair_rgb))
            return
        if style == SHORT:
            return
        hv = t.hair_volume * self.p.hair_scale
        bottom = {MEDIUM: 0.32, LONG: 0.95, CURLY: 0.38, BUN: -0.05}[int(style)]
        if style in (MEDIUM, LONG):
            bottom *= self.p.hair_length
        phi = np.linspace(np.pi, 2.0 * np.pi, 17)
        rx, ry = a + hv, geometry.HEAD_B + hv
        if style == CURLY:
            rx, ry = a + hv + 0.08, geometry.HEAD_B + hv + 0.05
        top_x, top_y = rx * np.cos(phi), ry * np.sin(phi)
        side_y = np.linspace(0.0, bottom, 8)
        flare = 0.06 if style == LONG else 0.02
        side_x = rx + flare * np.clip(side_y, 0.0, None)
        if p.hair_wave == WAVY:
            side_x = side_x + 0.022 * np.sin(side_y * 28.0 + p.part)
        x = np.concatenate([top_x, side_x[1:], -side_x[::-1][:-1]])
        y = np.concatenate([top_y, side_y[1:], side_y[::-1][:-1]])
        if style == CURLY:
            ang = np.arctan2(y, x)
            bump = 1.0 + 0.05 * np.sin(11.0 * ang)
            x, y = x * bump, y * bump
        self.poly(self.flat(x, y), _rgb(p.hair_rgb))
        if style == BUN:
            bx, by = _ellipse(0.0, -geometry.HEAD_B - 0.06, 0.12, 0.09, 16)
            self.poly(self.flat(bx, by), _rgb(p.hair_rgb, 0.9))

    def body(self) -> None:
        t, p, f = self.t, self.p, self.f
        nw = 0.2 * t.face_w / 0.76
        skin = _rgb(t.skin, 0.88)
        self.poly(self.flat([-nw, nw, nw * 1.05, -nw * 1.05], [0.2, 0.2, 1.0, 1.0]), skin)
        x = [-nw, -0.75, -1.15, -1.3, 1.3, 1.15, 0.75, nw, 0.0]
        y = [0.72, 0.82, 1.2, 3.0, 3.0, 1.2, 0.82, 0.72, 0.95]
        self.poly(self.flat(x, y), _rgb(p.clothes))
        if f["Wearing_Necktie"]:
            self.poly(self.flat([-nw, 0.0, nw, 0.0], [0.72, 0.98, 0.72, 0.8]), (236, 236, 232))
            tie = _rgb(p.tie_rgb)
            self.poly(self.flat([-0.035, 0.035, 0.025, -0.025], [0.8, 0.8, 0.87, 0.87]), tie)
            self.poly(
                self.flat([-0.025, 0.025, 0.07, 0.0, -0.07], [0.86, 0.86, 1.3, 1.4, 1.3]), tie
            )
        if f["Wearing_Necklace"]:
            u = np.linspace(-1.0, 1.0, 13)
            chain = self.flat(nw * 0.95 * u, 0.64 + 0.12 * (1.0 - u**2))
            jewel = _rgb(p.jewel_rgb)
            self.polyline(chain, jewel, self.line)
            px, py = _ellipse(0.0, 0.79, 0.025, 0.03, 10)
            self.poly(self.flat(px, py), jewel)

    def ears(self) -> None:
        t, f = self.t, self.f
        ey = t.eye_y + t.ear_dy
        rx, ry = t.ear_w * t.ear_size, 0.095 * t.ear_size
        for s in (-1.0, 1.0):
            # The head turns toward +x when yaw > 0: the left ear shows more, the right
            # one hides behind the cheek.
            vis = float(np.clip(1.0 - 2.5 * s * self.sin_yaw, 0.0, 1.8))
            cx = s * (self.a * 0.95 + 0.01 * vis)
            x, y = _ellipse(cx, ey, rx * max(vis, 0.15), ry, 14)
            self.poly(self.flat(x, y), _rgb(t.skin, 0.93))
            if f["Wearing_Earrings"] and vis > 0.4:
                ex, ey2 = _ellipse(s * (self.a * 0.97 + 0.01), ey + ry * 0.95, 0.014, 0.018, 10)
                self.poly(self.flat(ex, ey2), _rgb(self.p.jewel_rgb))

    def face(self) -> None:
        t, f, a, b = self.t, self.f, self.a, geometry.HEAD_B
        skin = _rgb(t.skin)
        if t.double_chin:
            x, y = _ellipse(0.0, b - 0.01, 0.17, 0.065, 16)
            self.poly(self.pts(x, y), _rgb(t.skin, 0.95))
        phi = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        y = b * np.sin(phi)
        x = a * np.cos(phi) * (1.0 - t.jaw * np.clip(y / b, 0.0, 1.0) ** t.chin_pow)
        # The head narrows toward the crown by ``temple`` (0: the plain ellipse).
        x = x * (1.0 - t.temple * np.clip(-y / b, 0.0, 1.0) ** 2)
        outline = self.pts(x, y)
        self.poly(outline, skin)
        if t.contour:
            # Shading along the cheeks and jaw (points 4..20 run down one side, under the
            # chin and up the other): the face's shape shows against any hair or wall.
            self.polyline(outline[3:22], _rgb(t.skin, 0.72), self.line)
        if t.double_chin:
            u = np.linspace(-1.0, 1.0, 9)
            self.polyline(self.pts(0.12 * u, b + 0.04 - 0.02 * u**2), _rgb(t.skin, 0.8), self.line)
        # Shade the side the head turns toward, where the surface falls away.
        if abs(self.sin_yaw) > 0.08:
            s = float(np.sign(self.sin_yaw))
            x, y = _ellipse(s * a * 0.75, 0.05, a * 0.3, 0.38, 16)
            self.poly(self.pts(x, y), (0, 0, 0, int(min(60.0, 150.0 * abs(self.sin_yaw)))))
        if t.cheekbones:
            for s in (-1.0, 1.0):
                x, y = _ellipse(s * (t.eye_dx + 0.04), t.eye_y + 0.1, 0.07, 0.03, 14)
                self.poly(self.pts(x, y), (255, 255, 255, 45))
                x, y = _ellipse(s * (t.eye_dx + 0.03), t.eye_y + 0.19, 0.06, 0.025, 14)
                self.poly(self.pts(x, y), (60, 30, 20, 40))
        if f["Rosy_Cheeks"]:
            for s in (-1.0, 1.0):
                x, y = _ellipse(s * (t.eye_dx + 0.02), self.nose_y - 0.02, 0.06, 0.045, 14)
                self.poly(self.pts(x, y), (235, 80, 100, 90))
        if t.folds:
            for s in (-1.0, 1.0):  # nasolabial folds
                x = s * np.array([t.nose_w * 1.2, self.mouth_hw + 0.03])
                y = np.array([self.nose_y - 0.01, self.mouth_y + 0.03])
                self.polyline(self.pts(x, y), _rgb(t.skin, 0.72), max(1, self.line // 2))
        if t.mark:
            x, y = _ellipse(t.mark_x, t.mark_y, 0.009, 0.009, 8)
            self.poly(self.pts(x, y), _rgb(t.skin, 0.35))
        if t.mark2:
            x, y = _ellipse(t.mark2_x, t.mark2_y, 0.007, 0.007, 8)
            self.poly(self.pts(x, y), _rgb(t.skin, 0.45))
        if t.cleft:
            self.polyline(
                self.pts(np.zeros(2), np.array([b - 0.055, b - 0.02])),
                _rgb(t.skin, 0.7),
                max(1, self.line // 2),
            )
        if t.freckles:
            # The same pattern in every photo of the person: drawn from their own seed.
            frng = np.random.default_rng(int(t.freckles))
            k = int(frng.integers(15, 35))
            fx = frng.uniform(-0.22, 0.22, k)
            fy = t.eye_y + frng.uniform(0.03, 0.17, k)
            fr = frng.uniform(0.004, 0.007, k)
            colour = (*_rgb(t.skin, 0.68), 170)
            for j in range(k):
                self.poly(self.pts(*_ellipse(fx[j], fy[j], fr[j], fr[j], 6)), colour)

    def _lower_face(self, top: float) -> tuple[np.ndarray, np.ndarray]:
        """Outline of the jaw region below ``top``, around (not over) the mouth."""
        t, a, b = self.t, self.a, geometry.HEAD_B
        phi0 = np.arcsin(np.clip(top / b, -1.0, 1.0))
        phi = np.linspace(phi0, np.pi - phi0, 19)
        y = b * np.sin(phi) + 0.01
        x = (a + 0.005) * np.cos(phi) * (1.0 - t.jaw * np.clip(y / b, 0.0, 1.0) ** t.chin_pow)
        my, mw = self.mouth_y, self.mouth_hw
        ix = np.array([-a * 0.8, -(mw + 0.05), -mw * 0.6, 0.0, mw * 0.6, mw + 0.05, a * 0.8])
        iy = np.array(
            [top + 0.02, my - 0.03, my + 0.07, my + 0.08, my + 0.07, my - 0.03, top + 0.02]
        )
        return np.concatenate([x, ix]), np.concatenate([y, iy])

    def facial_hair(self) -> None:
        t, f = self.t, self.f
        hair = t.brow_rgb if t.hair_style == BALD else t.hair_rgb
        p = self.p  # today's facial hair, in the person's natural colour
        if p.beard:
            x, y = self._lower_face(t.eye_y + 0.1)
            self.poly(self.pts(x, y), _rgb(hair, 0.8))
        elif f["5_o_Clock_Shadow"]:
            x, y = self._lower_face(t.eye_y + 0.12)
            self.poly(self.pts(x, y), (*_rgb(hair, 0.5), 70))
            s = np.linspace(-1.1, 1.1, 9)
            up = self.mouth_frame(s, -0.05 + 0.03 * np.abs(s))
            lo = self.mouth_frame(s[::-1], np.full(9, -0.01))
            self.poly(np.concatenate([up, lo]), (*_rgb(hair, 0.5), 70))
        if t.sideburns and t.hair_style != BALD:
            for sgn in (-1.0, 1.0):
                x = sgn * np.array([self.a * 0.98, self.a * 0.8, self.a * 0.82, self.a * 0.99])
                y = np.array([t.eye_y - 0.12, t.eye_y - 0.12, t.eye_y + 0.13, t.eye_y + 0.13])
                self.poly(self.pts(x, y), _rgb(hair, 0.85))
        if p.goatee:
            my = self.mouth_y
            x = np.array([-0.06, 0.06, 0.085, 0.0, -0.085])
            y = np.array([my + 0.045, my + 0.045, 0.44, 0.5, 0.44])
            self.poly(self.pts(x, y), _rgb(hair, 0.75))
        if p.mustache:
            s = np.linspace(-1.15, 1.15, 11)
            up = self.mouth_frame(s, -0.06 + 0.035 * np.abs(s))
            lo = self.mouth_frame(s[::-1], -t.lip_thick * 0.8 + 0.02 * (np.abs(s[::-1]) > 1.0))
            self.poly(np.concatenate([up, lo]), _rgb(hair, 0.75))

    def eyes(self) -> None:
        t, f = self.t, self.f
        rx, ry = t.eye_rx, t.eye_rx * t.eye_open * self.p.eye_squint
        ri = min(0.95 * ry, 0.5 * rx) * t.iris
        for k, s in ((0, -1.0), (1, 1.0)):
            ex, ey, target = s * t.eye_dx, t.eye_y, self.lm[k]

            def tilt(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                # Outer corners up by ``eye_tilt`` (a shear about the eye centre); the
                # outer corner is toward -x on the left eye, +x on the right one.
                if not t.eye_tilt:
                    return x, y
                return x, y - s * t.eye_tilt * (x - ex)  # noqa: B023 (called in-loop)

            if f["Heavy_Makeup"]:
                x, y = tilt(*_ellipse(ex, ey - ry * 0.6, rx * 1.2, ry * 1.5, 16))
                self.poly(self.anchored(x, y, ex, ey, target), (*_rgb(self.p.shadow_rgb), 110))
            if f["Bags_Under_Eyes"]:
                x, y = _ellipse(ex, ey + ry * 1.1, rx * 0.9, ry * 0.8, 14)
                self.poly(self.anchored(x, y, ex, ey, target), (70, 40, 50, 70))
            if t.crease:
                x, y = tilt(*_ellipse(ex, ey, rx * 0.92, ry * t.crease, 20))
                crease = self.anchored(x[10:], y[10:], ex, ey, target)
                self.polyline(crease, _rgb(t.skin, 0.62), max(1, self.line // 2))
            x, y = tilt(*_ellipse(ex, ey, rx, ry, 20))
            outline = self.anchored(x, y, ex, ey, target)
            self.poly(outline, (240, 238, 232))
            x, y = _ellipse(ex, ey, ri, ri, 14)
            self.poly(self.anchored(x, y, ex, ey, target), _rgb(t.eye_rgb))
            x, y = _ellipse(ex, ey, ri * 0.45, ri * 0.45, 10)
            self.poly(self.anchored(x, y, ex, ey, target), (12, 10, 10))
            # The upper lid (the top half of the outline); eyeliner makes it bold.
            liner = (20, 14, 14) if f["Heavy_Makeup"] else _rgb(t.skin, 0.4)
            self.polyline(outline[10:], liner, self.line * (2 if f["Heavy_Makeup"] else 1))

    def brows(self) -> None:
        t = self.t
        u = np.linspace(-1.0, 1.0, 9)  # -1 inner end, +1 outer end
        length = t.eye_rx * t.brow_len
        for s in (-1.0, 1.0):
            x = s * (t.eye_dx + t.brow_dx + u * length)
            mid = t.eye_y - t.brow_gap - self.p.brow_raise
            mid = mid - t.brow_arch * (1.0 - u**2) - t.brow_tilt * 0.06 * u
            thick = t.brow_thick * (1.0 - t.brow_taper * np.clip(u, 0.0, 1.0))
            x2 = np.concatenate([x, x[::-1]])
            y2 = np.concatenate([mid - thick / 2, (mid + thick / 2)[::-1]])
            self.poly(self.pts(x2, y2), _rgb(t.brow_rgb))

    def nose(self) -> None:
        t = self.t
        ny, nw, target, tip_dz = self.nose_y, t.nose_w, self.lm[2], t.nose_z

        def depth(y: np.ndarray) -> np.ndarray:
            return tip_dz * np.clip((y - t.eye_y) / t.nose_len, 0.0, 1.0)

        bridge, wing = t.nose_bridge, t.nostril
        x = np.array([-bridge, bridge, nw * 0.6, 0.0, -nw * 0.6])
        y = np.array([t.eye_y + 0.03, t.eye_y + 0.03, ny - 0.02, ny, ny - 0.02])
        self.poly(self.anchored(x, y, 0.0, ny, target, depth(y), tip_dz), _rgb(t.skin, 0.9))
        for s in (-1.0, 1.0):
            x, y = _ellipse(s * nw * 0.75, ny - 0.004, 0.032 * wing, 0.022 * wing, 12)
            self.poly(self.anchored(x, y, 0.0, ny, target, depth(y), tip_dz), _rgb(t.skin, 0.86))
        x, y = _ellipse(0.0, ny - 0.012, nw * 0.55 * t.nose_tip, 0.024, 14)
        self.poly(self.anchored(x, y, 0.0, ny, target, depth(y), tip_dz), _rgb(t.skin, 0.97))
        for s in (-1.0, 1.0):
            x, y = _ellipse(s * nw * 0.42, ny + 0.012, 0.017 * wing, 0.008 * wing, 10)
            self.poly(self.anchored(x, y, 0.0, ny, target, depth(y), tip_dz), _rgb(t.skin, 0.4))
        if t.contour:
            # The sides of the nose and the creases of its wings, in shade.
            width = max(1, self.line // 2)
            for s in (-1.0, 1.0):
                x = s * np.array([bridge, bridge * 1.2, nw * 0.55])
                y = np.array([t.eye_y + 0.04, (t.eye_y + ny) / 2, ny - 0.03])
                line = self.anchored(x, y, 0.0, ny, target, depth(y), tip_dz)
                self.polyline(line, _rgb(t.skin, 0.75), width)
                # The outer half of the wing's ellipse (its points run clockwise from +x).
                x, y = _ellipse(s * nw * 0.75, ny - 0.004, 0.032 * wing, 0.022 * wing, 12)
                half = [9, 10, 11, 0, 1, 2, 3] if s > 0 else [3, 4, 5, 6, 7, 8, 9]
                x, y = x[half], y[half]
                line = self.anchored(x, y, 0.0, ny, target, depth(y), tip_dz)
                self.polyline(line, _rgb(t.skin, 0.68), width)
        x, y = _ellipse(0.0, ny, 0.008, 0.006, 8)
        self.poly(self.anchored(x, y, 0.0, ny, target, tip_dz, tip_dz), _rgb(t.skin, 1.08))

    def mouth(self) -> None:
        t, f, p = self.t, self.f, self.p
        s = np.linspace(-1.0, 1.0, 15)
        w = (1.0 - s**2) ** 0.6
        # How far the lip line sags below the corners: a smile's, or the person's own.
        depth = 0.03 if f["Smiling"] else t.mouth_sag
        gap = 0.045 if f["Mouth_Slightly_Open"] else 0.0
        centre = depth * (1.0 - s**2)
        up_top = centre - t.lip_thick * t.lip_up * w + t.lip_bow * np.exp(-((s / 0.15) ** 2)) * w
        lo_top = centre + gap * w
        lo_bot = lo_top + t.lip_thick * t.lip_lo * w
        lip = _rgb(p.lipstick_rgb) if f["Wearing_Lipstick"] else _rgb(t.lip_rgb)
        mf = self.mouth_frame
        if gap:
            self.poly(np.concatenate([mf(s, centre), mf(s[::-1], lo_top[::-1])]), (60, 20, 25))
            if f["Smiling"]:
                inner = np.abs(s) < 0.75
                si = s[inner]
                top, bot = centre[inner], (centre + 0.4 * gap * w)[inner]
                self.poly(np.concatenate([mf(si, top), mf(si[::-1], bot[::-1])]), (236, 232, 222))
        self.poly(np.concatenate([mf(s, up_top), mf(s[::-1], centre[::-1])]), _rgb(np.array(lip)))
        self.poly(np.concatenate([mf(s, lo_top), mf(s[::-1], lo_bot[::-1])]), _rgb(np.array(lip)))
        if not gap:
            self.polyline(mf(s, centre), _rgb(np.array(lip), 0.5), max(1, self.line // 2 + 1))
        if t.dimples and f["Smiling"]:
            r = max(1.0, 0.008 * self.h)
            for x, y in mf(np.array([-1.3, 1.3]), np.array([0.012, 0.012])):
                self.poly(np.array(_ellipse(x, y, r, r * 1.4, 8)).T, (*_rgb(t.skin, 0.6), 200))

    def side_light(self) -> None:
        """Shade one half of the face, as a light from the other side would."""
        alpha = int(self.p.shade_alpha) // 2
        if alpha:
            # Two overlapping layers: a softer edge down the middle of the face.
            s = float(self.p.shade_side)
            for centre, half_w in ((0.5, 0.6), (0.65, 0.45)):
                x, y = _ellipse(s * self.a * centre, 0.0, self.a * half_w, 0.49, 24)
                self.poly(self.pts(x, y), (0, 0, 0, alpha))

    def _hairline(self, n: int = 17) -> tuple[np.ndarray, np.ndarray]:
        """Hairline from the right temple over the forehead to the left temple."""
        t = self.t
        psi = np.linspace(0.0, np.pi, n)
        temple = t.eye_y - 0.07
        x = self.a * 0.97 * np.cos(psi)
        y = temple + (t.hairline - temple) * np.sin(psi) ** 0.6
        if t.receding:
            # The M shape: the hairline climbs at the temples.
            y = y - 0.08 * np.exp(-(((np.abs(np.cos(psi)) - 0.55) / 0.18) ** 2))
        y = y + 0.015 * self.p.part * np.cos(psi)  # a slight tilt toward the parting
        return x, y

    def front_hair(self) -> None:
        t, p = self.t, self.p
        if p.hair_style == BALD:
            return
        hv = t.hair_volume * p.hair_scale + (0.06 if p.hair_style == CURLY else 0.0)
        phi = np.linspace(np.pi, 2.0 * np.pi, 19)
        ox = (self.a + hv) * np.cos(phi)
        oy = (geometry.HEAD_B + hv) * np.sin(phi)
        down = t.eye_y - (0.02 if p.hair_style == SHORT else -0.05)
        ox = np.concatenate([[-(self.a + hv) * 0.99], ox, [(self.a + hv) * 0.99]])
        oy = np.concatenate([[down], oy, [down]])
        hx, hy = self._hairline()
        x = np.concatenate([ox, [self.a * 0.97], hx, [-self.a * 0.97]])
        y = np.concatenate([oy, [down], hy, [down]])
        self.poly(self.pts(x, y), _rgb(p.hair_rgb))
        # Strands fanning out from the parting: some texture, and a parting side that
        # stays with the person.
        u = np.linspace(0.0, 1.0, 5)
        crown_x, crown_y = p.part * 0.08, -geometry.HEAD_B - hv * 0.4
        for end_x in (-0.2, -0.08, 0.08, 0.2):
            sx = crown_x + (end_x - crown_x) * u
            sy = crown_y + (t.hairline - 0.03 - crown_y) * np.sqrt(u)
            self.polyline(self.pts(sx, sy), _rgb(p.hair_rgb, 0.78), max(1, self.line // 2))
        if p.bangs:
            fringe = t.eye_y - t.brow_gap - 0.025
            bx = np.linspace(-self.a * 0.85, self.a * 0.85, 13)
            by = fringe + 0.018 * (np.arange(13) % 2) + 0.03 * p.part * bx / self.a
            top = np.full(13, t.hairline - 0.04)
            x = np.concatenate([bx, bx[::-1]])
            y = np.concatenate([by, top])
            self.poly(self.pts(x, y), _rgb(p.hair_rgb, 0.95))

    def hat(self) -> None:
        t, p = self.t, self.p
        colour = _rgb(p.hat_rgb)
        band_y = t.hairline + 0.02
        style = int(p.hat_style)
        a = self.a
        phi = np.linspace(np.pi, 2.0 * np.pi, 19)
        lift = 0.06 if style == 2 else 0.0
        rx = a + 0.05 - (0.04 if style == 2 else 0.0)
        x = np.concatenate([[-rx], rx * np.cos(phi), [rx]])
        top = geometry.HEAD_B + 0.08 + lift
        # The crown rises from the band at the sides to ``-top`` over the head centre.
        crown = band_y + (-top - band_y) * np.abs(np.sin(phi)) ** 0.8
        y = np.concatenate([[band_y], crown, [band_y]])
        self.poly(self.flat(x, y), colour)
        if style == 0:  # cap: a peak toward the camera
            bx, by = _ellipse(0.0, band_y + 0.01, a * 0.85, 0.05, 16)
            self.poly(self.pts(bx, by, 0.05), _rgb(p.hat_rgb, 0.8))
        elif style == 1:  # beanie: a ribbed band
            x = np.array([-rx, rx, rx, -rx])
            y = np.array([band_y - 0.07, band_y - 0.07, band_y + 0.01, band_y + 0.01])
            self.poly(self.flat(x, y), _rgb(p.hat_rgb, 0.82))
        else:  # brimmed
            bx, by = _ellipse(0.0, band_y, a + 0.24, 0.045, 20)
            self.poly(self.flat(bx, by), _rgb(p.hat_rgb, 0.85))

    def glasses(self) -> None:
        t, p = self.t, self.p
        hw, hh = t.eye_rx * 1.65, max(t.eye_rx * 1.15, 0.055)
        phi = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
        c, s = np.cos(phi), np.sin(phi)
        # A superellipse: rounded-rectangle lenses.
        ux = np.sign(c) * np.abs(c) ** 0.5
        uy = np.sign(s) * np.abs(s) ** 0.5
        frame = _rgb(p.frame_rgb)
        width = max(1, round(0.014 * self.h))
        rims = []
        for k, sgn in ((0, -1.0), (1, 1.0)):
            ex, ey = sgn * t.eye_dx, t.eye_y
            rim = self.anchored(ex + hw * ux, ey + hh * uy, ex, ey, self.lm[k])
            if p.sunglasses:
                self.poly(rim, (25, 25, 35, 225))
            self.polyline(np.concatenate([rim, rim[:1]]), frame, width)
            rims.append(rim)
        # Bridge between the inner rims, temples from the outer rims to the ears.
        self.polyline(np.stack([rims[0][0], rims[1][12]]), frame, width)
        for k, sgn, idx in ((0, -1.0, 12), (1, 1.0, 0)):
            ear = self.pts(np.array([sgn * self.a * 0.98]), np.array([t.eye_y + 0.01]))[0]
            self.polyline(np.stack([rims[k][idx], ear]), frame, width)

    def photo(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Lighting gradient, exposure and sensor noise.

        The per-pixel work runs in PIL's C loops (multiply, LUT, add), which is three
        times faster than the same arithmetic in float32 numpy at these sizes.
        """
        p = self.p
        w, h = img.size
        if p.saturation != 1.0:
            # Towards (or away from) each pixel's grey level, as one colour matrix.
            sat, grey = float(p.saturation), (1.0 - float(p.saturation)) * _LUMA
            matrix = np.eye(3) * sat + grey[None, :]
            img = img.convert("RGB", tuple(np.concatenate([matrix, np.zeros((3, 1))], 1).ravel()))
        gx = np.cos(p.light_angle) * p.light_strength * (np.arange(w, dtype=np.float32) / w - 0.5)
        gy = np.sin(p.light_angle) * p.light_strength * (np.arange(h, dtype=np.float32) / h - 0.5)
        gain = gy.astype(np.float32)[:, None] + gx.astype(np.float32)[None, :] + np.float32(1.0)
        top = float(gain.max())
        g = Image.fromarray((gain * np.float32(255.0 / top)).astype(np.uint8), "L")
        img = ImageChops.multiply(img, Image.merge("RGB", (g, g, g)))
        # One lookup table per channel undoes the gain normalisation and applies
        # exposure, contrast (gamma) and white balance in the same pass.
        level = np.minimum(np.arange(256) * (top * float(p.exposure) / 255.0), 1.0)
        curve = 255.0 * level ** float(p.gamma)
        lut = np.clip(np.rint(curve[None, :] * p.white_balance[:, None] + p.tint[:, None]), 0, 255)
        img = img.point(lut.astype(np.int64).ravel().tolist())
        # Uniform noise in [-k, k] (standard deviation k / sqrt(3)), the same on all three
        # channels; drawn as bytes, which is much cheaper than Gaussian floats.
        k = max(1, round(float(p.noise) * 3**0.5))
        noise = Image.fromarray(rng.integers(128 - k, 129 + k, (h, w), dtype=np.uint8), "L")
        return ImageChops.add(img, Image.merge("RGB", (noise, noise, noise)), 1.0, -128)
