"""PyTorch counterparts of the oat_tf OAT networks and steps, for `versus_torch`.

Written here, for the side-by-side benchmark only (PyTorch is an optional
extra: `pip install -r requirements-bench.txt`; nothing else in oat_tf
imports this module). The networks are the ones oat_tf builds, layer for
layer, in PyTorch's own idiom (NCHW, `nn.Conv2d`, `F.batch_norm`):

- ResNet-34 as kuangliu's `pytorch-cifar` (3×3 stem, four stages of basic
  blocks 3/4/6/3 with 64/128/256/512 channels, 1×1 + BN shortcuts) and the
  SmallCNN (two blocks of two unpadded 3×3 convolutions and a 2×2 max-pool,
  two hidden dense layers), as `oat_tf.models.resnet` and `small_cnn`;
- in the "oat" variant every normalisation is a dual BN (two sets of
  statistics and affine weights; the λ = 0 samples, which come first in a
  batch, use the clean set) and FiLM follows the BNs of the residual path:
  an MLP code → 2C → Leaky ReLU → 2C split into γ and β, both through Leaky
  ReLU; λ is encoded by interpolating the rows of a 128-d random orthogonal
  matrix (RO-128), as `oat_tf.layers.lambda_encoding`;
- the training step is `OATTrainer.train_step`'s: λ ~ S1 element-wise with
  ceil(N / 6) zeros first, PGD-k (random start, sign steps) on the λ ≠ 0
  samples with the network in eval mode, then the clean and adversarial
  passes in train mode, the loss (1 − λ)·CE(clean) + λ·CE(adversarial),
  backward and one SGD update (momentum 0.9, weight decay 5e-4 in the
  gradient);
- the evaluation attack is APGD-CE (Croce & Hein, 2020): N steps,
  N + 1 gradient evaluations, momentum 0.75, the checkpoint rule with
  ρ = 0.75, as `oat_tf.attacks.apgd`.

Importing this module imports torch.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oat_tf import config as config_lib

S1 = config_lib.S1
VARIANTS = ("plain", "oat")
ARCHITECTURES = ("small_cnn", "resnet34")
# Keras dtype policy names; "mixed_bfloat16" is PyTorch's CPU autocast to bfloat16.
PRECISIONS = ("float32", "mixed_bfloat16")


def encoding_matrix(num_values: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Rows of a seeded random orthogonal d×d matrix, one per training λ value.

    Args:
        num_values: int, number of training λ values.
        dim: int, code dimension.
        seed: int, seed of the Gaussian matrix.

    Returns:
        float32 array [num_values, dim] with orthonormal rows.
    """
    gaussian = np.random.RandomState(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(gaussian)
    q = q * np.sign(np.diag(r))[None, :]
    return q[:, :num_values].T.astype(np.float32)


class LambdaEncoder(nn.Module):
    """λ → code by linear interpolation between the codes of the training values.

    Args:
        values: the training λ values, increasing.
        dim: int, code dimension.
    """

    def __init__(self, values: Sequence[float] = S1, dim: int = 128):
        super().__init__()
        self.register_buffer("values", torch.tensor(values, dtype=torch.float32))
        self.register_buffer("matrix", torch.from_numpy(encoding_matrix(len(values), dim)))

    def forward(self, lambdas: torch.Tensor) -> torch.Tensor:
        lam = lambdas.clamp(float(self.values[0]), float(self.values[-1]))
        left = (lam[:, None] >= self.values[None, 1:-1]).sum(dim=1)
        low, high = self.values[left], self.values[left + 1]
        t = ((lam - low) / (high - low))[:, None]
        return (1.0 - t) * self.matrix[left] + t * self.matrix[left + 1]


class FiLM(nn.Module):
    """γ ⊙ h + β with (γ, β) from an MLP of the λ code (the reference FiLM).

    Args:
        channels: int, C.
        code_dim: int, d.
    """

    def __init__(self, channels: int, code_dim: int = 128):
        super().__init__()
        self.hidden = nn.Linear(code_dim, 2 * channels)
        self.output = nn.Linear(2 * channels, 2 * channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.output(F.leaky_relu(self.hidden(code))).chunk(2, dim=1)
        gamma, beta = F.leaky_relu(gamma), F.leaky_relu(beta)
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return x * gamma.reshape(shape) + beta.reshape(shape)


class DualBatchNorm(nn.Module):
    """Two batch norms; the first `num_clean` samples use the clean one.

    Args:
        channels: int, C.
        dims: int, 2 for feature maps (`BatchNorm2d`), 1 for vectors.
    """

    def __init__(self, channels: int, dims: int = 2):
        super().__init__()
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.clean = norm(channels, momentum=0.1, eps=1e-5)
        self.adversarial = norm(channels, momentum=0.1, eps=1e-5)

    def forward(self, x: torch.Tensor, num_clean: int) -> torch.Tensor:
        if num_clean <= 0:
            return self.adversarial(x)
        if num_clean >= x.shape[0]:
            return self.clean(x)
        return torch.cat([self.clean(x[:num_clean]), self.adversarial(x[num_clean:])])


class Normalization(nn.Module):
    """BN (plain) or dual BN followed by FiLM (oat; FiLM only where `film`)."""

    def __init__(self, channels: int, variant: str, *, film: bool = True, dims: int = 2):
        super().__init__()
        self.variant = variant
        if variant == "plain":
            norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
            self.norm = norm(channels, momentum=0.1, eps=1e-5)
            self.film = None
        else:
            self.norm = DualBatchNorm(channels, dims)
            self.film = FiLM(channels) if film else None

    def forward(self, x: torch.Tensor, code: Optional[torch.Tensor], num_clean: int) -> torch.Tensor:
        if self.variant == "plain":
            return self.norm(x)
        x = self.norm(x, num_clean)
        return x if self.film is None else self.film(x, code)


class BasicBlock(nn.Module):
    """conv-BN(-FiLM)-ReLU-conv-BN(-FiLM) + shortcut, ReLU (kuangliu's `BasicBlock`)."""

    def __init__(self, in_channels: int, channels: int, stride: int, variant: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.norm1 = Normalization(channels, variant)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm2 = Normalization(channels, variant)
        self.shortcut_conv = None
        if stride != 1 or in_channels != channels:
            self.shortcut_conv = nn.Conv2d(in_channels, channels, 1, stride, bias=False)
            self.shortcut_norm = Normalization(channels, variant, film=False)

    def forward(self, x, code, num_clean):
        y = F.relu(self.norm1(self.conv1(x), code, num_clean))
        y = self.norm2(self.conv2(y), code, num_clean)
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_norm(self.shortcut_conv(x), code, num_clean)
        return F.relu(y + shortcut)


class ResNet34(nn.Module):
    """CIFAR ResNet-34 (plain or OAT), inputs NCHW in [0, 1] and λ [N]."""

    def __init__(self, variant: str = "oat", num_classes: int = 10):
        super().__init__()
        self.encoder = LambdaEncoder() if variant == "oat" else None
        self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.stem_norm = Normalization(64, variant)
        blocks: List[nn.Module] = []
        in_channels = 64
        for stage, (channels, count) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride, variant))
                in_channels = channels
        self.blocks = nn.ModuleList(blocks)
        self.logits = nn.Linear(512, num_classes)

    def forward(self, images: torch.Tensor, lambdas: torch.Tensor, num_clean: int) -> torch.Tensor:
        code = None if self.encoder is None else self.encoder(lambdas)
        x = F.relu(self.stem_norm(self.stem(images), code, num_clean))
        for block in self.blocks:
            x = block(x, code, num_clean)
        return self.logits(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SmallCNN(nn.Module):
    """The SmallCNN (32/64 filters, 200 hidden units), plain or OAT."""

    def __init__(self, variant: str = "oat", num_classes: int = 10,
                 filters: Tuple[int, int] = (32, 64), hidden_units: int = 200,
                 in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.encoder = LambdaEncoder() if variant == "oat" else None
        convs, norms = [], []
        channels, size = in_channels, image_size
        for block_filters in filters:
            for _ in range(2):
                convs.append(nn.Conv2d(channels, block_filters, 3, bias=False))
                norms.append(Normalization(block_filters, variant))
                channels, size = block_filters, size - 2
            size //= 2
        self.convs, self.conv_norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.fc1 = nn.Linear(channels * size * size, hidden_units, bias=False)
        self.fc1_norm = Normalization(hidden_units, variant, dims=1)
        self.fc2 = nn.Linear(hidden_units, hidden_units, bias=False)
        self.fc2_norm = Normalization(hidden_units, variant, dims=1)
        self.logits = nn.Linear(hidden_units, num_classes)

    def forward(self, images: torch.Tensor, lambdas: torch.Tensor, num_clean: int) -> torch.Tensor:
        code = None if self.encoder is None else self.encoder(lambdas)
        x = images
        for index, (conv, norm) in enumerate(zip(self.convs, self.conv_norms)):
            x = F.relu(norm(conv(x), code, num_clean))
            if index % 2 == 1:
                x = F.max_pool2d(x, 2)
        x = F.relu(self.fc1_norm(self.fc1(x.flatten(1)), code, num_clean))
        x = F.relu(self.fc2_norm(self.fc2(x), code, num_clean))
        return self.logits(x)


class MixedBFloat16(nn.Module):
    """A network whose forward pass runs under PyTorch's CPU autocast to bfloat16.

    PyTorch's counterpart of Keras's "mixed_bfloat16" policy: the weights
    stay float32, convolutions and matrix products compute in bfloat16 (on
    CPUs with AVX512_BF16 / AMX, oneDNN's bfloat16 kernels), and the logits
    come back as float32, so losses and attack gradients are float32.

    Args:
        network: the float32 network to wrap.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, *args):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.network(*args).float()


def build(architecture: str, variant: str, precision: str = "float32") -> nn.Module:
    """The PyTorch network `architecture` ("small_cnn", "resnet34") in `variant`.

    Args:
        architecture: str, one of `ARCHITECTURES`.
        variant: str, one of `VARIANTS`.
        precision: str, one of `PRECISIONS`: "float32", or "mixed_bfloat16"
            for the network wrapped in `MixedBFloat16`.

    Returns:
        torch.nn.Module taking (images NCHW, λ [N], number of λ = 0 samples
        first) and returning float32 logits.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}"
        )
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"`architecture` must be one of {ARCHITECTURES}. Received: architecture={architecture!r}"
        )
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    network = ResNet34(variant) if architecture == "resnet34" else SmallCNN(variant)
    return MixedBFloat16(network) if precision == "mixed_bfloat16" else network


def channels_last(model: nn.Module, images: torch.Tensor) -> Tuple[nn.Module, torch.Tensor]:
    """The network's weights and the images in PyTorch's channels-last memory format.

    The tensors keep their NCHW shape; in memory they are NHWC, TensorFlow's
    layout, which oneDNN's CPU convolutions run without reordering. PyTorch's
    default (and the authors' code) is contiguous NCHW.

    Args:
        model: a network of `build` (converted in place and returned).
        images: float32 [N, C, H, W].

    Returns:
        (model, images) in channels-last format.
    """
    return (model.to(memory_format=torch.channels_last),
            images.contiguous(memory_format=torch.channels_last))


def from_nhwc(images: np.ndarray, labels: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """oat_tf's batch (NHWC images, int labels) as PyTorch tensors (NCHW images, int64 labels)."""
    return (torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
            torch.from_numpy(labels.astype("int64")))


def num_zeros(batch_size: int, values: Sequence[float] = S1) -> int:
    """λ = 0 samples per batch under element-wise S1 sampling: ceil(N / |S1|)."""
    return int(math.ceil(batch_size / len(values)))


def sample_lambdas(batch_size: int, generator: torch.Generator) -> Tuple[torch.Tensor, int]:
    """λ for one batch: the zeros first, then i.i.d. draws from S1 without 0.

    Args:
        batch_size: int, N.
        generator: torch.Generator.

    Returns:
        (λ [N] float32, number of leading zeros).
    """
    zeros = num_zeros(batch_size)
    nonzero = torch.tensor(S1[1:], dtype=torch.float32)
    picks = torch.randint(len(nonzero), (batch_size - zeros,), generator=generator)
    return torch.cat([torch.zeros(zeros), nonzero[picks]]), zeros


def pgd_linf(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lambdas: torch.Tensor,
             *, epsilon: float, step_size: float, num_steps: int,
             generator: torch.Generator) -> torch.Tensor:
    """PGD-k from a uniform random start in the ε-ball, model in eval mode.

    Args:
        model: network `(images, λ, num_clean) -> logits`.
        images: [N, C, H, W] in [0, 1].
        labels: [N] int64.
        lambdas: [N] λ (all non-zero: the adversarial BN).
        epsilon, step_size: floats, L∞ radius and step.
        num_steps: int, k.
        generator: torch.Generator of the random start.

    Returns:
        Adversarial images [N, C, H, W], detached, in [0, 1] and within ε.
    """
    was_training = model.training
    model.eval()
    noise = torch.rand(images.shape, generator=generator) * 2.0 - 1.0
    x = (images + epsilon * noise).clamp(0.0, 1.0).detach()
    for _ in range(num_steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x, lambdas, 0), labels, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x)
        x = x.detach() + step_size * gradient.sign()
        x = torch.min(torch.max(x, images - epsilon), images + epsilon).clamp(0.0, 1.0)
    model.train(was_training)
    return x.detach()


class OATStep:
    """One OAT training step (λ sampling, PGD-k, clean + adversarial passes, SGD).

    The attack and the optimizer update run under the profiler records
    "attack" and "update" (`oat_tf.bench.step_profile` reads them).

    Args:
        model: a network of `build`.
        epsilon, step_size: floats of the training attack.
        attack_steps: int, k of PGD-k.
        learning_rate: float, SGD learning rate.
        seed: int, seed of λ draws and attack starts.
    """

    def __init__(self, model: nn.Module, *, epsilon: float = 8 / 255, step_size: float = 2 / 255,
                 attack_steps: int = 7, learning_rate: float = 0.01, seed: int = 0):
        self.model = model
        self.epsilon, self.step_size, self.attack_steps = epsilon, step_size, attack_steps
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=5e-4
        )
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Runs one step on a batch; returns the loss."""
        lambdas, zeros = sample_lambdas(images.shape[0], self.generator)
        with torch.profiler.record_function("attack"):
            adversarial = pgd_linf(
                self.model, images[zeros:], labels[zeros:], lambdas[zeros:],
                epsilon=self.epsilon, step_size=self.step_size, num_steps=self.attack_steps,
                generator=self.generator,
            )
        self.model.train()
        clean_loss = F.cross_entropy(self.model(images, lambdas, zeros), labels, reduction="none")
        adversarial_loss = F.cross_entropy(
            self.model(adversarial, lambdas[zeros:], 0), labels[zeros:], reduction="none"
        )
        per_sample = (1.0 - lambdas) * clean_loss
        per_sample = per_sample + lambdas * torch.cat([torch.zeros(zeros), adversarial_loss])
        loss = per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.profiler.record_function("update"):
            self.optimizer.step()
        return float(loss.detach())


def apgd_checkpoints(num_steps: int) -> List[int]:
    """The iterations w_j where APGD may halve its step: ceil(p_j · N), p_0 = 0, p_1 = 0.22.

    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) while p_j <= 1, in
    integer hundredths so that no rounding moves a checkpoint.
    """
    hundredths = [0, 22]
    while hundredths[-1] + max(hundredths[-1] - hundredths[-2] - 3, 6) <= 100:
        hundredths.append(hundredths[-1] + max(hundredths[-1] - hundredths[-2] - 3, 6))
    return sorted({(p * num_steps + 99) // 100 for p in hundredths})


def apgd_ce(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lambdas: torch.Tensor,
            *, epsilon: float, num_steps: int = 100, rho: float = 0.75, alpha: float = 0.75,
            generator: torch.Generator) -> torch.Tensor:
    """Untargeted L∞ APGD-CE, one run; returns the highest-loss point per sample.

    Args:
        model: network `(images, λ, num_clean) -> logits`, used in eval mode.
        images: [N, C, H, W] in [0, 1].
        labels: [N] int64.
        lambdas: [N] λ (non-zero: the adversarial BN).
        epsilon: float, L∞ radius.
        num_steps: int, iterations N (N + 1 gradient evaluations).
        rho: float, the fraction of loss-increasing steps below which the step halves.
        alpha: float, momentum weight of the new step.
        generator: torch.Generator of the random start.

    Returns:
        Adversarial images [N, C, H, W], detached, in [0, 1] and within ε.
    """
    model.eval()
    checkpoints = set(apgd_checkpoints(num_steps)[1:])
    batch = images.shape[0]
    view = (batch,) + (1,) * (images.dim() - 1)

    def project(x):
        return torch.min(torch.max(x, images - epsilon), images + epsilon).clamp(0.0, 1.0)

    def loss_and_gradient(x):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x, lambdas, 0), labels, reduction="none")
        (gradient,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), gradient.detach()

    noise = torch.rand(images.shape, generator=generator) * 2.0 - 1.0
    x = project(images + epsilon * noise)
    eta = torch.full(view, 2.0 * epsilon)
    loss, gradient = loss_and_gradient(x)
    best_x, best_loss, best_gradient = x.clone(), loss.clone(), gradient.clone()
    previous = x
    x = project(x + eta * gradient.sign())
    increases = torch.zeros(batch)
    last_checkpoint, eta_at_checkpoint = 0, eta.clone()
    best_at_checkpoint = best_loss.clone()
    for k in range(1, num_steps + 1):
        loss, gradient = loss_and_gradient(x)
        improved = loss > best_loss
        increases += improved.float()
        best_x = torch.where(improved.reshape(view), x, best_x)
        best_gradient = torch.where(improved.reshape(view), gradient, best_gradient)
        best_loss = torch.where(improved, loss, best_loss)
        if k == num_steps:
            break
        if k in checkpoints:
            few = increases < rho * (k - last_checkpoint)
            stuck = (eta.reshape(-1) == eta_at_checkpoint.reshape(-1)) & (
                best_loss == best_at_checkpoint
            )
            halve = (few | stuck).reshape(view)
            eta_at_checkpoint = eta.clone()
            eta = torch.where(halve, eta / 2.0, eta)
            x = torch.where(halve, best_x, x)
            gradient = torch.where(halve, best_gradient, gradient)
            previous = torch.where(halve, best_x, previous)
            increases.zero_()
            last_checkpoint, best_at_checkpoint = k, best_loss.clone()
        z = project(x + eta * gradient.sign())
        x, previous = project(x + alpha * (z - x) + (1.0 - alpha) * (x - previous)), x
    return best_x.detach()
