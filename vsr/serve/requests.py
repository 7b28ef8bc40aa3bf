"""Request parsing as pure functions: bytes in, a validated array (or a ``RequestError``) out, and back.

Nothing here touches the network, the model or the disk, so every rule is testable (and fuzzable)
alone. Sizes are checked from headers before anything is decoded: the ``.npy`` header's shape, the
image file's header (Pillow reads only that until asked for pixels).
"""
from __future__ import annotations

import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from vsr import images
from vsr.errors import VsrError

JSON = "application/json"
NPY = "application/x-npy"

# The most bytes one array value takes in a JSON body: a float written with 17 significant digits,
# a sign, an exponent and the ", " separator ("-1.2345678901234567e-05, ").
JSON_BYTES_PER_VALUE = 26
# Room for the JSON object around the array, a .npy header, or the multipart framing of an upload.
ENVELOPE_BYTES = 4096
# The most bytes one pixel takes in an uploaded image file: 16-bit RGBA stored uncompressed (TIFF, PNG
# with incompressible data), plus deflate's worst-case growth of 0.1%, rounded up.
IMAGE_BYTES_PER_PIXEL = 9

# Upload containers: the suffix names the demuxer family the probed file must belong to.
VIDEO_CONTAINERS = {".mp4": "mov", ".m4v": "mov", ".mov": "mov", ".mkv": "matroska", ".webm": "matroska",
                    ".avi": "avi"}
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
# Every job's result is written in this container, whatever was uploaded: Matroska holds every codec
# an input may carry (audio and subtitles are copied, not dropped).
RESULT_SUFFIX = ".mkv"


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Limits:
    """Per-request limits, and the body sizes they allow for each endpoint."""

    max_pixels: int  # input pixels per image or instance (H x W)
    max_batch: int  # instances per /v1/predict request
    max_video_bytes: int  # one /v1/jobs upload (a clip's length is not bounded by its pixels)

    @property
    def predict_values(self) -> int:
        return self.max_batch * self.max_pixels * 3

    def body_limit(self, method: str, path: str, content_type: str) -> int:
        """The most body bytes a request to this endpoint may carry (0 for requests that take none)."""
        if method != "POST":
            return 0
        if path == "/v1/predict":
            per_value = 4 if media_type(content_type) == NPY else JSON_BYTES_PER_VALUE  # float32 at most
            return self.predict_values * per_value + ENVELOPE_BYTES
        if path == "/v1/images":
            return self.max_pixels * IMAGE_BYTES_PER_PIXEL + ENVELOPE_BYTES
        if path == "/v1/jobs":
            return self.max_video_bytes + ENVELOPE_BYTES
        return 0


def media_type(content_type: str | None) -> str:
    """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def short(text: str, limit: int = 24) -> str:
    """A client-supplied string made safe to quote in a message: printable, and at most ``limit`` characters."""
    text = re.sub(r"[^\x20-\x7e]", "?", text)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def check_instances(arr: np.ndarray, limits: Limits) -> np.ndarray:
    """Validate (N, H, W, 3) instances; uint8 0-255 or float32 0-1 comes back (the dtype chooses the range)."""
    if arr.dtype == object or arr.ndim != 4:
        raise RequestError(422, f"instances must be a 4-D array N x H x W x C, got {arr.ndim} dimensions")
    n, h, w, c = arr.shape
    if c != 3:
        raise RequestError(422, f"instances must have 3 channels (RGB), got {c}")
    if n == 0 or h == 0 or w == 0:
        raise RequestError(422, "instances must not be empty")
    if n > limits.max_batch:
        raise RequestError(413, f"{n} instances is over the limit of {limits.max_batch} per request")
    check_pixels(h, w, limits)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        if arr.min() < 0 or arr.max() > 255:
            raise RequestError(422, "integer instances must be in 0-255")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise RequestError(422, "float instances must be in 0-1")
        return arr.astype(np.float32)
    raise RequestError(422, f"unsupported element type {arr.dtype}")


def check_pixels(h: int, w: int, limits: Limits) -> None:
    if h * w > limits.max_pixels:
        raise RequestError(413, f"{w}x{h} is over the limit of {limits.max_pixels} pixels per image")


def parse_json_instances(body: bytes, limits: Limits) -> np.ndarray:
    """``{"instances": N x H x W x 3}`` -> validated frames; malformed JSON is 400, a wrong array 422."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, an integer of 4300+ digits
        raise RequestError(400, f"malformed JSON: {str(exc)[:120]}") from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise RequestError(422, 'expected a JSON object {"instances": [...]}')
    try:
        arr = np.asarray(payload["instances"])
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(422, "instances must be a rectangular N x H x W x C array of numbers") from None
    return check_instances(arr, limits)


def parse_npy_instances(body: bytes, limits: Limits) -> np.ndarray:
    """An ``.npy`` file (no pickles) -> validated frames; the header's shape is checked before any data is read."""
    f = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header(f)
    except Exception as exc:  # noqa: BLE001  (numpy's header parser raises ValueError, SyntaxError, TokenError...)
        raise RequestError(400, f"malformed .npy body: {type(exc).__name__}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise RequestError(422, f"unsupported element type {dtype}")
    if len(shape) != 4:
        raise RequestError(422, f"instances must be a 4-D array N x H x W x C, got {len(shape)} dimensions")
    if shape[0] > limits.max_batch:
        raise RequestError(413, f"{shape[0]} instances is over the limit of {limits.max_batch} per request")
    if shape[3] != 3:
        raise RequestError(422, f"instances must have 3 channels (RGB), got {shape[3]}")
    check_pixels(shape[1], shape[2], limits)
    count = math.prod(shape)
    data = body[f.tell():]
    if len(data) != count * dtype.itemsize:
        raise RequestError(400, f"malformed .npy body: the header announces {count * dtype.itemsize} data bytes, "
                                f"the body holds {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return check_instances(arr, limits)


def encode_predictions(out: np.ndarray, media: str) -> bytes:
    """The 4x frames as the response body: a JSON object (values, dtype, range, shape) or an ``.npy`` file."""
    if media == NPY:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(out), allow_pickle=False)
        return buf.getvalue()
    kind = "uint8" if out.dtype == np.uint8 else "float"
    return json.dumps({"predictions": out.tolist(), "dtype": kind, "range": "0-255" if kind == "uint8" else "0-1",
                       "shape": list(out.shape)}).encode()


def response_media(accept: str | None) -> str:
    """``application/x-npy`` when the client asks for it in ``Accept``, else JSON."""
    return NPY if any(media_type(part) == NPY for part in (accept or "").split(",")) else JSON


def upload_suffix(filename: str | None, allowed: dict[str, str]) -> str:
    """The canonical suffix (a key of ``allowed``) of an upload's file name, or 415."""
    name = filename or ""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower() if "\x00" not in name else ""
    if suffix not in allowed:
        raise RequestError(415, f"{short(suffix or name)}: unsupported file type; upload one of "
                                f"{', '.join(sorted(allowed))}")
    return suffix


def image_size(data: bytes, suffix: str, limits: Limits) -> tuple[int, int]:
    """(width, height) from the image file's header only, after checking its format matches ``suffix``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError:
        raise RequestError(413, f"the image is over the limit of {limits.max_pixels} pixels") from None
    except Exception:  # noqa: BLE001  (Pillow raises many kinds on garbage; all mean 'not an image')
        raise RequestError(415, "not an image (PNG, JPEG, WebP, BMP, TIFF)") from None
    if fmt != IMAGE_FORMATS[suffix]:
        raise RequestError(415, f"the file is {fmt or 'unknown'}, not {IMAGE_FORMATS[suffix]} as its name says")
    check_pixels(h, w, limits)
    return w, h


def decode_image(data: bytes, suffix: str, limits: Limits) -> np.ndarray:
    """An uploaded image -> (1, H, W, 3) RGB (uint8, or uint16 for 16-bit files), shown upright (EXIF applied),
    decoded by ``vsr.images`` only once its header says its format and size are allowed."""
    image_size(data, suffix, limits)
    try:
        img = images.read_image(data, max_pixels=limits.max_pixels, name="the image")
    except VsrError as exc:
        raise RequestError(415, f"{exc} (truncated or corrupt?)") from None
    return img.rgb[None]


def encode_png(rgb: np.ndarray) -> bytes:
    try:
        return images.encode_image(".png", rgb, name="the result")
    except VsrError as exc:
        raise RequestError(500, str(exc)) from None


_ABS_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"]+/)*([^\s/:'\"]+)")
_TEMP_NAME = re.compile(r"\.([\w-]+)\.vsr-tmp-\w+-\d+(\.\w+)")


def public_message(text: str) -> str:
    """An error message fit for a client: absolute paths cut to their file name, temp names without host and PID."""
    text = _TEMP_NAME.sub(r"\1\2", text.splitlines()[0] if text else text)
    return _ABS_PATH.sub(r"\1", text)[:300]


# Video encoders a job may ask for (all write into the Matroska result), with their CRF range; None: no CRF.
JOB_ENCODERS: dict[str, tuple[int, int] | None] = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63),
                                                   "libsvtav1": (0, 63), "ffv1": None}


@dataclass(frozen=True)
class JobOptions:
    """What a job's client chose for the encoder (None: as ``vsr upscale`` would pick from the input)."""

    codec: str | None = None
    crf: int | None = None


def parse_job_options(codec: str | None, crf: str | None, *, input_encoder: str,
                      available: frozenset[str] | set[str]) -> JobOptions:
    """Form fields ``codec`` and ``crf`` -> validated options (422 with the allowed values otherwise).
    ``input_encoder`` is the encoder the job uses when ``codec`` is empty (its CRF range applies)."""
    codec = (codec or "").strip() or None
    offered = sorted(c for c in JOB_ENCODERS if c in available)
    if codec is not None and codec not in offered:
        raise RequestError(422, f"codec {short(codec)} is not offered; choose one of {', '.join(offered)} "
                                "(or leave it empty for the input's codec)")
    text = (crf or "").strip()
    if not text:
        return JobOptions(codec, None)
    encoder = codec or input_encoder
    bounds = JOB_ENCODERS.get(encoder, (0, 51))
    if bounds is None:
        raise RequestError(422, f"{encoder} is lossless and takes no CRF; leave crf empty")
    if not re.fullmatch(r"\d{1,3}", text) or not bounds[0] <= int(text) <= bounds[1]:
        raise RequestError(422, f"crf must be a whole number from {bounds[0]} to {bounds[1]} for {encoder}, "
                                f"got {short(text)}")
    return JobOptions(codec, int(text))


def parse_frame_index(text: str | None, frames: int) -> int:
    """A ``frame`` query value -> an index into a clip of ``frames`` frames (422 naming the valid range)."""
    value = (text or "0").strip()
    if not re.fullmatch(r"\d{1,9}", value) or int(value) >= frames:
        raise RequestError(422, f"frame must be a whole number from 0 to {frames - 1} (the clip has {frames} "
                                f"frames), got {short(value)}")
    return int(value)


def upload_name(filename: str | None) -> str:
    """The client's file name as a label: its last path part, printable, at most 80 characters."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = re.sub(r"[^\x20-\x7e]", "?", name)
    return name if len(name) <= 80 else name[:77] + "..."


def result_name(name: str, job_id: str) -> str:
    """The download's file name: the upload's name with ``_x4.mkv`` (letters, digits, ``-_.()`` and spaces kept),
    or the job id for a job without one."""
    stem = re.sub(r"[^\w.() -]", "_", PurePosixPath(name).stem, flags=re.ASCII).strip(" .")
    return f"{stem or job_id}_x4{RESULT_SUFFIX}"
