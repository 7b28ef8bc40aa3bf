"""Pictures of a job for people: one frame of its result, the same input frame bicubic-resized to the
result's size (the comparison a viewer needs), and a small thumbnail of the input.

Frames are decoded read-only with ``vsr.video.VideoReader`` (the colour conversion ``vsr upscale`` uses)
and encoded with ``vsr.images``; frame N is the N-th in display order, as the engine counts them, so index
N of the input and of the result are the same picture (found by seeking, so a late frame is as quick as an
early one).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from vsr import images
from vsr.metrics import imresize
from vsr.video import Frame, VideoReader

THUMBNAIL_WIDTH = 160


def _rgb8(image: np.ndarray) -> np.ndarray:
    """An RGB frame as 8-bit (16-bit frames rounded), for display."""
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return image


def frame_at(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, in display order as the engine counts) of the video at ``path``, 8-bit RGB:
    sought by its display time (the keyframe before it, then decoded forward), or counted from the start where
    the packets carry no usable times. Raises IndexError when the file holds fewer frames."""
    with VideoReader(path, video_only=True) as reader:
        times = reader.presentation_times()
        if times is not None:
            if index >= len(times):
                raise IndexError(f"{path.name} has no frame {index}")
            end = times[index + 1] if index + 1 < len(times) else None
            for frame in reader.frames_between(times[index] if index else None, end, first_index=index):
                return _rgb8(frame.image)
        else:
            for item in reader:
                if isinstance(item, Frame) and item.index == index:
                    return _rgb8(item.image)
    raise IndexError(f"{path.name} has no frame {index}")


def bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` (H, W, 3 uint8) resized ``scale`` x by MATLAB-compatible bicubic, the baseline ``vsr bench``
    scores (its 'bicubic' rows)."""
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return imresize(chw, scale).numpy().transpose(1, 2, 0).copy()


def png(image: np.ndarray) -> bytes:
    return images.encode_image(".png", image, name="the preview")


def thumbnail(path: Path, width: int = THUMBNAIL_WIDTH) -> bytes:
    """The first frame of the video at ``path`` as a JPEG at most ``width`` pixels wide."""
    image = frame_at(path, 0)
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return images.encode_image(".jpg", image, name="the thumbnail")
