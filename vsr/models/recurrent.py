"""Causal x4 video generators built on SRResNet's parts: recurrent (RRN-style implicit alignment, no optical
flow) or a sliding window of past frames.

One frame in, one frame out: ``forward(lr, state) -> (sr, new_state)``. The previous LR frame(s), and for the
recurrent design the previous output (pixel-unshuffled to LR size) and a hidden map, enter through one
zero-initialised conv added to the head conv before its PReLU, so a model made by :func:`from_srresnet`
computes exactly the SRResNet it came from until it is trained. The sliding window (``feedback=False``)
keeps only the last ``window - 1`` LR frames: nothing it made goes back in, so it cannot drift. The state is
three tensors at the LR size (bounded memory; the window's last two have no channels); ``state=None`` starts
a stream afresh, :func:`reset_where` restarts chosen streams (at a :func:`scene_cut`, say). Callers decide
when to reset; ``forward`` never does on its own, so a training unroll and an inference stream agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vsr.models.srresnet import SRResNet

# The state: (previous LR inputs, newest first (N, 3 * (window - 1), H, W), previous output clamped to [-1, 1]
# and pixel-unshuffled (N, 3 * scale**2, H, W), hidden map (N, hidden, H, W) in [-1, 1]); a fresh one is
# (lr repeated, 0, 0). Without feedback the last two have no channels.
State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

CUT_BINS = 32
# Histogram distance (0: same luma histogram, 1: disjoint) above which a cut is declared. On Vid4 (BIx4) the
# largest step between consecutive frames is 0.024; between the last frame of foliage and the first of walk
# (the two most alike clips) it is 0.36.
CUT_THRESHOLD = 0.2


class FreezableCore(nn.Module):
    """A temporal generator around an SRResNet ``core`` whose core can be frozen (``vsr train --core-lr 0``)."""

    core: SRResNet
    core_frozen: bool = False

    def freeze_core(self) -> FreezableCore:
        """Train only the temporal layers: the core's tensors stop learning and its batch norms stay in eval
        mode (their running statistics unchanged) whatever ``train()`` says."""
        self.core_frozen = True
        self.core.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> FreezableCore:
        super().train(mode)
        if self.core_frozen:
            self.core.eval()
        return self


class RecurrentSRResNet(FreezableCore):
    """x``scale`` streaming generator. Input: RGB in [0, 1] and a state. Output: RGB in [-1, 1] and the next state.

    ``core`` is an SRResNet (the same names and tensors as a plain one, under ``core.``); ``temporal`` is
    the zero-initialised conv that reads the state; ``to_hidden`` makes the next hidden map from the trunk
    (recurrent design only). ``window``: LR frames seen, this one and ``window - 1`` before it; ``feedback``:
    the previous output and a hidden map go back in (recurrent), or not (a sliding window; ``hidden`` 0).
    """

    def __init__(self, *, num_blocks: int = 16, channels: int = 64, scale: int = 4, hidden: int = 32,
                 temporal_kernel: int = 3, window: int = 2, feedback: bool = True) -> None:
        super().__init__()
        if temporal_kernel < 1 or temporal_kernel % 2 == 0 or window < 2:
            raise ValueError(f"temporal_kernel must be odd and window >= 2, got {temporal_kernel} and {window}")
        if (hidden < 1) if feedback else (hidden != 0):
            raise ValueError(f"hidden must be >= 1 with feedback and 0 without, got {hidden}")
        self.core = SRResNet(num_blocks=num_blocks, channels=channels, scale=scale)
        self.scale, self.hidden, self.window, self.feedback = scale, hidden, window, feedback
        self.state_channels = (3 * (window - 1), 3 * scale * scale if feedback else 0, hidden)
        self.temporal = nn.Conv2d(sum(self.state_channels), channels, temporal_kernel, padding=temporal_kernel // 2)
        self.to_hidden = nn.Conv2d(channels, hidden, 3, padding=1) if feedback else None
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)

    @property
    def arch_kwargs(self) -> dict[str, int]:
        """The constructor's keyword arguments (what a weights file records)."""
        return {"num_blocks": len(self.core.blocks), "channels": self.core.head[0].out_channels, "scale": self.scale,
                "hidden": self.hidden, "temporal_kernel": self.temporal.kernel_size[0], "window": self.window,
                "feedback": self.feedback}

    @property
    def arch(self) -> str:
        """Its architecture's name: recurrent-srresnet, or window-srresnet for the sliding window."""
        return "recurrent-srresnet" if self.feedback else "window-srresnet"

    def initial_state(self, lr: torch.Tensor) -> State:
        """The state of a fresh start at ``lr``: no motion, no previous output, an empty hidden map."""
        n, _, h, w = lr.shape
        zeros = lr.new_zeros(n, sum(self.state_channels[1:]), h, w)
        return lr.repeat(1, self.window - 1, 1, 1), zeros[:, : self.state_channels[1]], zeros[:, self.state_channels[1]:]

    def check_state(self, state: State, lr: torch.Tensor) -> None:
        """A ValueError unless ``state`` is this model's state for frames shaped like ``lr``."""
        check_state(state, lr, self.state_channels, "(prev_lr, prev_out, hidden)")

    def forward(self, lr: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``lr`` (N, 3, H, W) in [0, 1], N independent streams -> ((N, 3, sH, sW) in [-1, 1], the next state)."""
        if state is None:
            state = self.initial_state(lr)
        self.check_state(state, lr)
        memory = torch.cat([s.to(lr.dtype) for s in state], dim=1)
        core = self.core
        head = core.head[1](core.head[0](lr) + self.temporal(memory))
        trunk = core.trunk_end(core.blocks(head)) + head
        out = core.decode(trunk)
        prev_lr = torch.cat([lr, state[0][:, : -3].to(lr.dtype)], dim=1) if self.window > 2 else lr
        if self.to_hidden is None:
            return out, (prev_lr, state[1], state[2])
        return out, (prev_lr, F.pixel_unshuffle(out.clamp(-1.0, 1.0), self.scale), torch.tanh(self.to_hidden(trunk)))


def check_state(state: State, lr: torch.Tensor, channels: tuple[int, int, int], names: str) -> None:
    """A ValueError unless ``state`` is a 3-tensor state (``names`` says what they are) of ``channels`` channels
    each for frames shaped like ``lr``: the check every temporal model's ``check_state`` makes."""
    if not isinstance(state, tuple) or len(state) != 3 or not all(isinstance(s, torch.Tensor) for s in state):
        raise ValueError(f"state must be the {names} tuple a previous call returned, or None")
    n, _, h, w = lr.shape
    got = [tuple(s.shape) for s in state]
    want = [(n, c, h, w) for c in channels]
    if got != want:
        raise ValueError(f"state shapes {got} do not fit {n} stream(s) of {w}x{h} frames (expected {want}); "
                         "start a fresh state (None) when the frame size or the number of streams changes")


class Unrolled(nn.Module):
    """A recurrent generator over whole sequences from a fresh state: (N, T, 3, H, W) -> (N, T, 3, sH, sW).

    One module call per sequence, so DDP and ``torch.compile`` see one forward per backward."""

    def __init__(self, model: RecurrentSRResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        state = None
        outs = []
        for t in range(frames.shape[1]):
            out, state = self.model(frames[:, t], state)
            outs.append(out)
        return torch.stack(outs, dim=1)


def from_srresnet(model: SRResNet, *, hidden: int = 32, temporal_kernel: int = 3, window: int = 2,
                  feedback: bool = True) -> RecurrentSRResNet:
    """A recurrent (or, ``feedback=False``, sliding-window) generator that computes exactly ``model`` (its tensors
    copied; the temporal conv at zero)."""
    if not isinstance(model, SRResNet):
        raise TypeError(f"from_srresnet needs an SRResNet, got {type(model).__name__}")
    rec = RecurrentSRResNet(num_blocks=len(model.blocks), channels=model.head[0].out_channels, scale=model.scale,
                            hidden=hidden if feedback else 0, temporal_kernel=temporal_kernel, window=window,
                            feedback=feedback)
    rec.core.load_state_dict(model.state_dict())
    return rec.to(next(model.parameters()).device).train(model.training)


def _luma_histograms(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, CUT_BINS) normalised histograms of BT.601 luma."""
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).float().flatten(1)
    idx = (y.clamp(0.0, 1.0) * CUT_BINS).long().clamp_(max=CUT_BINS - 1)
    hist = torch.zeros(x.shape[0], CUT_BINS, device=x.device).scatter_add_(1, idx, torch.ones_like(y))
    return hist / y.shape[1]


def scene_cut(prev_lr: torch.Tensor, lr: torch.Tensor, threshold: float = CUT_THRESHOLD) -> torch.Tensor:
    """Per stream: is ``lr`` a new shot after ``prev_lr`` (a state's first tensor: its first 3 channels are the
    frame before)? (N,) bool. The rule, in one place: the total-variation
    distance between the two frames' 32-bin luma histograms exceeds ``threshold``. Histograms ignore motion, so
    a panning or zooming shot stays one shot; a jump to other content moves the histogram.
    Frames of different sizes are always a cut."""
    prev_lr = prev_lr[:, :3]
    if prev_lr.shape != lr.shape:
        return torch.ones(lr.shape[0], dtype=torch.bool, device=lr.device)
    dist = 0.5 * (_luma_histograms(prev_lr) - _luma_histograms(lr)).abs().sum(dim=1)
    return dist > threshold


def reset_where(state: State, mask: torch.Tensor, lr: torch.Tensor) -> State:
    """``state`` with the streams where ``mask`` (N,) is true restarted at ``lr`` (as ``state=None`` would)."""
    prev_lr, prev_out, hidden = state
    m = mask.to(lr.device).view(-1, 1, 1, 1)
    fresh = lr.to(prev_lr.dtype).repeat(1, prev_lr.shape[1] // 3, 1, 1)
    return (torch.where(m, fresh, prev_lr), torch.where(m, torch.zeros_like(prev_out), prev_out),
            torch.where(m, torch.zeros_like(hidden), hidden))
