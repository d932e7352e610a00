"""The paper's chart CNN (docs/method.md section 5), one configurable class for every Table-18 variant.

A model is a stack of ``n_blocks`` :class:`ConvBlock` (conv -> batch norm -> activation -> max pool)
followed by ``head = Sequential(Flatten, Dropout, Linear(fc_in, 2))`` returning **logits** (no softmax;
P(up) = softmax(logits)[:, 1] is taken only at prediction time).

Input: float tensor (N, 1, H, 3W), already normalised (``pipeline.train.data.normalise``).
Shapes for the baseline models (C x H x W after each block)::

    I5  (32x15):  64x16x15 -> 128x8x15                                  flatten 15,360   params 155,138
    I20 (64x60):  64x10x60 -> 128x5x60 -> 256x3x60                      flatten 46,080   params 708,866
    I60 (96x180): 64x15x180 -> 128x8x180 -> 256x4x180 -> 512x2x180      flatten 184,320  params 2,952,962

Stride and dilation apply to the FIRST conv only; padding is (k_h//2, k_w//2) on every layer whatever
the stride/dilation (the common public defect of repeating stride/dilation/padding (12,1) on every
layer happens to give the same I20 parameter count, so tests assert per-block shapes).

CPU speed (same mathematics, same state_dict, subclasses of the torch modules they replace):
the first conv (one input channel) is a :class:`StemConv2d` (im2col + matmul), max pooling is a
:class:`FastMaxPool2d` (strided maximum when autograd is off), dropout a :class:`FastDropout`;
:func:`fuse_for_inference` makes a prediction-only copy with BatchNorm folded into the convs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = ("lrelu", "relu")


def conv_output_size(n: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int = 0) -> int:
    """Output length of a convolution along one axis of input length ``n`` (torch's Conv2d rule)."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(n: int, size: int, ceil_mode: bool = True) -> int:
    """Output length of a max-pool with kernel = stride = ``size`` along one axis of length ``n``
    (no padding); ``ceil_mode`` keeps the partial last window, as the paper's pools do."""
    return -(-n // size) if ceil_mode else n // size


@dataclass(frozen=True)
class ModelSpec:
    """Every architectural choice of METHOD 5/9.

    image_hw: (H, 3W) input size in pixels. channels of block i = base_channels * 2**i.
    kernel, first_stride, first_dilation, pool: (height, width) pairs.
    """

    image_hw: tuple[int, int]
    n_blocks: int
    base_channels: int = 64
    kernel: tuple[int, int] = (5, 3)
    first_stride: tuple[int, int] = (1, 1)
    first_dilation: tuple[int, int] = (1, 1)
    batchnorm: bool = True
    activation: str = "lrelu"  # lrelu (LeakyReLU 0.01) | relu
    pool: tuple[int, int] = (2, 1)
    dropout: float = 0.5
    xavier: bool = True  # Xavier-uniform conv/linear weights + linear bias 0.01; False = torch defaults
    # Output layer width: 2 logits (the paper's classifier) or 1 predicted value (a regression
    # target, pipeline.config.model_outputs).
    n_outputs: int = 2

    def __post_init__(self) -> None:
        if self.n_blocks < 1:
            raise ValueError(f"ModelSpec.n_blocks must be >= 1, got {self.n_blocks}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ModelSpec.activation {self.activation!r}; choose one of {ACTIVATIONS}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelSpec.dropout must be in [0, 1), got {self.dropout}")
        if self.n_outputs not in (1, 2):
            raise ValueError(f"ModelSpec.n_outputs must be 1 (regression) or 2 (classifier), got "
                             f"{self.n_outputs}")

    @property
    def channels(self) -> list[int]:
        return [self.base_channels * 2**i for i in range(self.n_blocks)]

    @property
    def padding(self) -> tuple[int, int]:
        return (self.kernel[0] // 2, self.kernel[1] // 2)

    def layer_shapes(self) -> list[tuple[int, int, int, int, int]]:
        """Per block: (C, H, W) after its convolution and (H, W) after its pooling, by the Conv2d /
        MaxPool2d(ceil_mode=True) size formulas: (C, H_conv, W_conv, H_pool, W_pool)."""
        h, w = self.image_hw
        out = []
        for i, c in enumerate(self.channels):
            s = self.first_stride if i == 0 else (1, 1)
            d = self.first_dilation if i == 0 else (1, 1)
            hc = conv_output_size(h, self.kernel[0], s[0], d[0], self.padding[0])
            wc = conv_output_size(w, self.kernel[1], s[1], d[1], self.padding[1])
            h, w = pool_output_size(hc, self.pool[0]), pool_output_size(wc, self.pool[1])
            out.append((c, hc, wc, h, w))
        return out

    def block_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) after each block (convolution and pooling)."""
        return [(c, h, w) for c, _, _, h, w in self.layer_shapes()]

    @property
    def fc_in(self) -> int:
        c, h, w = self.block_shapes()[-1]
        return c * h * w


class StemConv2d(nn.Conv2d):
    """A Conv2d for single-channel input computed as im2col + one matrix product.

    Same parameters, state_dict and result as nn.Conv2d (it *is* one); only the algorithm differs.
    Why: for C_in = 1 with stride/dilation, oneDNN's weight-gradient kernel on CPU is slower than
    the two next convolutions together, while unfold + matmul is cheap (15 x C_out weights).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels != 1 or self.groups != 1 or self.padding_mode != "zeros" or x.dim() != 4:
            return super().forward(x)
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        (sh, sw), (dh, dw), (ph, pw) = self.stride, self.dilation, self.padding
        ho, wo = conv_output_size(h, kh, sh, dh, ph), conv_output_size(w, kw, sw, dw, pw)
        xp = x[:, 0]
        if torch.is_autocast_enabled(x.device.type):  # gather in the low-precision dtype (half the bytes)
            xp = xp.to(torch.get_autocast_dtype(x.device.type))
        xp = F.pad(xp, (pw, pw, ph, ph))  # (N, H + 2ph, W + 2pw)
        # Sliding-window views (no copy): (N, Ho, Wo, kh, kw) in weight order, then one gather.
        win = xp.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
        cols = win.reshape(n, ho, wo, kh * kw)
        out = F.linear(cols, self.weight.reshape(self.out_channels, -1), self.bias)
        # (N, Ho, Wo, C) is the channels_last layout of (N, C, Ho, Wo): no copy.
        return out.permute(0, 3, 1, 2)


class FastDropout(nn.Dropout):
    """nn.Dropout (inverted: kept units scaled by 1/(1-p)) with the mask drawn by torch.rand.

    Same distribution as nn.Dropout; why: CPU bernoulli_ on the 46,080-wide I20 head input cost
    more than a whole convolution layer's forward pass.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


class FastMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d whose no-grad forward (inference, validation) takes the element-wise maximum of
    the kernel's strided tap views; same result (max is exact), including ceil_mode's partial last
    window. Why: CPU max_pool2d_with_indices on channels_last bf16 ran at ~1/6 of this speed.
    With autograd on it is plain nn.MaxPool2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = _pair(self.kernel_size)
        if (torch.is_grad_enabled() or x.dim() != 4 or _pair(self.stride) != (kh, kw)
                or _pair(self.padding) != (0, 0) or _pair(self.dilation) != (1, 1) or self.return_indices):
            return super().forward(x)
        n, c, h, w = x.shape
        ho, wo = pool_output_size(h, kh, self.ceil_mode), pool_output_size(w, kw, self.ceil_mode)
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        out = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last if cl else torch.contiguous_format)
        out.copy_(x[:, :, 0:ho * kh:kh, 0:wo * kw:kw])
        for i in range(kh):
            for j in range(kw):
                if i == 0 and j == 0:
                    continue
                v = x[:, :, i:ho * kh:kh, j:wo * kw:kw]  # partial windows: fewer rows/columns
                o = out[:, :, :v.shape[2], :v.shape[3]]
                torch.maximum(o, v, out=o)
        return out


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class ConvBlock(nn.Module):
    """Conv2d -> BatchNorm2d (or Identity) -> activation -> MaxPool2d(ceil_mode=True)."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: tuple[int, int],
                 dilation: tuple[int, int], padding: tuple[int, int], batchnorm: bool,
                 activation: str, pool: tuple[int, int]) -> None:
        super().__init__()
        conv = StemConv2d if c_in == 1 else nn.Conv2d
        self.conv = conv(c_in, c_out, kernel, stride=stride, dilation=dilation, padding=padding)
        self.bn = nn.BatchNorm2d(c_out) if batchnorm else nn.Identity()
        self.act = nn.LeakyReLU(0.01) if activation == "lrelu" else nn.ReLU()
        # ceil_mode: an odd height keeps its last row (I60 would otherwise flatten to 92,160).
        self.pool = FastMaxPool2d(pool, stride=pool, ceil_mode=True)
        # Only fuse_for_inference copies set this: pooling before a monotone activation gives the
        # same values with the activation applied to a quarter/half of the elements.
        self.pool_first = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            return self.act(self.pool(self.bn(self.conv(x))))
        return self.pool(self.act(self.bn(self.conv(x))))


class ChartCNN(nn.Module):
    """Chart-image CNN: ``forward(x (N,1,H,3W)) -> (N, spec.n_outputs)``: logits (N,2) of the
    classifier, or the predicted target (N,1) of a regression model."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        blocks = []
        c_in = 1
        for i, c in enumerate(spec.channels):
            blocks.append(ConvBlock(
                c_in, c, spec.kernel,
                stride=spec.first_stride if i == 0 else (1, 1),
                dilation=spec.first_dilation if i == 0 else (1, 1),
                padding=spec.padding, batchnorm=spec.batchnorm,
                activation=spec.activation, pool=spec.pool))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Flatten(), FastDropout(spec.dropout), nn.Linear(spec.fc_in, spec.n_outputs))
        if spec.xavier:
            self.apply(_xavier_init)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of every block (post-pool), e.g. for Grad-CAM; last one feeds the head."""
        out = []
        for b in self.blocks:
            x = b(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def fuse_for_inference(model: ChartCNN) -> ChartCNN:
    """An eval-mode copy for fast prediction: BatchNorm folded into the conv weights
    (W' = W*g/sqrt(v+eps), b' = (b-m)*g/sqrt(v+eps) + beta; bn -> Identity) and pooling before the
    (monotone) activation. Same logits as ``model.eval()`` up to float rounding; not for training
    and not for Grad-CAM (block internals differ)."""
    fused = copy.deepcopy(model).eval()
    for b in fused.blocks:
        if isinstance(b.bn, nn.BatchNorm2d):
            bn, conv = b.bn, b.conv
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            with torch.no_grad():
                conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                new_bias = (bias - bn.running_mean) * scale + bn.bias
            conv.bias = nn.Parameter(new_bias.detach())
            b.bn = nn.Identity()
        b.pool_first = True
    # Flatten in (H, W, C) order with the Linear weight permuted to match: for channels_last
    # features this flatten is a view instead of a copy.
    c, h, w = model.spec.block_shapes()[-1]
    lin = fused.head[2]
    with torch.no_grad():
        lin.weight.copy_(lin.weight.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(lin.weight.shape))
    fused.head = nn.Sequential(_FlattenHWC(), nn.Identity(), lin)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


class _FlattenHWC(nn.Module):
    """(N, C, H, W) -> (N, H*W*C), the order of a channels_last tensor's memory."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _xavier_init(m: nn.Module) -> None:
    """METHOD 5: Xavier-uniform conv/linear weights, linear bias 0.01; everything else torch defaults."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(m.weight)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.constant_(m.bias, 0.01)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def macs_per_image(spec: ModelSpec) -> int:
    """Multiply-accumulates of one forward pass (conv + linear; BN/activation/pool ignored).

    conv: C_out * H_out * W_out * C_in * k_h * k_w per block (H_out, W_out before pooling);
    linear: fc_in * n_outputs. One MAC = 2 FLOPs.
    """
    total, c_in = 0, 1
    for c, hc, wc, _, _ in spec.layer_shapes():
        total += c * hc * wc * c_in * spec.kernel[0] * spec.kernel[1]
        c_in = c
    return total + spec.fc_in * spec.n_outputs
