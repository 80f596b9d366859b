"""The ``filterbank`` backbone: fixed Sobel and Gabor filters, rectified and max-pooled."""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 luma weights, the usual greyscale. They sum to 1, so with data_config's equal
# mean/std for every channel the grey of the normalised image is the normalised grey.
_LUMA = (0.299, 0.587, 0.114)
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


class FilterBank(nn.Module):
    """Fixed filter bank: float images ``(B, 3, H, W)`` -> feature map ``(B, C, H // pool, W // pool)``.

    The filters are Sobel x (vertical edges), Sobel y (horizontal edges), then one even Gabor filter
    per frequency and angle, each ``kernel_size`` square, zero-sum and of unit L1 norm. They run on
    the greyscale image (``C = n_filters``) or on each colour channel (``colour=True``,
    ``C = 3 * n_filters``, channels ordered red filters, green filters, blue filters), then
    ``|x|`` (``rectify="abs"``, edges of both polarities) or ReLU, then ``pool x pool`` max-pooling.

    Options: ``frequencies`` cycles per pixel in (0, 0.5] (below about 0.15 a 7-pixel kernel holds
    less than a cycle and loses its sense of orientation: raise ``kernel_size`` with them);
    ``angles`` a number of orientations spread over 180 degrees, or a tuple of degrees (the
    direction across the stripes: 0 = vertical stripes); ``kernel_size`` odd >= 3; ``sigma`` of the
    Gaussian envelope (default ``(kernel_size - 1) / 4``, so it falls to e^-2 at the border);
    ``pool`` >= 1 (1: no pooling).

    The filters are a buffer, not parameters: nothing here is learned and the optimiser sees none.
    """

    def __init__(self, *, frequencies=(0.15, 0.3), angles=4, kernel_size: int = 7, sigma=None,
                 colour: bool = False, pool: int = 2, rectify: str = "abs"):
        super().__init__()
        frequencies = _numbers("frequencies", frequencies, "e.g. frequencies=(0.15, 0.3)")
        if any(not 0 < f <= 0.5 for f in frequencies):
            raise ValueError(f"frequencies must be cycles per pixel in (0, 0.5] (0.5 is the finest "
                             f"stripe a pixel grid holds), got {frequencies}; e.g. (0.15, 0.3)")
        if _is_int(angles):
            if angles < 1:
                raise ValueError(f"angles must be a positive number of orientations or a tuple of "
                                 f"degrees, got {angles!r}; e.g. angles=4 or angles=(0, 90)")
            angles = tuple(180.0 * i / angles for i in range(angles))
        angles = _numbers("angles", angles, "e.g. angles=4 or angles=(0, 45, 90, 135)")
        if not _is_int(kernel_size) or kernel_size < 3 or kernel_size % 2 == 0:
            fix = f"; try {kernel_size + 1}" if _is_int(kernel_size) and kernel_size >= 3 else ""
            raise ValueError(f"kernel_size must be an odd int >= 3 (a filter needs a centre pixel), "
                             f"got {kernel_size!r}{fix}")
        sigma = (kernel_size - 1) / 4 if sigma is None else sigma
        if not isinstance(sigma, Real) or isinstance(sigma, bool) or sigma <= 0:
            raise ValueError(f"sigma must be a positive number of pixels (or None for "
                             f"(kernel_size - 1) / 4), got {sigma!r}")
        if not isinstance(colour, bool):
            raise ValueError(f"colour must be True or False, got {colour!r}")
        if not _is_int(pool) or pool < 1:
            raise ValueError(f"pool must be an int >= 1 (1 turns pooling off), got {pool!r}")
        if rectify not in ("abs", "relu"):
            raise ValueError(f"rectify must be 'abs' or 'relu', got {rectify!r}")

        sobel_x = F.pad(torch.tensor(_SOBEL_X, dtype=torch.float64), (kernel_size // 2 - 1,) * 4)
        kernels = [sobel_x, sobel_x.T]
        self.filter_names = ["sobel_x", "sobel_y"]
        for f in frequencies:
            for a in angles:
                kernels.append(gabor_kernel(f, a, kernel_size, sigma))
                self.filter_names.append(f"gabor_f{f:g}_a{a:g}")
        kernels = torch.stack([k / k.abs().sum() for k in kernels])  # one scale for every channel
        self.register_buffer("filters", kernels.unsqueeze(1).float())  # (n_filters, 1, k, k)
        self.colour, self.pool, self.rectify = colour, pool, rectify
        self.num_features = len(kernels) * (3 if colour else 1)
        self.min_input_size = pool
        self.data_config = {"input_size": (3, 64, 64), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FilterBank takes float images (B, 3, H, W), got shape {tuple(images.shape)}")
        weight = self.filters.to(images.dtype)
        if self.colour:
            x, weight, groups = images, weight.repeat(3, 1, 1, 1), 3
        else:
            x, groups = (images * images.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True), 1
        # Replicate padding keeps H x W without the false edge that zero padding draws at the border.
        x = F.pad(x, (self.filters.shape[-1] // 2,) * 4, mode="replicate")
        out = F.conv2d(x, weight, groups=groups)
        out = out.abs() if self.rectify == "abs" else F.relu(out)
        return F.max_pool2d(out, self.pool) if self.pool > 1 else out


def gabor_kernel(frequency: float, angle: float, size: int, sigma: float) -> torch.Tensor:
    """Even Gabor kernel ``(size, size)``: stripes of ``frequency`` cycles/pixel across ``angle`` degrees."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    theta = math.radians(angle)
    across = x * math.cos(theta) + y * math.sin(theta)
    kernel = torch.exp(-(x**2 + y**2) / (2 * sigma**2)) * torch.cos(2 * math.pi * frequency * across)
    return kernel - kernel.mean()  # zero sum: a flat patch gives no response, only texture does


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(name, value, example) -> tuple[float, ...]:
    def number(v):
        return isinstance(v, Real) and not isinstance(v, bool)

    values = (value,) if number(value) else value
    values = tuple(values) if isinstance(values, (tuple, list)) else ()
    if not values or not all(number(v) for v in values):
        raise ValueError(f"{name} must be a number or a non-empty tuple of numbers, got {value!r}; {example}")
    return tuple(float(v) for v in values)
