"""Image files in and out: the one place that decodes and encodes them (grey, alpha, 16-bit, EXIF orientation).

Pixels travel as RGB arrays shown upright: a JPEG's EXIF orientation is applied on read and the
output carries none. The size comes from the header (Pillow's lazy open) and is checked against a
pixel limit before anything is decoded. Writes encode to memory first and then go through
``vsr.atomic.atomic_output``, so an error names the output and says what happened (a full disk
says so) and never leaves half a file.
"""
from __future__ import annotations

import errno
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from vsr.atomic import atomic_output
from vsr.errors import InputError, OutputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
ALPHA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff")
MAX_PIXELS = 100_000_000  # default limit on the pixels of one decoded image (width x height)
_ORIENTATION_TAG = 0x0112

Source = str | Path | bytes


@dataclass(frozen=True)
class Image:
    """A decoded image: ``rgb`` (H, W, 3) uint8 or uint16, upright; ``alpha`` (H, W) of the same dtype or None;
    ``grey`` when the file had a single colour channel (its value is repeated in ``rgb``)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    grey: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]


def is_image_path(path: str | Path) -> bool:
    """True for file names with a common image extension."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _name(source: Source, name: str | None) -> str:
    return name or ("image" if isinstance(source, bytes) else str(source))


def _header(source: Source, name: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation 1-8 still to apply) from the header, without decoding the pixels.

    TIFFs come out 1: Pillow and OpenCV both turn them by their orientation tag themselves, while other
    formats are decoded as stored (OpenCV's ``IMREAD_UNCHANGED``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # our own limit applies
            with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                width, height = im.size
                orientation = 1 if im.format == "TIFF" else int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"{name}: too large to decode ({exc})".splitlines()[0]) from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's "cannot identify image file", truncated headers
        raise InputError(f"{name}: cannot be read as an image (corrupt or unsupported format)") from exc
    return width, height, orientation if 1 <= orientation <= 8 else 1


def image_size(source: Source, *, name: str | None = None) -> tuple[int, int]:
    """(width, height) as the image is shown (EXIF orientation applied), read from the header only."""
    width, height, orientation = _header(source, _name(source, name))
    return (height, width) if orientation >= 5 else (width, height)


def _upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels turned as EXIF ``orientation`` says they are shown (1 = as stored)."""
    if orientation in (5, 6, 7, 8):
        img = {5: img.swapaxes(0, 1), 6: np.rot90(img, -1), 7: img[::-1, ::-1].swapaxes(0, 1),
               8: np.rot90(img, 1)}[orientation]
    elif orientation in (2, 3, 4):
        img = {2: img[:, ::-1], 3: img[::-1, ::-1], 4: img[::-1]}[orientation]
    return np.ascontiguousarray(img)


def read_image(source: Source, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image:
    """Decode a file (or its bytes) as an upright RGB image, checking its size from the header first."""
    name = _name(source, name)
    width, height, orientation = _header(source, name)
    if width * height > max_pixels:
        raise InputError(f"{name}: {width}x{height} is {width * height:,} pixels, more than the limit of "
                         f"{max_pixels:,}; use a smaller image")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot be read ({exc.strerror})") from exc
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF turn by OpenCV
    if raw is None:
        raise InputError(f"{name}: cannot be read as an image (corrupt or unsupported format)")
    if raw.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{name}: {raw.dtype} images are not supported (8- or 16-bit only)")
    raw = _upright(raw, orientation)
    if raw.ndim == 2:
        return Image(rgb=np.repeat(raw[:, :, None], 3, axis=2), grey=True)
    if raw.shape[2] == 4:
        return Image(rgb=cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB), alpha=np.ascontiguousarray(raw[:, :, 3]))
    return Image(rgb=cv2.cvtColor(raw, cv2.COLOR_BGR2RGB))


def check_writable(path: str | Path, *, sixteen_bit: bool = False, alpha: bool = False) -> None:
    """Refuse an output whose format cannot hold the image, before any work is done."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise OutputError(f"{path}: cannot write an image with the extension {ext or '(none)'!r} "
                          f"(use {', '.join(IMAGE_EXTENSIONS)})")
    if sixteen_bit and ext not in SIXTEEN_BIT_EXTENSIONS:
        raise OutputError(f"{path}: {ext} holds 8-bit images only and this one is 16-bit; use .png or .tif")
    if alpha and ext not in ALPHA_EXTENSIONS:
        raise OutputError(f"{path}: {ext} cannot hold the alpha channel of this image; use .png, .webp or .tif")


def encode_image(ext: str, rgb: np.ndarray, *, alpha: np.ndarray | None = None, grey: bool = False,
                 name: str = "image") -> bytes:
    """The file bytes of an RGB image in the format of ``ext``: with ``alpha``, or else (``grey``) as one channel."""
    check_writable(Path(name).with_suffix(ext), sixteen_bit=rgb.dtype == np.uint16, alpha=alpha is not None)
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY if grey and alpha is None else cv2.COLOR_RGB2BGR)
    if alpha is not None:
        pixels = np.dstack([pixels, alpha.astype(pixels.dtype)])
    try:
        ok, buf = cv2.imencode(ext, pixels)
    except cv2.error as exc:
        raise OutputError(f"{name}: cannot encode the image ({str(exc).strip().splitlines()[-1]})") from exc
    if not ok:
        raise OutputError(f"{name}: cannot encode the image as {ext}")
    return buf.tobytes()


def write_image(path: str | Path, rgb: np.ndarray, *, alpha: np.ndarray | None = None, grey: bool = False) -> Path:
    """Write an RGB image (format from the extension) atomically; a failed write names ``path`` and the cause."""
    path = Path(path)
    data = encode_image(path.suffix.lower(), rgb, alpha=alpha, grey=grey, name=str(path))
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"{path}: no space left on the device ({len(data):,} bytes to write); "
                              "nothing was written") from exc
        raise OutputError(f"{path}: cannot write the image ({exc.strerror or exc})") from exc
    return path
