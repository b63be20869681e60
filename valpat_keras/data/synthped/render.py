"""Rendering SynthPed images with PIL ImageDraw plus a few vectorised NumPy passes.

A `Camera` fixes what a surveillance camera adds to every image it takes (background colour
and texture, illumination, white balance, typical blur and noise, which views it tends to
see). A `Shot` fixes what varies per image (view, facing direction, pose, scale, translation,
occlusion, the exact photometric jitter). `render` draws an `Identity` under both. Body
geometry is expressed in units of the person's height, so every size renders the same scene.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from valpat_keras.data.synthped.identity import RGB, VIEWS, Identity, visible_features

TEXTURES: tuple[str, ...] = ("gradient", "floor", "bands", "blobs")


@dataclasses.dataclass(frozen=True)
class Camera:
    """The fixed look of one camera.

    Attributes:
        index: 1-based camera number (as in Market-1501 names).
        background: Main background RGB; ``background2`` the second texture colour.
        texture: ``"gradient"``, ``"floor"``, ``"bands"`` or ``"blobs"``.
        gain: Illumination multiplier.
        white_balance: Per-channel multipliers (R, G, B).
        view_probs: Probabilities of the front / side / back views.
        blur: Typical blur strength (see `Shot.blur`).
        noise: Typical pixel noise standard deviation (0-255 scale).
    """

    index: int
    background: RGB
    background2: RGB
    texture: str
    gain: float
    white_balance: tuple[float, float, float]
    view_probs: tuple[float, float, float]
    blur: float
    noise: float


@dataclasses.dataclass(frozen=True)
class Shot:
    """Everything that varies between two images of one identity under one camera.

    Attributes:
        view: ``"front"``, ``"side"`` or ``"back"``.
        facing_left: Mirror the image (side views face left or right).
        scale: Person height relative to its nominal height in the crop.
        dx: Horizontal offset of the person, fraction of the image width.
        dy: Vertical offset, fraction of the image height.
        arm_swing: Arm pose in [-1, 1].
        leg_swing: Leg pose in [-1, 1].
        occluded: A block hides the lower legs and feet.
        occluder_top: Top of the occluder, fraction of the person height (0 = head top).
        occluder_rgb: Occluder colour.
        gain: Illumination multiplier of this image (camera gain times jitter).
        blur: Blur strength; above 0.5 the image is rendered soft (half resolution, upsampled).
        noise: Pixel noise standard deviation (rounded to the nearest of `NOISE_LEVELS`).
    """

    view: str
    facing_left: bool
    scale: float
    dx: float
    dy: float
    arm_swing: float
    leg_swing: float
    occluded: bool
    occluder_top: float
    occluder_rgb: RGB
    gain: float
    blur: float
    noise: float

    @property
    def feet_visible(self) -> bool:
        """Whether the shoes are visible (they are hidden whenever an occluder is present)."""
        return not self.occluded


def _rgb(rng: np.random.Generator, low: int = 30, high: int = 225) -> RGB:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def sample_camera(rng: np.random.Generator, index: int) -> Camera:
    """Draws the fixed look of camera ``index`` (1-based).

    Args:
        rng: NumPy random generator.
        index: Camera number stored in the result.

    Returns:
        A `Camera`.
    """
    base = _rgb(rng, 40, 210)
    second = tuple(int(np.clip(c + rng.integers(-70, 71), 0, 255)) for c in base)
    white_balance = tuple(float(v) for v in rng.uniform(0.85, 1.15, 3))
    probs = rng.dirichlet((2.0, 2.0, 2.0))
    return Camera(
        index=int(index), background=base, background2=second,
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))], gain=float(rng.uniform(0.7, 1.25)),
        white_balance=white_balance, view_probs=tuple(float(p) for p in probs),
        blur=float(rng.uniform(0.0, 1.0)), noise=float(rng.uniform(2.0, 9.0)))


def sample_shot(rng: np.random.Generator, camera: Camera, view: str | None = None,
                occlusion_prob: float = 0.2) -> Shot:
    """Draws the per-image variation of one picture taken by ``camera``.

    Args:
        rng: NumPy random generator.
        camera: The camera (its view probabilities, gain, blur and noise are the centre of
            the per-image jitter).
        view: Force a view; by default drawn from ``camera.view_probs``.
        occlusion_prob: Probability that a block hides the lower legs and feet.

    Returns:
        A `Shot`.
    """
    if view is None:
        view = VIEWS[int(rng.choice(3, p=camera.view_probs))]
    elif view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    occluded = bool(rng.random() < occlusion_prob)
    return Shot(
        view=view, facing_left=bool(rng.random() < 0.5), scale=float(rng.uniform(0.86, 1.0)),
        dx=float(rng.normal(0.0, 0.05)), dy=float(rng.normal(0.0, 0.02)),
        arm_swing=float(rng.uniform(-1, 1)), leg_swing=float(rng.uniform(-1, 1)),
        occluded=occluded, occluder_top=float(rng.uniform(0.7, 0.8)),
        occluder_rgb=_rgb(rng), gain=float(camera.gain * rng.uniform(0.85, 1.15)),
        blur=float(max(0.0, camera.blur * rng.uniform(0.5, 1.5))),
        noise=float(camera.noise * rng.uniform(0.6, 1.4)))


_UPSAMPLERS: dict[tuple[int, int], tuple] = {}


def _upsampler(size: int, coarse: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Linear interpolation from `coarse` cells to `size` pixels: two source indices and the
    # weight of the second. Gathers and element-wise maths (not a matrix product, whose
    # summation order can vary) keep the pixels bit-identical from run to run.
    pos = np.clip((np.arange(size) + 0.5) * coarse / size - 0.5, 0, coarse - 1)
    low = np.floor(pos).astype(np.intp)
    high = np.minimum(low + 1, coarse - 1)
    return low, high, (pos - low).astype(np.float32)


def _background(camera: Camera, rng: np.random.Generator, height: int, width: int,
                tint: np.ndarray) -> Image.Image:
    # A coarse 16x8 texture, upsampled bilinearly: smooth and cheap.
    if (height, width) not in _UPSAMPLERS:
        _UPSAMPLERS[(height, width)] = (_upsampler(height, 16), _upsampler(width, 8))
    (r0, r1, rw), (c0, c1, cw) = _UPSAMPLERS[(height, width)]
    bg = np.asarray(camera.background, np.float32)
    bg2 = np.asarray(camera.background2, np.float32)
    rows = np.linspace(0.0, 1.0, 16, dtype=np.float32)[:, None, None]
    if camera.texture == "gradient":
        mix = np.broadcast_to(rows, (16, 8, 1))
    elif camera.texture == "floor":
        horizon = rng.uniform(0.55, 0.8)
        mix = np.broadcast_to((rows > horizon).astype(np.float32), (16, 8, 1))
    elif camera.texture == "bands":
        mix = np.broadcast_to((rng.random((1, 8, 1)) < 0.5).astype(np.float32), (16, 8, 1))
    else:
        mix = rng.random((16, 8, 1)).astype(np.float32)
    coarse = bg * (1.0 - mix) + bg2 * mix + rng.normal(0.0, 8.0, (16, 8, 3)).astype(np.float32)
    coarse = coarse * tint
    rw, cw = rw[:, None, None], cw[None, :, None]
    tall = coarse[r0] * (1.0 - rw) + coarse[r1] * rw  # (height, 8, 3)
    full = tall[:, c0] * (1.0 - cw) + tall[:, c1] * cw  # (height, width, 3)
    return Image.fromarray(np.clip(full, 0, 255).astype(np.uint8), "RGB")


def _shade(rgb: RGB, factor: float) -> RGB:
    return tuple(int(min(255, c * factor)) for c in rgb)


class _Canvas:
    """Draws in person units: x relative to the body centre, y from the head top (0) to the
    soles (1), both in units of the person height."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, ph: float,
                 tint: tuple[float, float, float]):
        self.draw, self.cx, self.top, self.ph = draw, cx, top, ph
        self.tint = tint

    def color(self, rgb: RGB) -> RGB:
        # Illumination and white balance are applied to each fill colour, not per pixel.
        r, g, b = self.tint
        return (min(255, int(rgb[0] * r)), min(255, int(rgb[1] * g)), min(255, int(rgb[2] * b)))

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + x * self.ph, self.top + y * self.ph)

    def poly(self, points, fill: RGB) -> None:
        self.draw.polygon([self.xy(x, y) for x, y in points], fill=self.color(fill))

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        self.draw.rectangle((min(a, c), min(b, d), max(a, c), max(b, d)), fill=self.color(fill))

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        self.draw.ellipse((min(a, c), min(b, d), max(a, c), max(b, d)), fill=self.color(fill))

    def chord(self, x0, y0, x1, y1, start: float, end: float, fill: RGB) -> None:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        self.draw.chord((min(a, c), min(b, d), max(a, c), max(b, d)), start, end,
                        fill=self.color(fill))

    def line(self, points, fill: RGB, width: float) -> None:
        self.draw.line([self.xy(x, y) for x, y in points], fill=self.color(fill),
                       width=max(1, round(width * self.ph)))

    def limb(self, x0, y0, x1, y1, w0, w1, fill: RGB) -> None:
        # A tapered quad from (x0, y0) to (x1, y1) with half-widths w0, w1.
        self.poly([(x0 - w0, y0), (x0 + w0, y0), (x1 + w1, y1), (x1 - w1, y1)], fill)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _draw_torso_patterns(c: _Canvas, p: Identity, view: str, y0: float, y1: float,
                         half0: float, half1: float, show_logo: bool) -> None:
    def half(y: float) -> float:
        return _lerp(half0, half1, (y - y0) / (y1 - y0))

    def band(ya: float, yb: float, fill: RGB) -> None:
        ya, yb = max(ya, y0), min(yb, y1)
        if yb > ya:
            c.poly([(-half(ya), ya), (half(ya), ya), (half(yb), yb), (-half(yb), yb)], fill)

    period = p.stripe_period
    if p.upper_pattern == "stripes":
        y = y0 + period * 0.5
        while y < y1:
            band(y, y + period * 0.5, p.pattern_rgb)
            y += period
    elif p.upper_pattern == "plaid":
        y = y0 + period * 0.4
        while y < y1:
            band(y, y + period * 0.2, p.pattern_rgb)
            y += period
        x = -min(half0, half1) + period * 0.4
        while x < min(half0, half1):
            c.rect(x, y0, x + period * 0.2, y1, p.pattern_rgb)
            x += period
    elif p.upper_pattern == "splice":
        band(_lerp(y0, y1, p.splice_ratio), y1, p.pattern_rgb)
    elif p.upper_pattern == "logo" and show_logo:
        lx = _lerp(-half0, half0, p.logo_pos[0]) * (0.6 if view == "side" else 1.0)
        ly = _lerp(y0, y1, p.logo_pos[1])
        r = 0.028
        if p.logo_shape == "circle":
            c.ellipse(lx - r, ly - r, lx + r, ly + r, p.pattern_rgb)
        elif p.logo_shape == "square":
            c.rect(lx - r, ly - r, lx + r, ly + r, p.pattern_rgb)
        else:
            c.poly([(lx, ly - r), (lx + r, ly + r), (lx - r, ly + r)], p.pattern_rgb)


@dataclasses.dataclass(frozen=True)
class _Body:
    """Landmarks of one shot of one identity, in person units (see `_Canvas`)."""

    side: bool
    head_r: float
    head_y: float
    shoulder_y: float
    hip_y: float
    ankle_y: float
    torso_half: float
    hip_half: float
    leg_half: float
    arm_half: float
    wrist_y: float
    upper_end_y: float
    upper_end_half: float

    @classmethod
    def of(cls, p: Identity, view: str) -> _Body:
        side = view == "side"
        r = p.head_size
        head_y = 0.02 + r
        shoulder_y = head_y + r + 0.03
        hip_half = (0.08 if side else 0.105) * p.width
        coat = p.upper_type == "long_coat"
        return cls(side=side, head_r=r, head_y=head_y, shoulder_y=shoulder_y, hip_y=0.53,
                   ankle_y=0.955, torso_half=(0.085 if side else 0.13) * p.width,
                   hip_half=hip_half, leg_half=0.05 * p.width, arm_half=0.04 * p.width,
                   wrist_y=shoulder_y + 0.31, upper_end_y=0.75 if coat else 0.55,
                   upper_end_half=hip_half * (1.5 if coat else 1.05))


def _draw_legs(c: _Canvas, p: Identity, b: _Body, shot: Shot, show_shoes: bool) -> None:
    # Ankles: a stride from the side, a small stance jitter from the front/back.
    if b.side:
        step = p.stride * (0.6 + 0.6 * abs(shot.leg_swing))
        legs = [(-0.01, -step), (0.01, step)]
    else:
        spread = 0.045 + 0.015 * shot.leg_swing
        legs = [(-b.hip_half * 0.5, -spread), (b.hip_half * 0.5, spread)]
    lw = b.leg_half
    for k, (hx, ax) in enumerate(legs):
        # The far leg of a side view is in shadow.
        shade = 0.8 if b.side and k == 0 else 1.0
        c.limb(hx, b.hip_y, ax, b.ankle_y, lw, lw * 0.75, _shade(p.skin, shade))
        garment = _shade(p.lower_rgb, shade)
        end = None
        if p.lower_type == "trousers":
            end = b.ankle_y
            c.limb(hx, b.hip_y, ax, end, lw * 1.05, lw * 0.8, garment)
        elif p.lower_type == "shorts":
            end = 0.68
            t = (end - b.hip_y) / (b.ankle_y - b.hip_y)
            c.limb(hx, b.hip_y, _lerp(hx, ax, t), end, lw * 1.15, lw * 1.1, garment)
        if end is not None and p.lower_pattern != "plain":
            bx = _lerp(hx, ax, (end - b.hip_y) / (b.ankle_y - b.hip_y))
            color = _shade(p.lower_pattern_rgb, shade)
            if p.lower_pattern == "stripe":
                outer = -1.0 if hx < 0 or b.side else 1.0
                c.line([(hx + outer * lw * 0.7, b.hip_y), (bx + outer * lw * 0.55, end)],
                       color, 0.012)
            else:
                n = max(2, int((end - b.hip_y) / (p.stripe_period * 1.2)))
                for i in range(n):
                    x, y = _lerp(hx, bx, (i + 0.5) / n), _lerp(b.hip_y, end, (i + 0.5) / n)
                    c.rect(x - 0.012, y - 0.008, x + 0.012, y + 0.008, color)
        if show_shoes:
            color = _shade(p.shoe_rgb, shade)
            if p.boots:
                c.rect(ax - lw * 0.85, 0.86, ax + lw * 0.85, 0.99, color)
            c.ellipse(ax - lw * 0.95, 0.945, ax + lw * 0.95 + (0.04 if b.side else 0.0), 1.0,
                      color)


def _draw_skirt(c: _Canvas, p: Identity, b: _Body) -> None:
    hem, top, hw = 0.74, b.hip_y - 0.01, b.hip_half
    c.poly([(-hw * 1.05, top), (hw * 1.05, top), (hw * 1.6, hem), (-hw * 1.6, hem)], p.lower_rgb)
    if p.lower_pattern == "stripe":
        c.poly([(-hw * 1.52, hem - 0.03), (hw * 1.52, hem - 0.03), (hw * 1.6, hem),
                (-hw * 1.6, hem)], p.lower_pattern_rgb)
    elif p.lower_pattern == "pattern":
        step = p.stripe_period * 1.2
        y = b.hip_y + step * 0.5
        while y < hem - 0.01:
            x = -hw + step * 0.3
            while x < hw:
                c.rect(x - 0.012, y - 0.008, x + 0.012, y + 0.008, p.lower_pattern_rgb)
                x += step
            y += step


def _draw_upper(c: _Canvas, p: Identity, b: _Body, view: str, seen: dict[str, bool]) -> None:
    # Torso (a long coat flares down over the thighs), its pattern, then what hangs on it.
    c.poly([(-b.torso_half, b.shoulder_y), (b.torso_half, b.shoulder_y),
            (b.upper_end_half, b.upper_end_y), (-b.upper_end_half, b.upper_end_y)], p.upper_rgb)
    _draw_torso_patterns(c, p, view, b.shoulder_y, b.upper_end_y, b.torso_half,
                         b.upper_end_half, seen["logo"])
    tw, y_sh = b.torso_half, b.shoulder_y
    if seen["backpack"] and view == "back":
        c.ellipse(-tw * 0.75, y_sh, tw * 0.75, y_sh + 0.06, p.bag_rgb)
        c.rect(-tw * 0.75, y_sh + 0.03, tw * 0.75, y_sh + 0.25, p.bag_rgb)
    if seen["shoulder_bag"]:
        if b.side:
            c.line([(0.0, y_sh), (0.0, 0.46)], p.bag_rgb, 0.01)
            c.rect(tw - 0.01, 0.44, tw + 0.05, 0.56, p.bag_rgb)
        else:
            c.line([(-tw * 0.8, y_sh), (b.hip_half, 0.47)], p.bag_rgb, 0.01)
            c.rect(b.hip_half - 0.01, 0.45, b.hip_half + 0.07, 0.57, p.bag_rgb)


def _draw_arms(c: _Canvas, p: Identity, b: _Body, shot: Shot) -> list[tuple[float, float]]:
    # Sleeves in the upper colour, skin below short sleeves, hands in skin; returns wrists.
    sleeve_end = 0.35 if p.upper_type == "short_sleeve" else 0.92
    swing = shot.arm_swing
    arms = [(0.0, 0.12 * swing)] if b.side else [
        (-b.torso_half, -0.03 - 0.02 * swing), (b.torso_half, 0.03 + 0.02 * swing)]
    aw, y0, y1 = b.arm_half, b.shoulder_y + 0.01, b.wrist_y
    wrists = []
    for sx, dx in arms:
        wx = sx + dx
        c.limb(sx, y0, wx, y1, aw, aw * 0.8, p.skin)
        c.limb(sx, y0, _lerp(sx, wx, sleeve_end), _lerp(y0, y1, sleeve_end), aw * 1.1,
               aw * 1.05, p.upper_rgb)
        c.ellipse(wx - aw, y1 - aw * 0.6, wx + aw, y1 + aw * 1.4, p.skin)
        wrists.append((wx, y1))
    return wrists


def _draw_carried(c: _Canvas, p: Identity, b: _Body, seen: dict[str, bool],
                  wrist: tuple[float, float]) -> None:
    if seen["handbag"]:
        wx, wy = wrist
        c.line([(wx, wy), (wx - 0.02, wy + 0.05), (wx + 0.02, wy + 0.05)], p.bag_rgb, 0.008)
        c.rect(wx - 0.045, wy + 0.04, wx + 0.045, wy + 0.12, p.bag_rgb)
    if seen["holding"]:
        tw = b.torso_half
        if b.side:
            c.rect(tw - 0.01, 0.38, tw + 0.07, 0.5, p.held_rgb)
            c.ellipse(tw, 0.42, tw + 0.04, 0.46, p.skin)
        else:
            c.rect(-0.07, 0.38, 0.07, 0.48, p.held_rgb)
            c.ellipse(-0.09, 0.41, -0.05, 0.45, p.skin)
            c.ellipse(0.05, 0.41, 0.09, 0.45, p.skin)


def _draw_head(c: _Canvas, p: Identity, b: _Body, view: str, seen: dict[str, bool]) -> None:
    # Neck and head: a face from the front/side, the back of the hair from the back.
    r, hy = b.head_r, b.head_y
    c.rect(-r * 0.4, hy + r * 0.6, r * 0.4, b.shoulder_y + 0.01, p.skin)
    hx = 0.15 * r if b.side else 0.0
    c.ellipse(hx - r * 0.85, hy - r, hx + r * 0.85, hy + r,
              p.hair_rgb if view == "back" else p.skin)
    eye = (30, 25, 25)
    if view != "back":
        c.chord(hx - r * 0.87, hy - r * 1.02, hx + r * 0.87, hy + r * 0.6, 180, 360, p.hair_rgb)
        if b.side:
            c.ellipse(hx - r * 0.9, hy - r * 0.9, hx, hy + r * 0.5, p.hair_rgb)
            eye_xs = [hx + r * 0.55]
        else:
            eye_xs = [-0.35 * r, 0.35 * r]
        for ex in eye_xs:
            c.rect(ex - r * 0.1, hy - r * 0.05, ex + r * 0.1, hy + r * 0.1, eye)
    if seen["glasses"]:
        dark = (15, 15, 20)
        if b.side:
            c.rect(hx + r * 0.3, hy - r * 0.15, hx + r * 0.8, hy + r * 0.2, dark)
            c.line([(hx + r * 0.3, hy), (hx - r * 0.3, hy - r * 0.05)], dark, 0.006)
        else:
            c.rect(-r * 0.7, hy - r * 0.15, -r * 0.08, hy + r * 0.25, dark)
            c.rect(r * 0.08, hy - r * 0.15, r * 0.7, hy + r * 0.25, dark)
            c.line([(-r * 0.7, hy), (r * 0.7, hy)], dark, 0.006)
    if p.hat:
        c.chord(hx - r * 0.95, hy - r * 1.3, hx + r * 0.95, hy + r * 0.2, 180, 360, p.hat_rgb)
        brim = (hx - r * 0.9, hx + r * 1.5) if b.side else (hx - r * 1.25, hx + r * 1.25)
        c.rect(brim[0], hy - r * 0.6, brim[1], hy - r * 0.4, _shade(p.hat_rgb, 0.8))


def _draw_person(c: _Canvas, p: Identity, shot: Shot) -> None:
    # Back to front: what the body hides first, what covers the body last.
    seen = visible_features(p, shot.view, shot.feet_visible)
    b = _Body.of(p, shot.view)
    if seen["backpack"] and b.side:
        # Seen from the side, a backpack sticks out behind the torso.
        c.rect(-b.torso_half - 0.07, b.shoulder_y + 0.02, -b.torso_half + 0.02,
               b.shoulder_y + 0.25, p.bag_rgb)
    if p.hair_long:
        r = b.head_r
        x0, x1 = (-r * 1.05, r * 0.3) if b.side else (-r * 1.1, r * 1.1)
        c.rect(x0, b.head_y, x1, b.shoulder_y + 0.09, p.hair_rgb)
    _draw_legs(c, p, b, shot, seen["shoes"])
    if p.lower_type == "skirt":
        _draw_skirt(c, p, b)
    _draw_upper(c, p, b, shot.view, seen)
    wrists = _draw_arms(c, p, b, shot)
    _draw_carried(c, p, b, seen, wrists[-1])
    _draw_head(c, p, b, shot.view, seen)


def render(identity: Identity, camera: Camera, shot: Shot, rng: np.random.Generator,
           height: int = 256, width: int = 128) -> np.ndarray:
    """Renders one image of ``identity`` taken by ``camera`` as described by ``shot``.

    Args:
        identity: The person.
        camera: The camera (background, colour cast).
        shot: Per-image variation (view, pose, scale, occlusion, photometric jitter).
        rng: NumPy random generator for the background texture and pixel noise.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``uint8`` array of shape (height, width, 3).
    """
    tint = np.asarray(camera.white_balance, np.float32) * np.float32(shot.gain)
    img = _background(camera, rng, height, width, tint)
    draw = ImageDraw.Draw(img)
    ph = height * shot.scale * identity.height
    top = (height - ph) * 0.55 + shot.dy * height
    top = float(np.clip(top, 0.02 * height, height - ph))
    cx = width * (0.5 + shot.dx)
    canvas = _Canvas(draw, cx, top, ph, tuple(float(t) for t in tint))
    _draw_person(canvas, identity, shot)
    if shot.occluded:
        # A bench / car / railing in front: hides the feet and the lower legs across the body.
        half = 0.28 + 0.1 * abs(shot.arm_swing)
        canvas.rect(-half, shot.occluder_top, half, 1.2, shot.occluder_rgb)
        canvas.rect(-half, shot.occluder_top, half, shot.occluder_top + 0.02,
                    _shade(shot.occluder_rgb, 0.6))
    out = _photometric(img, shot, rng)
    return np.ascontiguousarray(out[:, ::-1]) if shot.facing_left else out


#: Noise standard deviations with a precomputed noise field each (0-255 scale).
NOISE_LEVELS: tuple[float, ...] = (2.0, 4.0, 6.0, 9.0)
_NOISE_BANKS: dict[tuple[int, int, int], np.ndarray] = {}


def _noise_bank(height: int, width: int, level: int) -> np.ndarray:
    # One fixed int16 noise field per size and level; each image reads a random window of
    # it, much cheaper than fresh float noise and just as varied for training.
    key = (height, width, level)
    if key not in _NOISE_BANKS:
        gen = np.random.default_rng(12345 + level)
        field = gen.standard_normal((2 * height, 2 * width, 3)) * NOISE_LEVELS[level]
        _NOISE_BANKS[key] = np.round(field).astype(np.int16)
    return _NOISE_BANKS[key]


def _photometric(img: Image.Image, shot: Shot, rng: np.random.Generator) -> np.ndarray:
    height, width = img.height, img.width
    if shot.blur > 0.5 and height >= 96:
        # A soft, low-resolution camera: half resolution, then bilinear back up.
        img = img.reduce(2).resize((width, height), Image.BILINEAR)
    level = int(np.argmin([abs(shot.noise - v) for v in NOISE_LEVELS]))
    bank = _noise_bank(height, width, level)
    oy, ox = int(rng.integers(height)), int(rng.integers(width))
    pixels = np.asarray(img).astype(np.int16)
    pixels += bank[oy:oy + height, ox:ox + width]
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)
