"""`build_model`: a `ModelConfig` to a Keras model, dispatched on the architecture name.

Names:
- `"small_cnn"`: `SmallCNN` (MNIST).
- `"resnet<depth>"`: `ResNet`, one builder for every depth: basic blocks for
  the shallow ones (`"resnet18"`, `"resnet34"`, CIFAR-10), bottleneck blocks
  for `"resnet50"`, `"resnet101"`, `"resnet152"`, `"resnet200"`.
- `"wrn<depth>_<width>"`: `WideResNet`, e.g. `"wrn16_8"` (SVHN), `"wrn40_2"`
  (STL-10); dropout 0.3 inside the blocks, as in the OAT reference code.

- `"rdi_small_cnn"`, `"rdi_resnet38"`, `"rdi_mobilenet_v2"`: the multi-exit
  RDI-Nets (SPEC §3), `MultiExitNetwork`s built by the functions of the same
  names in `oat_tf.models.rdi_networks` (SmallCNN, ResNet-38 and MobileNetV2
  backbones with the paper's exits), whose output is a dict of logits
  `{"exit_1", ..., "final"}` (variants "plain", "oat", "oat_single_bn";
  `oat_tf.models.multi_exit`).

The slimmable variants ("oats", "oats_single_bn", "ats") build
`SlimmableSmallCNN` for `"small_cnn"` and `SlimmableResNet` for
`"resnet<depth>"` with `ModelConfig.widths`; there is no slimmable Wide ResNet.

`ModelConfig.filters` (non-empty) becomes `filters` (two conv blocks) of the
small CNNs and `stage_filters` (four stages) of the ResNets, and
`ModelConfig.hidden_units` (non-zero) the small CNNs' `hidden_units`; the
other families take neither (`config.check_model_sizes`).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Tuple

import keras
from absl import logging

from oat_tf import config as config_lib
from oat_tf.models import precision as precision_lib
from oat_tf.models import rdi_networks
from oat_tf.models import resnet
from oat_tf.models import slimmable_resnet
from oat_tf.models import slimmable_small_cnn
from oat_tf.models import small_cnn
from oat_tf.models import wide_resnet

ARCHITECTURE_PATTERNS = (
    "small_cnn",
    "resnet<depth>",
    "wrn<depth>_<width>",
    "rdi_small_cnn",
    "rdi_resnet38",
    "rdi_mobilenet_v2",
)
# Multi-exit networks (RDI-Nets), by exact name: their builders.
MULTI_EXIT_ARCHITECTURES = {
    "rdi_small_cnn": rdi_networks.rdi_small_cnn,
    "rdi_resnet38": rdi_networks.rdi_resnet38,
    "rdi_mobilenet_v2": rdi_networks.rdi_mobilenet_v2,
}

# Family defaults that `ModelConfig` does not carry; `build_model` overrides win.
WRN_DROPOUT = 0.3  # dropRate of the reference WRN16_8OAT and WRN40_2OAT.

_RESNET = re.compile(r"resnet(\d+)")
_WRN = re.compile(r"wrn(\d+)_(\d+)")


def parse_architecture(
    architecture: str, slimmable: bool = False
) -> Tuple[Callable[..., keras.Model], Dict[str, Any]]:
    """Returns the model class (or builder) and its architecture arguments for a name.

    Args:
        architecture: str, "small_cnn", "resnet<depth>", "wrn<depth>_<width>"
            or a multi-exit network ("rdi_small_cnn", "rdi_resnet38",
            "rdi_mobilenet_v2").
        slimmable: bool, return the slimmable class of the family
            (`SlimmableSmallCNN`, `SlimmableResNet`).

    Returns:
        Tuple (model class, or for a multi-exit network its builder in
        `rdi_networks`; dict of constructor arguments fixed by the name, plus
        family defaults).

    Raises:
        ValueError: if the name matches no family, or no slimmable network of
            the family exists.
    """
    name = architecture.strip().lower() if isinstance(architecture, str) else ""
    if name in MULTI_EXIT_ARCHITECTURES:
        if slimmable:
            raise ValueError(
                "The slimmable variants (OATS, PGD-ATS) have no multi-exit network. "
                f"Received: architecture={architecture!r}"
            )
        return MULTI_EXIT_ARCHITECTURES[name], {}
    if name == "small_cnn":
        return (slimmable_small_cnn.SlimmableSmallCNN if slimmable else small_cnn.SmallCNN), {}
    match = _RESNET.fullmatch(name)
    if match:
        model_class = slimmable_resnet.SlimmableResNet if slimmable else resnet.ResNet
        return model_class, {"depth": int(match.group(1))}
    match = _WRN.fullmatch(name)
    if match and slimmable:
        raise ValueError(
            "The slimmable variants (OATS, PGD-ATS) exist for 'small_cnn' and "
            f"'resnet<depth>' only. Received: architecture={architecture!r}"
        )
    if match:
        return wide_resnet.WideResNet, {
            "depth": int(match.group(1)),
            "width": int(match.group(2)),
            "dropout": WRN_DROPOUT,
        }
    raise ValueError(
        f"`architecture` must be one of {ARCHITECTURE_PATTERNS} (e.g. 'resnet34', "
        f"'wrn16_8', 'rdi_small_cnn'). Received: architecture={architecture!r}"
    )


def size_kwargs(config: config_lib.ModelConfig) -> Dict[str, Any]:
    """Returns the constructor arguments of `config.filters` and `config.hidden_units`.

    Args:
        config: ModelConfig.

    Returns:
        dict: `{"filters": (a, b)}` for "small_cnn" or `{"stage_filters":
        (a, b, c, d)}` for "resnet<depth>" when `filters` is set, plus
        `{"hidden_units": n}` for "small_cnn" when `hidden_units` is set;
        empty for the defaults.

    Raises:
        ValueError: for sizes the architecture does not take, or a wrong
            number of `filters`.
    """
    filters = config_lib.check_model_sizes(
        config.architecture, config.filters, config.hidden_units
    )
    is_small_cnn = config_lib.architecture_family(config.architecture) == "small_cnn"
    kwargs: Dict[str, Any] = {}
    if filters:
        kwargs["filters" if is_small_cnn else "stage_filters"] = filters
    if config.hidden_units:
        kwargs["hidden_units"] = int(config.hidden_units)
    return kwargs


def build_model(
    config: config_lib.ModelConfig, *, precision: str = "float32", **overrides: Any
) -> keras.Model:
    """Builds the network described by a `ModelConfig`.

    Args:
        config: ModelConfig, architecture, variant, classes, input shape and
            λ encoding.
        precision: str, the Keras dtype policy the layers are built under
            (`precision.PRECISIONS`): "float32", or "mixed_float16" /
            "mixed_bfloat16" (float32 variables, low-precision compute, float32
            normalisations and logits).
        **overrides: further constructor arguments of the family (e.g.
            `dropout=0.0`, `stage_filters=(8, 16, 16, 32)`, `filters=(4, 8)`),
            which replace the family defaults and `config.filters` /
            `config.hidden_units` (`size_kwargs`).

    Returns:
        A `keras.Model` taking `{"image": [N, H, W, C], "lambda": [N]}` and
        returning float32 logits [N, num_classes] (a dict of them, "exit_1", ...,
        "final", for a multi-exit network): functional, or for the slimmable
        variants a `SlimmableNetwork` that also takes `width=α` (one of
        `config.widths`) and gives functional views with `width_model(α)`.

    Raises:
        ValueError: unknown architecture, unsupported depth or width, sizes
            the architecture does not take, an input too small for the
            network, or an unknown `precision`.
    """
    model_class, kwargs = parse_architecture(config.architecture, slimmable=config.slimmable)
    kwargs.update(
        num_classes=config.num_classes,
        image_shape=tuple(config.input_shape),
        variant=config.variant,
        encoder=config.encoder,
    )
    if config.slimmable:
        kwargs["widths"] = tuple(config.widths)
    kwargs.update(size_kwargs(config))
    kwargs.update(overrides)
    logging.info(
        "Building %s (%s) variant=%s input=%s classes=%d precision=%s",
        config.architecture,
        model_class.__name__,
        config.variant,
        tuple(config.input_shape),
        config.num_classes,
        precision,
    )
    with precision_lib.dtype_policy_scope(precision):
        return model_class(**kwargs)
