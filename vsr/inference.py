"""The one inference contract for every caller: normalise -> (tile) -> pad -> run -> crop -> clamp -> denormalise.

Frames travel as integer NHWC arrays (uint8, or uint16 for 10/16-bit video); the model sees NCHW
floats in its descriptor's input range (SRResNet: [0, 1]) and returns its output range (SRResNet:
[-1, 1]), mapped back to [0, 1], clamped and rounded. What the model needs (scale, ranges, precisions,
tiling, size multiple, memory per pixel) comes from its ``vsr.weights.ModelDescriptor``.
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vsr.colour import Yuv420, rgb_to_yuv420p
from vsr.device import autocast
from vsr.errors import VsrError
from vsr.models.fused import fuse_for_inference
from vsr.models.recurrent import reset_where, scene_cut
from vsr.weights import ModelDescriptor, describe_model

# On the CPU, a model call over more input pixels than this runs slower per pixel (its activations
# leave the caches): 4 frames of 480x270 per call measured ~10% slower than 1 (benchmarks/RESULTS.md).
CPU_CALL_PIXELS = 1 << 16
# What ``Upscaler.upscale_stream`` returns and takes back: a temporal model's state, on the device
# (for ``RecurrentSRResNet``: three tensors of N streams at the padded LR size, see vsr.models.recurrent).
StreamState = tuple[torch.Tensor, ...]
# The most frames ``auto_batch`` puts in one batch: past this, GPUs gain little and latency grows.
MAX_AUTO_BATCH = 16


def default_max_pixels(device: torch.device, precision: str, activation_elements: int) -> int:
    """Input pixels one model call may hold: half the free GPU memory, or a quarter of the RAM on CPU, over
    the model's peak activation elements per input pixel (``ModelDescriptor.activation_elements``)."""
    elem = 4 if precision == "fp32" else 2
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * 0.5
    else:
        try:
            budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.25
        except (ValueError, OSError, AttributeError):
            budget = 4 << 30
    return max(64 * 64, int(budget / (activation_elements * elem)))


def _pad_to_requirements(x: torch.Tensor, multiple: int, minimum: int, square: bool) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom/right to a size the network accepts: a multiple of ``multiple``, at least
    ``minimum``, square if asked. Reflection first (as far as it reaches, like spandrel), then replication."""
    h, w = x.shape[-2:]
    th, tw = max(h, minimum), max(w, minimum)
    if square:
        th = tw = max(th, tw)
    th, tw = th + -th % multiple, tw + -tw % multiple
    pad_h, pad_w = th - h, tw - w
    if not (pad_h or pad_w):
        return x
    rh, rw = min(pad_h, h - 1), min(pad_w, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if pad_h - rh or pad_w - rw:
        x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return x


class Upscaler:
    """Runs a generator on batches of frames on one device, optionally in overlapping tiles.

    ``tile=0`` is automatic: whole frames, split into several calls (or into tiles, for one frame
    larger than the budget) so that one call never holds more than ``max_pixels`` input pixels.
    On the CPU a call also holds at most ``CPU_CALL_PIXELS`` input pixels (but always one whole frame).
    ``fuse`` runs an SRResNet through its exact inference rewrite (``vsr.models.fused``): same
    function, 1.4-1.6x faster on the CPU; the caller's model is not modified. ``descriptor`` says what
    the model is (``vsr.weights.load`` gives it; by default it is derived from the model).
    """

    def __init__(self, model: nn.Module, *, device: torch.device, precision: str = "fp32",
                 descriptor: ModelDescriptor | None = None, tile: int = 0, tile_overlap: int = 16,
                 max_pixels: int | None = None, fuse: bool = True) -> None:
        if tile < 0 or tile_overlap < 0:
            raise ValueError("tile and tile_overlap must be >= 0")
        d = self.descriptor = descriptor or describe_model(model)
        if d.in_channels != 3 or d.out_channels != 3:
            raise VsrError(f"{d.arch}: {d.in_channels} -> {d.out_channels} channels; vsr runs RGB -> RGB models only")
        if precision not in d.precisions:
            raise VsrError(f"{d.arch} does not run in {precision} (it supports {', '.join(d.precisions)})")
        if tile and not d.tiling:
            why = "its state spans whole frames" if d.temporal else "it needs the whole picture"
            raise VsrError(f"{d.arch} cannot run on tiles ({why}); use --tile 0")
        self.device, self.precision, self.scale = device, precision, d.scale
        self.tile, self.tile_overlap = tile, tile_overlap
        self.max_pixels = max_pixels or default_max_pixels(device, precision, d.activation_elements)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # frame sizes repeat: let cuDNN pick the fastest kernels
        model = fuse_for_inference(model.eval()) if fuse else copy.deepcopy(model)  # never move the caller's
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] in -> the model's input range, padded to its size multiple -> run -> cropped -> [0, 1] out."""
        h, w = x.shape[-2:]
        x = self._prepare(x)
        with autocast(self.device, self.precision):
            y = self.model(x.contiguous(memory_format=torch.channels_last))
        return self._finish(y, h, w)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> the model's input range, padded to the sizes it accepts."""
        d = self.descriptor
        if d.input_range != (0.0, 1.0):
            x = x * (d.input_range[1] - d.input_range[0]) + d.input_range[0]
        return _pad_to_requirements(x, d.size_multiple, d.min_size, d.square)

    def _finish(self, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The model's output for an (h, w) input -> cropped to (h*s, w*s), float in [0, 1]."""
        lo, hi = self.descriptor.output_range
        y = y[..., : h * self.scale, : w * self.scale].float()
        return ((y - lo) / (hi - lo)).clamp_(0.0, 1.0)

    def call_pixels(self) -> int:
        """Input pixels one model call may hold: the memory budget, and on the CPU the cache cap too."""
        return self.max_pixels if self.device.type == "cuda" else min(self.max_pixels, CPU_CALL_PIXELS)

    def auto_batch(self, height: int, width: int) -> int:
        """Frames per batch for frames of this size: as many as one call may hold, 1 to ``MAX_AUTO_BATCH``."""
        return max(1, min(MAX_AUTO_BATCH, self.call_pixels() // max(1, height * width)))

    @torch.inference_mode()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, 3, H, W) float in [0, 1] on the device -> (N, 3, sH, sW) float in [0, 1]."""
        n, _, h, w = x.shape
        auto = self.descriptor.tiling and h * w > self.max_pixels  # a model that cannot tile runs whole frames
        tile = self.tile or (int(math.isqrt(self.max_pixels)) if auto else 0)
        per_call = max(1, self.call_pixels() // (h * w))
        if per_call >= n:
            return self._run_tiles(x, tile)
        return torch.cat([self._run_tiles(x[i : i + per_call], tile) for i in range(0, n, per_call)])

    def _run_tiles(self, x: torch.Tensor, t: int) -> torch.Tensor:
        n, c, h, w = x.shape
        o, s = self.tile_overlap, self.scale
        if t == 0 or (h <= t and w <= t):
            return self._forward(x)
        out = torch.empty(n, c, h * s, w * s, device=x.device, dtype=torch.float32)
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                py0, px0 = max(y0 - o, 0), max(x0 - o, 0)
                py1, px1 = min(y1 + o, h), min(x1 + o, w)
                tile_out = self._forward(x[:, :, py0:py1, px0:px1])
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = tile_out[:, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
        return out

    @torch.inference_mode()
    def upscale(self, frames: np.ndarray, *, yuv: Yuv420 | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 or uint16 -> (N, sH, sW, 3) of the same dtype.

        With ``yuv`` (uint8 frames only), the 4x pictures are converted on the device and returned as
        YUV 4:2:0 planes, (N, 3sH/2, sW) uint8 (``vsr.colour.rgb_to_yuv420p``).
        """
        if self.descriptor.temporal:
            raise VsrError(f"{self.descriptor.arch} is a temporal model (it carries a state from frame to frame): "
                           "feed frames in order through Upscaler.upscale_stream(frames, state), or unrelated "
                           "pictures through upscale_stills, not upscale")
        if yuv is not None and frames.dtype != np.uint8:
            raise ValueError(f"YUV 4:2:0 output is 8-bit only, got {frames.dtype} frames")
        x = self._to_device(frames)
        if yuv is not None:
            return rgb_to_yuv420p(self.run(x), yuv).cpu().numpy()
        return self._to_host(self.run(x), frames.dtype)

    @torch.inference_mode()
    def run_stills(self, x: torch.Tensor) -> torch.Tensor:
        """``run`` for unrelated pictures and any model: a temporal one takes each picture as a stream of one
        frame from a fresh state (what it makes of a still image); a single-frame one is ``run``."""
        if not self.descriptor.temporal:
            return self.run(x)
        y, _ = self._stream_model(self._prepare(x), None, *x.shape[-2:])
        return y

    @torch.inference_mode()
    def upscale_stills(self, frames: np.ndarray) -> np.ndarray:
        """``upscale`` for unrelated pictures (images, a request's instances) and any model: each picture of a
        temporal model is a stream of one frame from a fresh state, no state passes between them."""
        if not self.descriptor.temporal:
            return self.upscale(frames)
        return self._to_host(self.run_stills(self._to_device(frames)), frames.dtype)

    def _to_device(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8/uint16 on the host -> (N, 3, H, W) float in [0, 1] on the device."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) frames, got shape {frames.shape}")
        peak = 65535.0 if frames.dtype == np.uint16 else 255.0
        src = torch.from_numpy(frames.astype(np.int32) if frames.dtype == np.uint16 else frames)
        if self.device.type == "cuda":
            src = src.pin_memory()  # page-locked, so the copy below is asynchronous
        return src.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(peak)

    @staticmethod
    def _to_host(y: torch.Tensor, dtype: np.dtype) -> np.ndarray:
        """(N, 3, sH, sW) float in [0, 1] on the device -> (N, sH, sW, 3) of ``dtype`` (uint8 or uint16)."""
        peak = 65535.0 if dtype == np.uint16 else 255.0
        y = y.mul_(peak).round_().permute(0, 2, 3, 1)
        if dtype == np.uint16:
            return y.to(torch.int32).cpu().numpy().astype(np.uint16)
        return y.to(torch.uint8).cpu().numpy()

    @torch.inference_mode()
    def upscale_stream(self, frames: np.ndarray, state: StreamState | None, *, detect_cuts: bool = True,
                       yuv: Yuv420 | None = None) -> tuple[np.ndarray, StreamState]:
        """One time step of N independent streams through a temporal model: (N, H, W, 3) uint8/uint16 frames
        (frame t of each stream) and the state the previous call returned (None: a fresh start) ->
        ((N, sH, sW, 3) of the same dtype, the next state).

        Same normalise -> pad -> autocast -> run -> crop -> clamp path as ``upscale``; never tiled (the state
        spans whole frames). A stream restarts by itself where ``vsr.models.recurrent.scene_cut`` sees a cut
        (``detect_cuts``), and all restart when the frame size changes. The state stays on the device; a
        different number of streams than the state holds is a ValueError. ``yuv``: as in ``upscale``.
        """
        x, xin = self._stream_input(frames, yuv)
        n = x.shape[0]
        if state is not None:
            if not isinstance(state, tuple) or not state or state[0].shape[0] != n:
                have = state[0].shape[0] if isinstance(state, tuple) and state else "?"
                raise ValueError(f"the state holds {have} stream(s) but {n} frame(s) were given")
            if state[0].shape[-2:] != xin.shape[-2:]:
                state = None  # a new frame size: every stream starts afresh
        return self._stream_step(x, xin, state, frames.dtype, detect_cuts=detect_cuts, yuv=yuv)

    @torch.inference_mode()
    def upscale_lanes(self, frames: np.ndarray, states: Sequence[StreamState | None], *, detect_cuts: bool = True,
                      yuv: Yuv420 | None = None) -> tuple[np.ndarray, list[StreamState]]:
        """``upscale_stream`` for N streams whose states are kept apart, so that streams can join and leave
        between calls (segments run side by side): ``states[i]`` is stream i's state from an earlier call (None:
        a fresh start; a state of another frame size restarts that stream alone) -> (the pictures, the N next
        states). Each stream gets what ``upscale_stream`` alone would give it (to the rounding of a batched call)."""
        x, xin = self._stream_input(frames, yuv)
        n = x.shape[0]
        if len(states) != n:
            raise ValueError(f"{len(states)} state(s) for {n} frame(s)")
        fits = [s is not None and s[0].shape[0] == 1 and s[0].shape[-2:] == xin.shape[-2:] for s in states]
        state: StreamState | None = None
        if any(fits):
            like = states[fits.index(True)]
            assert like is not None
            parts = [s if ok and s is not None else tuple(torch.zeros_like(t) for t in like) for s, ok in zip(states, fits)]
            state = tuple(torch.cat(p) for p in zip(*parts))
            fresh = torch.tensor([not ok for ok in fits], device=xin.device)
            state = reset_where(state, fresh, xin)  # the fresh streams start as state=None starts them
        y, new = self._stream_step(x, xin, state, frames.dtype, detect_cuts=detect_cuts, yuv=yuv)
        return y, [tuple(t[i : i + 1] for t in new) for i in range(n)]

    def _stream_input(self, frames: np.ndarray, yuv: Yuv420 | None) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.descriptor
        if not d.temporal:
            raise VsrError(f"{d.arch} is not a temporal model; use Upscaler.upscale")
        if yuv is not None and frames.dtype != np.uint8:
            raise ValueError(f"YUV 4:2:0 output is 8-bit only, got {frames.dtype} frames")
        x = self._to_device(frames)
        return x, self._prepare(x)

    def _stream_step(self, x: torch.Tensor, xin: torch.Tensor, state: StreamState | None, dtype: np.dtype, *,
                     detect_cuts: bool, yuv: Yuv420 | None) -> tuple[np.ndarray, StreamState]:
        """The model over prepared frames ``xin`` and a state of their size (or None), in calls of at most
        ``call_pixels``; streams where a scene cut is seen restart first."""
        if state is not None and detect_cuts:
            state = reset_where(state, scene_cut(state[0], xin), xin)
        y, new_state = self._stream_model(xin, state, *x.shape[-2:])
        if yuv is not None:
            return rgb_to_yuv420p(y, yuv).cpu().numpy(), new_state
        return self._to_host(y, dtype), new_state

    def _stream_model(self, xin: torch.Tensor, state: StreamState | None, h: int, w: int
                      ) -> tuple[torch.Tensor, StreamState]:
        """The temporal model over prepared frames of an (h, w) input and their state (None: fresh), in calls of
        at most ``call_pixels`` -> ((N, 3, sH, sW) float in [0, 1], the next state)."""
        n = xin.shape[0]
        per_call = max(1, self.call_pixels() // (h * w))
        outs, states = [], []
        for i in range(0, n, per_call):
            part = None if state is None else tuple(s[i : i + per_call] for s in state)
            with autocast(self.device, self.precision):
                y, new = self.model(xin[i : i + per_call].contiguous(memory_format=torch.channels_last), part)
            outs.append(self._finish(y, h, w))
            states.append(new)
        new_state = states[0] if len(states) == 1 else tuple(torch.cat(parts) for parts in zip(*states))
        return (torch.cat(outs) if len(outs) > 1 else outs[0]), new_state
