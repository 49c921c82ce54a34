"""Procedural camera frames per SKU with labelled surface defects and pixel-exact masks.

Why: an image detector can only be trusted with numbers, and numbers need ground truth. Real
defect images are scarce and cannot ship with the repo, so this module draws parts and
textures the way an inspection camera sees them, with the nuisance variation a real line has
and that a detector must *not* flag:

- lighting: global gain, a soft gradient from a random direction, a slight colour cast;
- placement: a few pixels of shift and a degree or two of rotation from part to part;
- material: brushed-metal streaks, weave irregularities, wood grain that differ per part;
- sensor noise.

Defects are what a quality engineer would mark, each with a mask of the pixels it changes:

- ``scratch``: a thin bright (or dark) line a few percent to a third of the frame long;
- ``spot``: a dark, slightly irregular blob (contamination, a drop of oil, a burn);
- ``dent``: a shallow bump seen only through its shading (bright on the lit side, dark on the other);
- ``missing_feature``: a hole that was not drilled, or a thread missing from a weave;
- ``colour_patch``: a discoloured area (rust, heat tint, a stain) with unchanged brightness texture.

SKUs: four are predefined (``bracket-a`` plate with holes, ``washer-b`` ring with holes,
``fabric-c`` woven textile, ``grain-d`` a grayscale wood-grain surface); any other SKU name
gets a deterministic variant derived from a hash of its name, so a simulated plant can have as
many SKUs as it likes. Every frame is a pure function of ``(sku, seed, split, defect, index)``,
so datasets do not depend on generation order.

>>> frame = next(stream_frames("bracket-a", size=64, seed=0, defect_rate=1.0, defects=("spot",)))
>>> frame.image.shape, frame.image.dtype, frame.label, bool(frame.mask.any())
((64, 64, 3), dtype('uint8'), 'spot', True)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from linewatch.errors import ConfigError

DEFECT_TYPES: tuple[str, ...] = ("scratch", "spot", "dent", "missing_feature", "colour_patch")
KINDS = ("plate", "washer", "fabric", "grain")
#: Frames smaller than this cannot show a part with holes and a defect.
MIN_SIZE = 32
#: Largest placement shift, as a fraction of the frame (a part on a conveyor with guides).
MAX_SHIFT = 0.025
#: Largest rotation in degrees.
MAX_ROTATION_DEG = 2.5
#: Sensor noise standard deviation on the 0..1 scale (about 2.5 grey levels).
NOISE_SIGMA = 0.01
#: A defect's mask marks pixels whose value it changes by at least this much (0..1 scale),
#: a little generous, as human annotators are.
MASK_MIN_CHANGE = 0.02
#: A dent's mask is the disc where its bump is above this share of its height (about 1.5 sigma).
DENT_MASK_LEVEL = 0.3


@dataclass(frozen=True)
class SkuSpec:
    """What one SKU looks like: its kind of part or texture, colours and pattern scale."""

    sku: str
    kind: str
    colour: tuple[float, float, float]
    background: tuple[float, float, float]
    pattern_freq: float
    grayscale: bool = False


KNOWN_SKUS: dict[str, SkuSpec] = {
    "bracket-a": SkuSpec("bracket-a", "plate", (0.72, 0.74, 0.78), (0.16, 0.17, 0.18), 6.0),
    "washer-b": SkuSpec("washer-b", "washer", (0.80, 0.68, 0.42), (0.22, 0.24, 0.28), 8.0),
    "fabric-c": SkuSpec("fabric-c", "fabric", (0.28, 0.40, 0.62), (0.0, 0.0, 0.0), 16.0),
    "grain-d": SkuSpec("grain-d", "grain", (0.62, 0.62, 0.62), (0.0, 0.0, 0.0), 9.0, grayscale=True),
}


def _name_code(text: str) -> int:
    """A stable 32-bit code for a string (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def sku_spec(sku: str) -> SkuSpec:
    """The spec of a known SKU, or a deterministic variant derived from the SKU name."""
    if sku in KNOWN_SKUS:
        return KNOWN_SKUS[sku]
    if not sku:
        raise ConfigError("sku must be a non-empty name, e.g. 'bracket-a'")
    rng = np.random.default_rng(_name_code(sku))
    kind = KINDS[int(rng.integers(len(KINDS)))]
    base = KNOWN_SKUS[
        {"plate": "bracket-a", "washer": "washer-b", "fabric": "fabric-c", "grain": "grain-d"}[kind]
    ]
    colour = tuple(float(c) for c in np.clip(np.asarray(base.colour) + rng.uniform(-0.12, 0.12, 3), 0.1, 0.9))
    freq = float(base.pattern_freq * rng.uniform(0.8, 1.25))
    return SkuSpec(sku, kind, colour, base.background, freq, grayscale=base.grayscale)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Frame:
    """One simulated camera frame with its ground truth."""

    sku: str
    index: int
    image: np.ndarray  # (H, W, 3) uint8, or (H, W) for grayscale SKUs
    mask: np.ndarray  # (H, W) bool, True where the defect is
    label: str  # "good" or one of DEFECT_TYPES


@dataclass
class _Scene:
    """Intermediate state of one frame while it is drawn (float32, 0..1)."""

    size: int
    u: np.ndarray  # part coordinates (shifted, rotated), frame widths from the centre
    v: np.ndarray
    albedo: np.ndarray  # (S, S, 3) surface colour before lighting
    part: np.ndarray  # (S, S) 1 on the part's surface, 0 on background / through holes
    holes: list[tuple[float, float, float]]  # (u, v, radius) of features that may go missing
    shading: np.ndarray  # (S, S) multiplicative shading (dents add to it)


def _coverage(signed_distance: np.ndarray, size: int) -> np.ndarray:
    """Antialiased inside-ness from a signed distance in frame widths (negative = inside)."""
    return np.clip(0.5 - signed_distance * size, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Unit-variance Gaussian-filtered noise (material texture, streaks)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def _hole_positions(kind: str, angle: float) -> list[tuple[float, float, float]]:
    if kind == "plate":
        return [(sx * 0.24, sy * 0.14, 0.045) for sx in (-1, 1) for sy in (-1, 1)] + [(0.0, 0.0, 0.06)]
    # washer: six bolt holes on the ring, turning with the part
    return [
        (0.27 * math.cos(angle + k * math.pi / 3), 0.27 * math.sin(angle + k * math.pi / 3), 0.03)
        for k in range(6)
    ]


def _draw_base(spec: SkuSpec, size: int, rng: np.random.Generator) -> _Scene:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (xx + 0.5) / size - 0.5 - rng.uniform(-MAX_SHIFT, MAX_SHIFT)
    y = (yy + 0.5) / size - 0.5 - rng.uniform(-MAX_SHIFT, MAX_SHIFT)
    theta = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    u = math.cos(theta) * x + math.sin(theta) * y
    v = -math.sin(theta) * x + math.cos(theta) * y
    colour = np.asarray(spec.colour, dtype=np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    shading = np.ones((size, size), dtype=np.float32)
    holes: list[tuple[float, float, float]] = []

    if spec.kind in ("plate", "washer"):
        if spec.kind == "plate":
            a, b, r = 0.36, 0.26, 0.05
            qx, qy = np.abs(u) - (a - r), np.abs(v) - (b - r)
            outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
            sd = outside + np.minimum(np.maximum(qx, qy), 0) - r
            body = _coverage(sd, size)
        else:
            rad = np.hypot(u, v)
            body = _coverage(np.maximum(rad - 0.38, 0.16 - rad), size)
        holes = _hole_positions(spec.kind, theta)
        cut = np.zeros_like(body)
        for hu, hv, hr in holes:
            cut = np.maximum(cut, _coverage(np.hypot(u - hu, v - hv) - hr, size))
        part = body * (1.0 - cut)
        # brushed metal: streaks along the part's u axis, different on every part
        streaks = _smooth_noise(rng, (size, size), (0.6, size / 12))
        grain = 1.0 + 0.035 * streaks + 0.01 * rng.standard_normal((size, size)).astype(np.float32)
        surface = colour[None, None, :] * grain[..., None]
        bg_tex = 1.0 + 0.08 * _smooth_noise(rng, (size, size), (size / 40, size / 40))
        background = np.asarray(spec.background, dtype=np.float32)[None, None, :] * bg_tex[..., None]
        albedo = part[..., None] * surface + (1.0 - part[..., None]) * background
    elif spec.kind == "fabric":
        f = spec.pattern_freq
        fu, fv = f * (u + 0.5), f * (v + 0.5)
        over = (np.floor(fu) + np.floor(fv)) % 2
        warp = 0.55 + 0.45 * np.abs(np.sin(math.pi * fu))
        weft = 0.55 + 0.45 * np.abs(np.sin(math.pi * fv))
        weave = np.where(over > 0, warp, weft)
        thread = 1.0 + 0.05 * _smooth_noise(rng, (size, size), (size / 64, size / 64))
        value = weave * thread
        albedo = colour[None, None, :] * value[..., None]
        part = np.ones((size, size), dtype=np.float32)
    else:  # grain
        f = spec.pattern_freq
        warp = 0.04 * _smooth_noise(rng, (size, size), (size / 10, size / 10))
        rings = np.sin(2 * math.pi * f * (v + warp) + rng.uniform(0, 2 * math.pi))
        fine = 0.03 * _smooth_noise(rng, (size, size), (0.7, size / 16))
        value = 0.85 + 0.12 * rings + fine
        albedo = colour[None, None, :] * value[..., None]
        part = np.ones((size, size), dtype=np.float32)
    return _Scene(size, u, v, albedo.astype(np.float32), part.astype(np.float32), holes, shading)


def _pick_site(scene: _Scene, rng: np.random.Generator, margin: float) -> tuple[int, int]:
    """A pixel well inside the part (defects live on the part, not on the conveyor)."""
    s = scene.size
    inside = ndimage.binary_erosion(scene.part > 0.99, iterations=max(1, int(margin * s)))
    border = max(1, int(margin * s))
    inside[:border, :] = inside[-border:, :] = False
    inside[:, :border] = inside[:, -border:] = False
    ys, xs = np.nonzero(inside)
    if ys.size == 0:  # tiny frames: fall back to any part pixel
        ys, xs = np.nonzero(scene.part > 0.5)
    k = int(rng.integers(ys.size))
    return int(ys[k]), int(xs[k])


def _add_defect(spec: SkuSpec, scene: _Scene, defect: str, rng: np.random.Generator) -> np.ndarray:
    """Change the scene in place; return the defect's soft footprint (S, S) in 0..1."""
    s = scene.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    if defect == "scratch":
        cy, cx = _pick_site(scene, rng, 0.08)
        length = rng.uniform(0.12, 0.3) * s
        ang = rng.uniform(0, math.pi)
        dy, dx = math.sin(ang), math.cos(ang)
        t = np.clip((yy - cy) * dy + (xx - cx) * dx, -length / 2, length / 2)
        dist = np.hypot(yy - (cy + t * dy), xx - (cx + t * dx))
        width = max(1.0, s / 160) * rng.uniform(0.8, 1.4)
        foot = np.clip(width - dist + 0.5, 0.0, 1.0) * scene.part
        sign = 1.0 if rng.random() < 0.7 else -1.0  # most scratches catch the light
        scene.albedo += (sign * rng.uniform(0.25, 0.4) * foot)[..., None]
        return foot
    if defect == "spot":
        cy, cx = _pick_site(scene, rng, 0.06)
        radius = rng.uniform(0.025, 0.05) * s
        wobble = 1.0 + 0.25 * _smooth_noise(rng, (s, s), (s / 30, s / 30))
        foot = (
            np.clip((radius * wobble - np.hypot(yy - cy, xx - cx)) / max(1.0, radius * 0.3), 0, 1)
            * scene.part
        )
        scene.albedo *= (1.0 - rng.uniform(0.45, 0.7) * foot)[..., None]
        return foot
    if defect == "dent":
        cy, cx = _pick_site(scene, rng, 0.1)
        sigma = rng.uniform(0.025, 0.05) * s
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        gy, gx = np.gradient(bump)
        light = rng.uniform(0, 2 * math.pi)
        # |grad| of a unit Gaussian peaks near 0.6 / sigma, so this gives a 10-20 % shading swing
        shade = (gy * math.sin(light) + gx * math.cos(light)) * sigma * rng.uniform(0.18, 0.32)
        scene.shading += shade * scene.part
        # annotators mark the whole dent, not just the lit and shadowed lobes of its shading
        return (bump > DENT_MASK_LEVEL).astype(np.float32) * scene.part
    if defect == "missing_feature":
        if scene.holes:
            hu, hv, hr = scene.holes[int(rng.integers(len(scene.holes)))]
            foot = _coverage(np.hypot(scene.u - hu, scene.v - hv) - hr, s)
            surface = scene.albedo[scene.part > 0.99].mean(axis=0)
            scene.albedo = scene.albedo * (1 - foot[..., None]) + surface[None, None, :] * foot[..., None]
            scene.part = np.maximum(scene.part, foot)
            return foot
        # textures: a stretch of the weave / grain is missing, leaving a flat band
        cy, cx = _pick_site(scene, rng, 0.1)
        half_len = rng.uniform(0.08, 0.16) * s
        half_w = max(1.5, s / 80)
        horizontal = rng.random() < 0.5
        along, across = (xx - cx, yy - cy) if horizontal else (yy - cy, xx - cx)
        foot = np.clip(half_w - np.abs(across) + 0.5, 0, 1) * np.clip(half_len - np.abs(along) + 0.5, 0, 1)
        flat = scene.albedo.reshape(-1, 3).mean(axis=0) * 0.75
        scene.albedo = scene.albedo * (1 - foot[..., None]) + flat[None, None, :] * foot[..., None]
        return foot
    if defect == "colour_patch":
        cy, cx = _pick_site(scene, rng, 0.08)
        ry, rx = rng.uniform(0.04, 0.08, 2) * s
        ang = rng.uniform(0, math.pi)
        py = (yy - cy) * math.cos(ang) - (xx - cx) * math.sin(ang)
        px = (yy - cy) * math.sin(ang) + (xx - cx) * math.cos(ang)
        ell = np.sqrt((py / ry) ** 2 + (px / rx) ** 2)
        foot = np.clip((1.0 - ell) * 4.0, 0, 1) * scene.part
        if spec.grayscale:  # a monochrome camera sees a stain as a brightness change only
            tint = np.full(
                3, rng.choice([rng.uniform(0.72, 0.85), rng.uniform(1.15, 1.28)]), dtype=np.float32
            )
        elif rng.random() < 0.6:  # rust / heat tint
            tint = np.array([1.25, 0.8, 0.6], dtype=np.float32)
        else:  # a bluish stain
            tint = np.array([0.75, 0.9, 1.3], dtype=np.float32)
        lum = scene.albedo.mean(axis=-1, keepdims=True)
        tinted = np.clip(lum * tint[None, None, :], 0, 1)
        scene.albedo = scene.albedo * (1 - foot[..., None]) + tinted * foot[..., None]
        return foot
    raise ConfigError(f"unknown defect {defect!r}; choose from {', '.join(DEFECT_TYPES)}")


def _finish(spec: SkuSpec, scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Lighting, colour cast, sensor noise and quantisation."""
    s = scene.size
    gain = rng.uniform(0.92, 1.08)
    d = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.1) * (math.cos(d) * scene.u + math.sin(d) * scene.v) * 2
    cast = 1.0 + rng.uniform(-0.02, 0.02, 3).astype(np.float32)
    img = scene.albedo * (gain * gradient * scene.shading)[..., None] * cast[None, None, :]
    img = img + rng.normal(0.0, NOISE_SIGMA, size=(s, s, 3)).astype(np.float32)
    if spec.grayscale:
        img = img.mean(axis=-1)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def render_frame(
    sku: str, *, defect: str | None, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame of ``sku``; return ``(image, mask)``. ``defect=None`` draws a good part.

    Two calls with identically seeded ``rng`` draw the same part under the same light; only the
    defect (if any) differs.
    """
    if size < MIN_SIZE:
        raise ConfigError(f"size={size} is too small to draw a part; use at least {MIN_SIZE}")
    spec = sku_spec(sku)
    scene = _draw_base(spec, size, rng)
    # The defect draws from its own stream, so the same rng gives the same part, lighting and
    # noise with or without a defect: a counterfactual pair that differs only where the mask is.
    defect_rng = np.random.default_rng(rng.integers(2**63))
    if defect is None:
        return _finish(spec, scene, rng), np.zeros((size, size), dtype=bool)
    before = scene.albedo * scene.shading[..., None]
    foot = _add_defect(spec, scene, defect, defect_rng)
    delta = scene.albedo * scene.shading[..., None] - before
    # what the camera can see: per-channel change in colour, the mean change in grayscale
    changed = np.abs(delta.mean(axis=-1)) if spec.grayscale else np.abs(delta).max(axis=-1)
    visible = foot > 0.5 if defect == "dent" else (changed >= MASK_MIN_CHANGE) & (foot > 0.05)
    mask = ndimage.binary_dilation(visible, iterations=1)
    return _finish(spec, scene, rng), mask


def _frame_rng(seed: int, sku: str, split: str, label: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _name_code(sku), _name_code(split), _name_code(label), index])


def _check_defects(defects: Sequence[str]) -> tuple[str, ...]:
    unknown = [d for d in defects if d not in DEFECT_TYPES]
    if unknown:
        raise ConfigError(f"unknown defect type(s) {unknown}; choose from {', '.join(DEFECT_TYPES)}")
    return tuple(defects)


def stream_frames(
    sku: str,
    *,
    size: int = 256,
    seed: int = 0,
    defect_rate: float = 0.05,
    defects: Sequence[str] = DEFECT_TYPES,
    limit: int | None = None,
) -> Iterator[Frame]:
    """Yield frames of ``sku`` as a camera on the line would, each with its label and mask.

    ``defect_rate`` is the share of defective parts; the defect type is drawn uniformly from
    ``defects``. Endless unless ``limit`` is given; frame ``i`` depends only on ``(sku, seed, i)``.
    """
    kinds = _check_defects(defects)
    if not 0.0 <= defect_rate <= 1.0:
        raise ConfigError(f"defect_rate={defect_rate!r} must be in [0, 1]")
    if defect_rate > 0 and not kinds:
        raise ConfigError("defect_rate > 0 needs at least one defect type")
    i = 0
    while limit is None or i < limit:
        rng = _frame_rng(seed, sku, "stream", "", i)
        defect = kinds[int(rng.integers(len(kinds)))] if rng.random() < defect_rate else None
        image, mask = render_frame(sku, defect=defect, size=size, rng=rng)
        yield Frame(sku=sku, index=i, image=image, mask=mask, label=defect or "good")
        i += 1


def render_batch(
    sku: str, *, n: int, defect: str | None = None, size: int = 256, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames stacked ``(n, S, S[, 3])`` with masks ``(n, S, S)``, in memory.

    Frame ``i`` is exactly what :func:`write_dataset` writes as ``<split>/<defect or good>/i.png``
    for the same ``sku``, ``size`` and ``seed``, so tests and benchmarks can skip the disk.
    """
    if n < 0:
        raise ConfigError(f"n={n} must be non-negative")
    if defect is not None:
        _check_defects([defect])
    label = defect or "good"
    spec = sku_spec(sku)
    shape = (n, size, size) if spec.grayscale else (n, size, size, 3)
    images = np.empty(shape, dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        images[i], masks[i] = render_frame(
            sku, defect=defect, size=size, rng=_frame_rng(seed, sku, split, label, i)
        )
    return images, masks


def _save_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, optimize=False, compress_level=1)


def write_dataset(
    root: str | Path,
    *,
    sku: str = "bracket-a",
    n_train: int = 200,
    n_test_good: int = 40,
    n_test_per_defect: int = 20,
    size: int = 256,
    seed: int = 0,
    defects: Sequence[str] = DEFECT_TYPES,
) -> dict[str, Any]:
    """Write a dataset in the MVTec AD layout and return a summary (also saved as ``dataset.json``).

    Layout: ``train/good/*.png``, ``test/good/*.png``, ``test/<defect>/*.png`` and
    ``ground_truth/<defect>/<name>_mask.png`` (0 / 255), so the same folder backtest runs on the
    simulator's data, on MVTec AD itself, and on a plant's own images sorted the same way.
    """
    kinds = _check_defects(defects)
    if min(n_train, n_test_good, n_test_per_defect) < 0:
        raise ConfigError("image counts must be non-negative")
    root = Path(root)
    plan: list[tuple[str, str, int]] = [("train", "good", n_train), ("test", "good", n_test_good)]
    plan += [("test", d, n_test_per_defect) for d in kinds]
    counts: dict[str, int] = {}
    for split, label, n in plan:
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        if label != "good" and n:
            (root / "ground_truth" / label).mkdir(parents=True, exist_ok=True)
        images, masks = render_batch(
            sku, n=n, defect=None if label == "good" else label, size=size, seed=seed, split=split
        )
        for i in range(n):
            _save_png(folder / f"{i:03d}.png", images[i])
            if label != "good":
                _save_png(
                    root / "ground_truth" / label / f"{i:03d}_mask.png", masks[i].astype(np.uint8) * 255
                )
        counts[f"{split}/{label}"] = n
    summary = {"sku": sku, "spec": asdict(sku_spec(sku)), "size": size, "seed": seed, "counts": counts}
    (root / "dataset.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
