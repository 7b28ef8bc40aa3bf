"""Degradations as data: how an x4 LR input is made from HR, from clean bicubic to real video codecs.

Two uses, one vocabulary:

- **Bench conditions** (``vsr bench --degradation``): a fixed, readable chain such as ``bi``, ``bd``,
  ``h264:crf=28``, ``h265:crf=30,preset=fast``, ``jpeg:q=40`` or ``bd+h264:crf=23``. The LR base (the
  shipped BI/BD files or their computation) goes through each codec step deterministically: the same
  bytes on every run (single-threaded encoders). For video sets the codec runs over the whole clip,
  like a real file, so inter-frame coding happens.
- **Training degradations** (``vsr train --degradation``): a typed config of probabilities and ranges
  (named presets plus ``key=value`` overrides). Per group of crops it draws blur (isotropic/anisotropic
  Gaussian or a small sinc), a downscale (MATLAB bicubic, bilinear or area), noise (Gaussian, Poisson),
  then JPEG or a real video codec (libx264/libx265 with random CRF, preset and GOP) over a short
  sequence of the crop moving by whole HR pixels (sub-pixel LR motion), optionally a second pass.
  Every draw comes from the step's seed, so a resumed run sees the same degradations.

All images here are uint8 RGB; torch tensors are (..., 3, H, W), numpy arrays (H, W, 3).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vsr.errors import VsrError

SCALE = 4
CODECS = {"h264": ("libx264", "h264"), "h265": ("libx265", "hevc")}
CODEC_DEFAULTS = {"h264": {"preset": "medium"}, "h265": {"preset": "medium"}}
PRESETS_X26X = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")


# ---------------------------------------------------------------------------------------------------
# codec and JPEG round trips (the real thing, in memory)

@dataclass(frozen=True)
class CodecStep:
    """One lossy video encode + decode: libx264 or libx265 in yuv420p at a CRF."""

    codec: str  # h264 | h265
    crf: int
    preset: str = "medium"
    keyint: int = 0  # GOP length; 0 = the encoder's default (250)
    bframes: int = -1  # -1 = the preset's default

    @property
    def label(self) -> str:
        extra = "" if self.preset == CODEC_DEFAULTS[self.codec]["preset"] else f",preset={self.preset}"
        extra += f",gop={self.keyint}" if self.keyint else ""
        extra += f",bframes={self.bframes}" if self.bframes >= 0 else ""
        return f"{self.codec}:crf={self.crf}{extra}"

    def describe(self) -> str:
        enc = CODECS[self.codec][0]
        gop = f"keyint {self.keyint}" if self.keyint else "default GOP"
        bf = f", bframes {self.bframes}" if self.bframes >= 0 else ""
        return f"{enc} crf {self.crf}, preset {self.preset}, yuv420p, {gop}{bf}, 1 thread, 25 fps"

    def apply(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return codec_roundtrip(frames, self)


@dataclass(frozen=True)
class JpegStep:
    """JPEG at a quality (OpenCV/libjpeg, 4:2:0 chroma), per frame."""

    quality: int

    @property
    def label(self) -> str:
        return f"jpeg:q={self.quality}"

    def describe(self) -> str:
        return f"JPEG quality {self.quality} (OpenCV libjpeg, 4:2:0), per frame"

    def apply(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return [jpeg_roundtrip(f, self.quality) for f in frames]


def _pad_to(img: np.ndarray, multiple: int, minimum: int = 0) -> np.ndarray:
    """Edge-pad at the bottom/right to a multiple of ``multiple`` and at least ``minimum`` (4:2:0 needs even
    sizes; libx265 in PyAV 18 was seen to corrupt its heap on frames under 64x64 or not multiples of 8, and
    to give different bytes from run to run under 128x128)."""
    h, w = img.shape[:2]
    ph, pw = max(-h % multiple, minimum - h), max(-w % multiple, minimum - w)
    ph, pw = ph + -(h + ph) % multiple, pw + -(w + pw) % multiple
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else img


def codec_encode(frames: list[np.ndarray], step: CodecStep) -> list[bytes]:
    """Encode RGB frames as one stream with ``step``'s codec (yuv420p, 25 fps); the packets' bytes, in order.

    Sizes are edge-padded (see :func:`_pad_to`) and cropped back on decode. Single-threaded (x265: one
    pool thread, one frame thread), so the bytes are the same on every run.
    """
    import av

    multiple, minimum = (8, 128) if step.codec == "h265" else (2, 0)
    padded = [_pad_to(f, multiple, minimum) for f in frames]
    enc = av.CodecContext.create(CODECS[step.codec][0], "w")
    enc.height, enc.width = padded[0].shape[:2]
    enc.pix_fmt = "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25)
    params = ["log-level=none"]
    if step.keyint:
        params += [f"keyint={step.keyint}", f"min-keyint={min(step.keyint, 25)}"]
    if step.bframes >= 0:
        params.append(f"bframes={step.bframes}")
    opts = {"crf": str(step.crf), "preset": step.preset, "threads": "1"}
    if step.codec == "h264":
        opts["x264-params"] = ":".join(params)
    else:
        opts["x265-params"] = ":".join(params + ["pools=1", "frame-threads=1"])
    enc.options = opts
    packets = []
    for i, f in enumerate(padded):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        packets += [bytes(p) for p in enc.encode(vf)]
    packets += [bytes(p) for p in enc.encode(None)]
    return packets


def codec_decode(packets: list[bytes], step: CodecStep, size: tuple[int, int]) -> list[np.ndarray]:
    """Decode what :func:`codec_encode` made back to RGB frames of ``size`` (H, W), in display order."""
    import av

    dec = av.CodecContext.create(CODECS[step.codec][1], "r")
    out = []
    for data in packets:
        out += dec.decode(av.Packet(data))
    out += dec.decode(None)
    h, w = size
    return [o.to_ndarray(format="rgb24")[:h, :w] for o in out]


def codec_roundtrip(frames: list[np.ndarray], step: CodecStep) -> list[np.ndarray]:
    """Encode RGB frames as one stream with ``step`` and decode them back; the frame count is kept (or an error)."""
    if not frames:
        return []
    out = codec_decode(codec_encode(frames, step), step, frames[0].shape[:2])
    if len(out) != len(frames):
        raise VsrError(f"{step.label}: {len(frames)} frames encoded but {len(out)} decoded")
    return out


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-compress an RGB uint8 image at ``quality`` and decode it (OpenCV, deterministic)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise VsrError(f"jpeg:q={quality}: encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------------
# bench conditions

@dataclass(frozen=True)
class Condition:
    """A fixed bench degradation: an LR base (``bi`` or ``bd``) then lossy steps, in order."""

    base: str = "bi"
    steps: tuple[CodecStep | JpegStep, ...] = ()

    @property
    def label(self) -> str:
        parts = ([] if self.base == "bi" and self.steps else [self.base]) + [s.label for s in self.steps]
        return "+".join(parts)

    def describe(self) -> str:
        base = "MATLAB bicubic x1/4" if self.base == "bi" else "Gaussian sigma 1.6 + x4 subsampling"
        return "; then ".join([base, *[s.describe() for s in self.steps]])

    def apply(self, lr_frames: list[np.ndarray]) -> list[np.ndarray]:
        """The lossy steps over a clip's (or one image's) LR frames."""
        for s in self.steps:
            lr_frames = s.apply(lr_frames)
        return lr_frames


CONDITION_FORMS = ("bi", "bd", "h264:crf=N[,preset=P,gop=G,bframes=B]", "h265:crf=N[,...]", "jpeg:q=N",
                   "BASE+STEP (e.g. bd+h264:crf=23)")


def _bad_condition(text: str, why: str) -> VsrError:
    return VsrError(f"--degradation {text!r}: {why}; valid forms: {', '.join(CONDITION_FORMS)}")


def parse_condition(text: str) -> Condition:
    """``"h264:crf=28"`` -> Condition; raises a VsrError listing the valid forms for anything else."""
    parts = [p.strip() for p in text.strip().split("+")]
    if not parts or any(not p for p in parts):
        raise _bad_condition(text, "empty part")
    base = "bi"
    if parts[0] in ("bi", "bd"):
        base, parts = parts[0], parts[1:]
    steps: list[CodecStep | JpegStep] = []
    for part in parts:
        kind, _, args = part.partition(":")
        kv: dict[str, str] = {}
        for item in filter(None, args.split(",")):
            k, eq, v = item.partition("=")
            if not eq or not v:
                raise _bad_condition(text, f"{item!r} is not key=value")
            kv[k.strip()] = v.strip()
        try:
            if kind == "jpeg":
                q = int(kv.pop("q", "x"))
                if not 1 <= q <= 100:
                    raise _bad_condition(text, "jpeg quality q must be 1-100")
                steps.append(JpegStep(q))
            elif kind in CODECS:
                crf = int(kv.pop("crf", "x"))
                if not 0 <= crf <= 51:
                    raise _bad_condition(text, "crf must be 0-51")
                preset = kv.pop("preset", CODEC_DEFAULTS[kind]["preset"])
                if preset not in PRESETS_X26X + ("slower", "veryslow", "placebo"):
                    raise _bad_condition(text, f"unknown preset {preset!r}")
                gop = int(kv.pop("gop", "0"))
                bframes = int(kv.pop("bframes", "-1"))
                if gop < 0 or bframes < -1 or bframes > 16:
                    raise _bad_condition(text, "gop must be >= 0 and bframes 0-16")
                steps.append(CodecStep(kind, crf, preset, gop, bframes))
            else:
                raise _bad_condition(text, f"unknown step {kind!r}")
        except ValueError:
            raise _bad_condition(text, f"{part!r} needs integer values (q=N for jpeg, crf=N for h264/h265)") from None
        if kv:
            raise _bad_condition(text, f"unknown option(s) {', '.join(sorted(kv))} for {kind}")
    return Condition(base, tuple(steps))


# ---------------------------------------------------------------------------------------------------
# training degradations

@dataclass
class DegradationConfig:
    """Probabilities and ranges of the training degradation; sigmas in HR pixels, noise in 0-255 levels."""

    name: str = "bi"
    clean_prob: float = 1.0  # share of groups that get plain MATLAB bicubic (the bench's BI) and nothing else
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    aniso_prob: float = 0.3  # of blurred groups: anisotropic Gaussian
    sinc_prob: float = 0.1  # of blurred groups: a sinc (ringing) kernel instead
    blur_size: int = 13  # kernel size (odd)
    resize_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)  # MATLAB bicubic, bilinear, area
    noise_prob: float = 0.0
    gauss_sigma: tuple[float, float] = (1.0, 10.0)
    poisson_prob: float = 0.3  # of noisy groups: Poisson (shot) noise instead of Gaussian
    poisson_scale: tuple[float, float] = (0.05, 1.0)
    grey_noise_prob: float = 0.4
    jpeg_prob: float = 0.0
    jpeg_q: tuple[int, int] = (35, 95)
    codec_prob: float = 0.0  # of compressed groups with a video codec (the rest: JPEG if jpeg_prob says so)
    h265_share: float = 0.3  # of video-coded groups: libx265 (else libx264)
    crf_h264: tuple[int, int] = (18, 35)
    crf_h265: tuple[int, int] = (20, 37)
    presets: tuple[str, ...] = ("veryfast", "faster", "fast", "medium")
    gop: tuple[int, int] = (1, 12)  # keyint drawn in this range; 1 = intra only
    frames: int = 4  # sequence length for video codecs; the last frame is the training target
    motion: int = 3  # max HR pixels of motion per frame (whole HR pixels = sub-pixel LR motion)
    second_pass_prob: float = 0.0  # a second blur/noise/compression pass, as Real-ESRGAN does
    groups: int = 4  # crops of a batch share one draw per group (codecs run once per group, tiled)
    context: int = 1  # single frames: the chain runs on regions context x the crop's side, the crop is cut from
    #                   inside afterwards (codecs see bigger pictures than the training crop)

    @property
    def is_clean(self) -> bool:
        return self.name in ("bi", "bd")

    def region(self, crop: int) -> int:
        """The side of the HR region a crop of side ``crop`` is degraded from: the crop, or ``context`` crops,
        plus room for the motion of a video sequence."""
        if self.is_clean:
            return crop
        return crop * self.context + (self.motion * (self.frames - 1) if self.codec_prob else 0)


DEGRADATION_PRESETS: dict[str, DegradationConfig] = {
    "bi": DegradationConfig(name="bi"),
    "bd": DegradationConfig(name="bd"),
    # web/phone video: mostly a video codec after a mild camera blur and noise; a quarter stays clean
    "real": DegradationConfig(name="real", clean_prob=0.2, blur_prob=0.35, noise_prob=0.3, gauss_sigma=(1.0, 8.0),
                              jpeg_prob=0.25, codec_prob=0.75, second_pass_prob=0.1),
    # Real-ESRGAN-like: heavier blur/noise and two passes
    "real-heavy": DegradationConfig(name="real-heavy", clean_prob=0.1, blur_prob=0.7, blur_sigma=(0.2, 3.0),
                                    noise_prob=0.6, gauss_sigma=(1.0, 20.0), jpeg_prob=0.5, codec_prob=0.5,
                                    crf_h264=(20, 40), crf_h265=(22, 42), second_pass_prob=0.5),
}


def _coerce(value: str, like: Any, key: str) -> Any:
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(like, tuple):
        items = [v for v in value.replace("/", ":").split(":") if v]
        return tuple(_coerce(v, like[0], key) for v in items) if like else tuple(items)
    return type(like)(value)


def parse_degradation(text: str) -> DegradationConfig:
    """``"real"`` or ``"real:codec_prob=0.9,crf_h264=20:30"`` -> DegradationConfig (ranges as ``lo:hi``)."""
    name, _, overrides = text.strip().partition(":")
    if name not in DEGRADATION_PRESETS:
        raise VsrError(f"--degradation {text!r}: unknown preset {name!r}; choose one of "
                       f"{', '.join(DEGRADATION_PRESETS)} (optionally NAME:key=value,key=lo:hi)")
    cfg = dataclasses.replace(DEGRADATION_PRESETS[name])
    if overrides and cfg.is_clean:
        raise VsrError(f"--degradation {text!r}: {name} has no options")
    fields = {f.name for f in dataclasses.fields(cfg)} - {"name"}
    for item in filter(None, overrides.split(",")):
        k, eq, v = item.partition("=")
        k = k.strip()
        if not eq or k not in fields:
            raise VsrError(f"--degradation {text!r}: {item!r} is not key=value with a key among {', '.join(sorted(fields))}")
        try:
            setattr(cfg, k, _coerce(v.strip(), getattr(cfg, k), k))
        except ValueError:
            raise VsrError(f"--degradation {text!r}: {k}={v!r} is not a valid value") from None
    return cfg


def degradation_from_dict(d: dict[str, Any]) -> DegradationConfig:
    """Rebuild the config stored in a checkpoint (lists back to tuples)."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return DegradationConfig(**d)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def gaussian_kernel(size: int, sx: float, sy: float, theta: float) -> torch.Tensor:
    """A normalised (possibly anisotropic, rotated) Gaussian kernel, float64."""
    r = size // 2
    y, x = torch.meshgrid(torch.arange(-r, r + 1, dtype=torch.float64), torch.arange(-r, r + 1, dtype=torch.float64),
                          indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """A circular low-pass (2-D sinc, ``cutoff`` in radians/pixel) windowed by a Hann window: ringing."""
    r = size // 2
    y, x = torch.meshgrid(torch.arange(-r, r + 1, dtype=torch.float64), torch.arange(-r, r + 1, dtype=torch.float64),
                          indexing="ij")
    d = torch.sqrt(x**2 + y**2)
    k = torch.where(d == 0, torch.tensor(cutoff**2 / (4 * math.pi), dtype=torch.float64),
                    cutoff * torch.special.bessel_j1(cutoff * d) / (2 * math.pi * d.clamp(min=1e-12)))
    win = torch.hann_window(size + 2, periodic=False, dtype=torch.float64)[1:-1]
    k = k * win[:, None] * win[None, :]
    return k / k.sum()


def _blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Convolve (N, 3, H, W) float with one kernel, reflect padding."""
    r = k.shape[-1] // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    return F.conv2d(x, k.to(x.dtype)[None, None].repeat(3, 1, 1, 1), groups=3)


def _downscale(x: torch.Tensor, mode: int) -> torch.Tensor:
    """x4 down of (N, 3, H, W) float 0-255: MATLAB bicubic (0), bilinear (1) or area (2)."""
    from vsr.metrics import imresize

    if mode == 0:
        return imresize(x, 1.0 / SCALE, quantize=False).to(x.dtype)
    h, w = x.shape[-2] // SCALE, x.shape[-1] // SCALE
    if mode == 1:
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(x, size=(h, w), mode="area")


def _noise(x: torch.Tensor, rng: np.random.Generator, cfg: DegradationConfig, gen: torch.Generator) -> torch.Tensor:
    grey = rng.random() < cfg.grey_noise_prob
    shape = (x.shape[0], 1, *x.shape[2:]) if grey else x.shape
    if rng.random() < cfg.poisson_prob:
        scale = _uniform(rng, cfg.poisson_scale)
        vals = 10 ** (4 - 2 * scale)  # photons at white: scale 1 -> 100 (about 18 levels of noise at mid-grey), 0.05 -> 8,000 (2 levels)
        base = x.clamp(0, 255) / 255.0
        if grey:
            base = base.mean(dim=1, keepdim=True)
        noisy = torch.poisson(base * vals, generator=gen) / vals
        return x + (noisy - base) * 255.0
    sigma = _uniform(rng, cfg.gauss_sigma)
    return x + torch.randn(shape, generator=gen, dtype=x.dtype) * sigma


def _tile(frames: torch.Tensor) -> tuple[np.ndarray, int, int]:
    """(N, 3, h, w) uint8 -> one (rows*h, cols*w, 3) mosaic, so one codec run serves a group of crops."""
    n, _, h, w = frames.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    mosaic = torch.zeros(rows * h, cols * w, 3, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        mosaic[r * h:(r + 1) * h, c * w:(c + 1) * w] = frames[i].permute(1, 2, 0)
    return mosaic.numpy(), rows, cols


def _untile(mosaic: np.ndarray, n: int, h: int, w: int, cols: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(mosaic))
    return torch.stack([t[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w].permute(2, 0, 1)
                        for i in range(n)])


class Degrader:
    """Makes (LR, HR) uint8 pairs from HR regions with a :class:`DegradationConfig`, drawn from a seed."""

    def __init__(self, cfg: DegradationConfig, *, crop: int) -> None:
        if cfg.frames < 1 or cfg.groups < 1 or cfg.context < 1 or cfg.blur_size % 2 == 0:
            raise VsrError("degradation: frames, groups and context must be >= 1 and blur_size odd")
        self.cfg, self.crop = cfg, crop

    def __call__(self, regions: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``regions`` (B, 3, R, R) uint8 on the CPU, R = ``cfg.region(crop)`` -> (LR (B, 3, crop/4, crop/4), HR (B, 3,
        crop, crop))."""
        cfg = self.cfg
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        b = regions.shape[0]
        bounds = np.linspace(0, b, min(cfg.groups, b) + 1).round().astype(int)
        lrs, hrs = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            lr, hr = self._group(regions[lo:hi], rng, gen)
            lrs.append(lr)
            hrs.append(hr)
        return torch.cat(lrs), torch.cat(hrs)

    def _windows(self, regions: torch.Tensor, rng: np.random.Generator, frames: int, size: int) -> torch.Tensor:
        """(N, T, 3, size, size): a window moving at constant velocity (whole HR px, jittered) in each region."""
        c, m = size, regions.shape[-1] - size
        src = regions.numpy()
        out = []
        for i in range(regions.shape[0]):
            vy, vx = rng.integers(-self.cfg.motion, self.cfg.motion + 1, size=2)
            ys = np.clip(m // 2 + vy * (np.arange(frames) - (frames - 1) / 2) + rng.integers(-1, 2, frames), 0, m)
            xs = np.clip(m // 2 + vx * (np.arange(frames) - (frames - 1) / 2) + rng.integers(-1, 2, frames), 0, m)
            out.append(np.stack([src[i, :, int(y):int(y) + c, int(x):int(x) + c] for y, x in zip(ys, xs)]))
        return torch.from_numpy(np.stack(out))

    def sequences(self, seq: torch.Tensor, seed: int) -> torch.Tensor:
        """HR sequences (B, T, 3, crop, crop) uint8 on the CPU -> their LR (B, T, 3, crop/4, crop/4) uint8: one
        draw per group of sequences, applied to every frame (a codec over the whole sequence, noise per frame)."""
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        b = seq.shape[0]
        bounds = np.linspace(0, b, min(self.cfg.groups, b) + 1).round().astype(int)
        return torch.cat([self._chain(seq[lo:hi], rng, gen, *self._draw(rng), every_frame=True)
                          for lo, hi in zip(bounds[:-1], bounds[1:])])

    def _draw(self, rng: np.random.Generator) -> tuple[bool, bool, bool]:
        """(clean, video codec, JPEG) for one group."""
        cfg = self.cfg
        clean = rng.random() < cfg.clean_prob
        use_codec = not clean and rng.random() < cfg.codec_prob
        use_jpeg = not clean and not use_codec and rng.random() < cfg.jpeg_prob
        return clean, use_codec, use_jpeg

    def _group(self, regions: torch.Tensor, rng: np.random.Generator, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        clean, use_codec, use_jpeg = self._draw(rng)
        size = self.crop * self.cfg.context
        frames = self.cfg.frames if use_codec and regions.shape[-1] > size else 1
        seq = self._windows(regions, rng, frames, size) if regions.shape[-1] > size else regions[:, None]
        lr, hr = self._chain(seq, rng, gen, clean, use_codec, use_jpeg)[:, -1], seq[:, -1]
        if size == self.crop:
            return lr, hr.clone()
        # the training crop from inside the degraded region, at any LR pixel (so any codec block phase)
        c, spare = self.crop // SCALE, (size - self.crop) // SCALE
        at = rng.integers(0, spare + 1, size=(lr.shape[0], 2))
        return (torch.stack([lr[i, :, y:y + c, x:x + c] for i, (y, x) in enumerate(at)]),
                torch.stack([hr[i, :, SCALE * y:SCALE * (y + c), SCALE * x:SCALE * (x + c)] for i, (y, x) in enumerate(at)]))

    def _chain(self, seq: torch.Tensor, rng: np.random.Generator, gen: torch.Generator, clean: bool, use_codec: bool,
               use_jpeg: bool, *, every_frame: bool = False) -> torch.Tensor:
        """(N, T, 3, crop, crop) uint8 -> (N, T, 3, crop/4, crop/4) uint8 through one draw of the chain; JPEG on
        the last frame only unless ``every_frame`` (the single-frame path trains on the last one alone)."""
        cfg = self.cfg
        n, t = seq.shape[:2]
        x = seq.reshape(n * t, *seq.shape[2:]).to(torch.float32)
        if clean:
            from vsr.metrics import imresize

            lr = imresize(x, 1.0 / SCALE).to(torch.uint8)
            return lr.reshape(n, t, *lr.shape[1:])
        if rng.random() < cfg.blur_prob:
            x = _blur(x, self._kernel(rng))
        x = _downscale(x, int(rng.choice(3, p=np.asarray(cfg.resize_weights) / sum(cfg.resize_weights))))
        if rng.random() < cfg.noise_prob:
            x = _noise(x, rng, cfg, gen)
        lr = x.round().clamp(0, 255).to(torch.uint8).reshape(n, t, 3, *x.shape[-2:])
        lr = self._compress(lr, rng, use_codec, use_jpeg, every_frame)
        if rng.random() < cfg.second_pass_prob:
            y = lr.reshape(n * t, *lr.shape[2:]).to(torch.float32)
            if rng.random() < 0.5:
                y = _blur(y, gaussian_kernel(7, *([_uniform(rng, (0.2, 1.0))] * 2), 0.0))
            if rng.random() < cfg.noise_prob:
                y = _noise(y, rng, cfg, gen)
            lr = y.round().clamp(0, 255).to(torch.uint8).reshape(lr.shape)
            lr = self._compress(lr, rng, rng.random() < cfg.codec_prob, rng.random() < cfg.jpeg_prob, every_frame)
        return lr

    def _kernel(self, rng: np.random.Generator) -> torch.Tensor:
        cfg = self.cfg
        if rng.random() < cfg.sinc_prob:
            return sinc_kernel(cfg.blur_size, _uniform(rng, (math.pi / 3, math.pi)))
        s = _uniform(rng, cfg.blur_sigma)
        if rng.random() < cfg.aniso_prob:
            return gaussian_kernel(cfg.blur_size, s, _uniform(rng, cfg.blur_sigma), _uniform(rng, (0, math.pi)))
        return gaussian_kernel(cfg.blur_size, s, s, 0.0)

    def _compress(self, lr: torch.Tensor, rng: np.random.Generator, use_codec: bool, use_jpeg: bool,
                  every_frame: bool = False) -> torch.Tensor:
        """(N, T, 3, h, w) uint8 through a video codec (all T frames, tiled) or JPEG (the last frame, or
        ``every_frame``), or unchanged."""
        cfg = self.cfg
        n, t, _, h, w = lr.shape
        if use_codec:
            codec = "h265" if rng.random() < cfg.h265_share else "h264"
            lo, hi = cfg.crf_h265 if codec == "h265" else cfg.crf_h264
            step = CodecStep(codec, int(rng.integers(lo, hi + 1)), str(rng.choice(cfg.presets)),
                             int(rng.integers(cfg.gop[0], cfg.gop[1] + 1)))
            mosaics = []
            cols = 1
            for k in range(t):
                mosaic, _, cols = _tile(lr[:, k])
                mosaics.append(mosaic)
            decoded = codec_roundtrip(mosaics, step)
            return torch.stack([_untile(m, n, h, w, cols) for m in decoded], dim=1)
        if use_jpeg:
            q = int(rng.integers(cfg.jpeg_q[0], cfg.jpeg_q[1] + 1))
            out = lr.clone()
            for i in range(n):  # single frames: only the target frame is used when there is no codec
                for k in range(t) if every_frame else [t - 1]:
                    out[i, k] = torch.from_numpy(jpeg_roundtrip(lr[i, k].permute(1, 2, 0).numpy(), q)).permute(2, 0, 1)
            return out
        return lr


def config_dict(cfg: DegradationConfig) -> dict[str, Any]:
    """A plain dict (tuples as lists) for checkpoints, weights metadata and JSON."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


__all__ = ["CodecStep", "JpegStep", "Condition", "parse_condition", "DegradationConfig", "DEGRADATION_PRESETS",
           "parse_degradation", "Degrader", "codec_encode", "codec_decode", "codec_roundtrip", "jpeg_roundtrip", "config_dict", "degradation_from_dict"]
