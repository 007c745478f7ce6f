"""λ conditioning shared by every oat_tf network: inputs, encoding, normalisation.

Every model takes the same dict of inputs, `{"image": [N, H, W, C], "lambda":
[N]}`, and comes in four variants (`ModelConfig.variant`):

- `"plain"`: `keras.layers.BatchNormalization` with PyTorch's momentum and
  epsilon, no conditioning; λ is accepted and ignored (PGD-AT baselines).
- `"oat"`: λ is encoded once (`LambdaEncoder` → code [N, d]) and routed once
  (`CleanRoute` → bool [N], True where λ == 0); every normalisation is a
  `DualBatchNormalization` routed by that mask, followed by `FiLM` on the code.
- `"oat_single_bn"`: as `"oat"` with one `BatchNormalization` instead of the
  dual one (the paper's ablation).
- `"mixture_bn"`: Mixture BN (Xie & Yuille, SPEC §4): every normalisation is
  a `DualBatchNormalization`, no encoding and no FiLM. The `"lambda"` input is
  read as the image's **domain**: 0 = clean image (clean BN), any other value
  (1 by convention) = adversarial image (adversarial BN). The same
  `CleanRoute` (λ == 0) derives the mask, so the layer is the one of "oat"
  with another meaning of its input. The mixed-batch objective of
  `OATTrainer` feeds 0 for the clean part of a batch and 1 for the attacked
  part; at test time the λ fed chooses the BN (`EvalConfig.test_bn`: 1 for
  the adversarial BN, the default; 0 for the clean BN, AdvProp-style).

Blocks receive a `Conditioning`, which is also the **layer kit** of the graph
they build: they make their layers through it (`conv`, `dense`,
`flatten_dense`, `dropout`, `normalize`, `relu`, `logits`, and `layer` for
the other stateless ones), so the variants share one code path:

```python
inputs = model_inputs((32, 32, 3))
conditioning = apply_lambda_conditioning(inputs["lambda"], "oat", encoder={"dim": 16})
x = conditioning.conv(inputs["image"], 16, 3, name="stem_conv")
x = conditioning.normalize(x, norm_name="stem_bn", film_name="stem_film")
```

Here each call adds a new Keras layer to a functional graph. The slimmable
networks pass a `slimmable_network.SlimmableConditioning` instead: the same
calls fetch the network's shared slimmable layers and run them at the call's
width, so a backbone's graph function (`small_cnn.apply_small_cnn`,
`resnet.apply_resnet`) is written once for the plain, conditioned and
slimmable networks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import keras

from oat_tf import config as config_lib
from oat_tf.layers import dual_batch_norm
from oat_tf.layers import film
from oat_tf.layers import lambda_encoding
from oat_tf.models import model_arguments

VARIANTS = ("plain", "oat", "oat_single_bn", "mixture_bn")
# The domain indicator fed as "lambda" to a "mixture_bn" network.
CLEAN_DOMAIN = 0.0
ADVERSARIAL_DOMAIN = 1.0

# PyTorch's BatchNorm2d defaults, as in the OAT reference code.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

IMAGE_KEY = "image"
LAMBDA_KEY = "lambda"


def check_variant(variant: str, variants: Sequence[str] = VARIANTS) -> str:
    """Returns `variant` if it is a known model variant.

    Args:
        variant: str, one of `variants`.
        variants: the variants the network comes in (all of `VARIANTS` by
            default; the multi-exit networks take fewer).

    Returns:
        The same string.

    Raises:
        ValueError: if `variant` is unknown.
    """
    if variant not in variants:
        raise ValueError(f"`variant` must be one of {tuple(variants)}. Received: variant={variant!r}")
    return variant


def check_network_arguments(
    num_classes: Any,
    image_shape: Sequence[int],
    variant: str,
    encoder: Optional[Any],
    *,
    min_size: int,
    variants: Sequence[str] = VARIANTS,
) -> Dict[str, Any]:
    """The four arguments every λ-conditioned network takes, checked and normalised.

    Args:
        num_classes: positive int, number of logits.
        image_shape: (H, W, C), height and width at least `min_size`.
        variant: str, one of `variants`.
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`.
        min_size: int, the smallest height and width the network takes.
        variants: the variants the network comes in.

    Returns:
        {"num_classes": int, "image_shape": tuple, "variant": str, "encoder":
        dict}, the first entries of the network's config.

    Raises:
        ValueError: naming the first argument that is wrong.
    """
    return {
        "num_classes": model_arguments.check_positive_int("num_classes", num_classes),
        "image_shape": check_image_shape(image_shape, min_size=min_size),
        "variant": check_variant(variant, variants),
        "encoder": encoder_kwargs(encoder),
    }


def check_image_shape(image_shape: Sequence[int], min_size: int) -> tuple:
    """Validates an (H, W, C) image shape and returns it as a tuple of ints.

    Args:
        image_shape: sequence of three positive ints (H, W, C).
        min_size: int, the smallest height and width the network accepts.

    Returns:
        Tuple (H, W, C) of ints.

    Raises:
        ValueError: if the shape is malformed or smaller than `min_size`.
    """
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(
            "`image_shape` must be three positive ints (H, W, C). "
            f"Received: image_shape={image_shape!r}"
        )
    if shape[0] < min_size or shape[1] < min_size:
        raise ValueError(
            f"`image_shape` must have height and width >= {min_size} for this "
            f"network. Received: image_shape={image_shape!r}"
        )
    return shape


def model_inputs(image_shape: Sequence[int]) -> Dict[str, keras.KerasTensor]:
    """Returns the symbolic inputs every oat_tf model takes.

    Args:
        image_shape: sequence (H, W, C) of the images (floats in [0, 1]).

    Returns:
        Dict with `"image"` ([N, H, W, C] float) and `"lambda"` ([N] float).
    """
    return {
        IMAGE_KEY: keras.Input(shape=tuple(image_shape), name=IMAGE_KEY),
        LAMBDA_KEY: keras.Input(shape=(), name=LAMBDA_KEY),
    }


# The width of the FiLM generators' hidden layer and whether FiLM fuses the
# dual BN's affine ride with the λ encoding (it is how λ enters the network)
# but are not `LambdaEncoder` arguments. Each is recorded only when it differs
# from the reference (1, False), so the configs of reference networks are unchanged.
FILM_HIDDEN_MULTIPLIER_KEY = "film_hidden_multiplier"
FUSED_NORMALIZATION_KEY = "fused_normalization"


def encoder_kwargs(encoder: Optional[Any]) -> Dict[str, Any]:
    """Returns the λ-conditioning settings as a JSON-friendly dict.

    Args:
        encoder: None (the defaults), a mapping of `LambdaEncoder` keyword
            arguments (and optionally `film_hidden_multiplier`), or a
            dataclass with those fields (`EncoderConfig`).

    Returns:
        Dict with keys among `lambda_values`, `scheme`, `dim`, `seed` and,
        when it is not the reference's 1, `film_hidden_multiplier` (so the
        configs of networks with the reference FiLM are unchanged).
    """
    if encoder is None:
        return {}
    if dataclasses.is_dataclass(encoder):
        encoder = dataclasses.asdict(encoder)
    if not isinstance(encoder, Mapping):
        raise ValueError(
            "`encoder` must be None, a dict of LambdaEncoder arguments or an "
            f"EncoderConfig. Received: encoder={encoder!r}"
        )
    kwargs = dict(encoder)
    if "lambda_values" in kwargs:
        kwargs["lambda_values"] = [float(v) for v in kwargs["lambda_values"]]
    if FILM_HIDDEN_MULTIPLIER_KEY in kwargs:
        multiplier = config_lib.check_film_hidden_multiplier(kwargs.pop(FILM_HIDDEN_MULTIPLIER_KEY))
        if multiplier != 1:
            kwargs[FILM_HIDDEN_MULTIPLIER_KEY] = multiplier
    if FUSED_NORMALIZATION_KEY in kwargs:
        fused = kwargs.pop(FUSED_NORMALIZATION_KEY)
        if not isinstance(fused, bool):
            raise ValueError(
                f"`fused_normalization` must be a bool. Received: fused_normalization={fused!r}"
            )
        if fused:
            kwargs[FUSED_NORMALIZATION_KEY] = True
    return kwargs


def lambda_encoder_kwargs(encoder: Optional[Any]) -> Dict[str, Any]:
    """The `LambdaEncoder` keyword arguments of an `encoder_kwargs` input."""
    kwargs = encoder_kwargs(encoder)
    kwargs.pop(FILM_HIDDEN_MULTIPLIER_KEY, None)
    kwargs.pop(FUSED_NORMALIZATION_KEY, None)
    return kwargs


def film_hidden_multiplier(encoder: Optional[Any]) -> int:
    """The FiLM generators' hidden width in units of 2C (1, the reference, by default)."""
    return int(encoder_kwargs(encoder).get(FILM_HIDDEN_MULTIPLIER_KEY, 1))


def fused_normalization(encoder: Optional[Any]) -> bool:
    """Whether a dual BN followed by FiLM runs as one scale and shift (False by default)."""
    return bool(encoder_kwargs(encoder).get(FUSED_NORMALIZATION_KEY, False))


@dataclasses.dataclass(frozen=True, eq=False)
class Conditioning:
    """The λ-derived tensors every normalisation of a network reads.

    Attributes:
        variant: str, one of `VARIANTS`.
        code: KerasTensor [N, d], the λ code for FiLM; None for "plain" and
            "mixture_bn".
        clean: KerasTensor bool [N], the dual-BN route (True where λ == 0,
            i.e. the clean domain for "mixture_bn"); None unless the variant
            is "oat" or "mixture_bn".
        film_hidden_multiplier: int, the FiLM generators' hidden width in
            units of 2C.
        fused_normalization: bool, a dual BN followed by FiLM runs as one
            per-sample scale and shift.
    """

    variant: str
    code: Optional[keras.KerasTensor] = None
    clean: Optional[keras.KerasTensor] = None
    film_hidden_multiplier: int = 1
    fused_normalization: bool = False

    @property
    def use_film(self) -> bool:
        """Whether FiLM follows the normalisations of the residual path."""
        return self.variant in ("oat", "oat_single_bn")

    @property
    def use_dual_bn(self) -> bool:
        """Whether normalisations are `DualBatchNormalization`."""
        return self.variant in ("oat", "mixture_bn")

    # The layer kit. Each method adds new Keras layers to the functional graph;
    # `SlimmableConditioning` overrides them with shared slimmable layers.

    def layer(self, name: str, factory: Callable[[], keras.layers.Layer]) -> keras.layers.Layer:
        """The layer `name` of the graph (stateless layers: ReLU, pooling, Add, ...).

        Args:
            name: str, the layer's name.
            factory: callable making the layer, named `name`.

        Returns:
            A new layer, `factory()`.
        """
        del name  # The factory names the layer.
        return factory()

    def relu(self, x: keras.KerasTensor, *, name: str) -> keras.KerasTensor:
        """A ReLU layer named `name`.

        Args:
            x: KerasTensor.
            name: str, the layer's name.

        Returns:
            KerasTensor shaped like `x`.
        """
        return self.layer(name, lambda: keras.layers.ReLU(name=name))(x)

    def pad_like_pytorch(
        self, x: keras.KerasTensor, kernel_size: int, strides: int, *, name: str
    ) -> Tuple[keras.KerasTensor, str]:
        """The explicit padding of a convolution padded like PyTorch (`conv_padding`).

        Args:
            x: KerasTensor [N, H, W, C], the convolution's input.
            kernel_size: int, square kernel size.
            strides: int, stride.
            name: str, the convolution's name; the padding layer is `name + "_pad"`.

        Returns:
            (`x`, padded where the rule asks; the Keras padding of the convolution).
        """
        pad, padding = conv_padding(kernel_size, strides)
        if pad:
            x = self.layer(
                f"{name}_pad", lambda: keras.layers.ZeroPadding2D(padding=pad, name=f"{name}_pad")
            )(x)
        return x, padding

    def conv(
        self,
        x: keras.KerasTensor,
        filters: int,
        kernel_size: Any,
        strides: int = 1,
        *,
        name: str,
        use_bias: bool = False,
        padding: Optional[str] = None,
    ) -> keras.KerasTensor:
        """A convolution padded like PyTorch's `padding=kernel_size // 2` (`conv_padding`).

        An explicit padding is a `ZeroPadding2D` named `name + "_pad"`.

        Args:
            x: KerasTensor [N, H, W, C].
            filters: int, output channels.
            kernel_size: int (or (int, int) with `padding`), the kernel size.
            strides: int, stride.
            name: str, name of the convolution.
            use_bias: bool, add a bias (off when a normalisation follows).
            padding: None for PyTorch's padding, or a Keras padding ("valid").

        Returns:
            KerasTensor [N, H', W', filters].
        """
        if padding is None:
            x, padding = self.pad_like_pytorch(x, kernel_size, strides, name=name)
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            kernel_initializer="he_normal",
            name=name,
        )(x)

    def depthwise_conv(
        self, x: keras.KerasTensor, kernel_size: int, strides: int = 1, *, name: str
    ) -> keras.KerasTensor:
        """A depthwise convolution without bias, padded like PyTorch (`conv_padding`).

        Args:
            x: KerasTensor [N, H, W, C].
            kernel_size: int, square kernel size.
            strides: int, stride.
            name: str, name of the convolution.

        Returns:
            KerasTensor [N, H', W', C].
        """
        x, padding = self.pad_like_pytorch(x, kernel_size, strides, name=name)
        return keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            depthwise_initializer="he_normal",
            name=name,
        )(x)

    def dense(
        self, x: keras.KerasTensor, units: int, *, name: str, use_bias: bool = True
    ) -> keras.KerasTensor:
        """A dense layer on [N, F] features.

        Args:
            x: KerasTensor [N, F].
            units: int, output features.
            name: str, the layer's name.
            use_bias: bool, add a bias.

        Returns:
            KerasTensor [N, units].
        """
        return keras.layers.Dense(units, use_bias=use_bias, name=name)(x)

    def flatten_dense(
        self, x: keras.KerasTensor, units: int, *, name: str, use_bias: bool = True
    ) -> keras.KerasTensor:
        """A dense layer on the flattened feature map (layers "flatten" and `name`).

        Args:
            x: KerasTensor [N, H, W, C].
            units: int, output features.
            name: str, the dense layer's name.
            use_bias: bool, add a bias.

        Returns:
            KerasTensor [N, units].
        """
        x = keras.layers.Flatten(name="flatten")(x)
        return self.dense(x, units, name=name, use_bias=use_bias)

    def dropout(
        self, x: keras.KerasTensor, rate: float, *, seed: Optional[int], name: str
    ) -> keras.KerasTensor:
        """Dropout at `rate` (on in training calls only).

        Args:
            x: KerasTensor.
            rate: float in (0, 1).
            seed: int or None, the layer's seed.
            name: str, the layer's name.

        Returns:
            KerasTensor shaped like `x`.
        """
        return keras.layers.Dropout(rate, seed=seed, name=name)(x)

    def normalize(
        self, x: keras.KerasTensor, *, norm_name: str, film_name: Optional[str] = None
    ) -> keras.KerasTensor:
        """The variant's normalisation, then FiLM where named (`apply_normalization`).

        Args:
            x: KerasTensor [N, ..., C].
            norm_name: str, name of the normalisation layer.
            film_name: str or None, name of the FiLM layer; None for no FiLM.

        Returns:
            KerasTensor shaped like `x`.
        """
        return apply_normalization(x, self, norm_name=norm_name, film_name=film_name)

    def logits(
        self, x: keras.KerasTensor, num_classes: int, *, pool: bool = False
    ) -> keras.KerasTensor:
        """The float32 classifier layer "logits" (`apply_logits`).

        Args:
            x: KerasTensor [N, C], or [N, H, W, C] with `pool`.
            num_classes: int, the number of classes K.
            pool: bool, global-average-pool `x` first (layer "avg_pool").

        Returns:
            KerasTensor [N, K], float32 logits.
        """
        return apply_logits(x, num_classes, pool=pool)


def apply_lambda_conditioning(
    lambda_input: keras.KerasTensor,
    variant: str,
    encoder: Optional[Any] = None,
) -> Conditioning:
    """Encodes λ once and derives the dual-BN route, as the variant needs.

    Adds the layers `"lambda_encoder"` (variants "oat", "oat_single_bn") and
    `"clean_route"` (variants "oat", "mixture_bn") to the graph.

    Args:
        lambda_input: KerasTensor [N], λ per sample.
        variant: str, one of `VARIANTS`.
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`.

    Returns:
        A `Conditioning` for the blocks.
    """
    check_variant(variant)
    if variant == "plain":
        return Conditioning(variant)
    if variant == "mixture_bn":
        # λ is the domain indicator: 0 = clean image, otherwise adversarial.
        clean = lambda_encoding.CleanRoute(name="clean_route")(lambda_input)
        return Conditioning(variant, clean=clean)
    code = lambda_encoding.LambdaEncoder(
        **lambda_encoder_kwargs(encoder), name="lambda_encoder"
    )(lambda_input)
    clean = None
    if variant == "oat":
        clean = lambda_encoding.CleanRoute(name="clean_route")(lambda_input)
    return Conditioning(
        variant,
        code=code,
        clean=clean,
        film_hidden_multiplier=film_hidden_multiplier(encoder),
        fused_normalization=fused_normalization(encoder),
    )


def conditioning_of(network: keras.Model) -> Conditioning:
    """The `Conditioning` a built network's normalisations read, taken from its graph.

    Layers added on top of a network's features (the side exits of
    `multi_exit_network.MultiExitNetwork`) use it to be normalised and
    modulated like the network: the same λ code and dual-BN route tensors.

    Args:
        network: functional keras.Model of an oat_tf network class, with the
            attributes `variant` and `encoder` and, as its variant has them,
            the layers "lambda_encoder" and "clean_route".

    Returns:
        Conditioning whose `code` and `clean` are the network's own
        KerasTensors.

    Raises:
        ValueError: if `network` has no such attributes or layers.
    """
    variant = getattr(network, "variant", None)
    if variant not in VARIANTS or not hasattr(network, "encoder"):
        raise ValueError(
            "`network` must be an oat_tf network with the attributes `variant` (one of "
            f"{VARIANTS}) and `encoder`. Received: network of type {type(network).__name__} "
            f"with variant={variant!r}"
        )
    uses_film = variant in ("oat", "oat_single_bn")
    code = network.get_layer("lambda_encoder").output if uses_film else None
    clean = network.get_layer("clean_route").output if variant in ("oat", "mixture_bn") else None
    return Conditioning(
        variant,
        code=code,
        clean=clean,
        film_hidden_multiplier=film_hidden_multiplier(network.encoder) if uses_film else 1,
        fused_normalization=fused_normalization(network.encoder) if uses_film else False,
    )


def conditioned_inputs(
    image_shape: Sequence[int], variant: str, encoder: Dict[str, Any]
) -> Tuple[Dict[str, keras.KerasTensor], Conditioning]:
    """A network's symbolic inputs and the λ conditioning its normalisations share.

    Args:
        image_shape: tuple (H, W, C), checked.
        variant: str, checked.
        encoder: dict of `LambdaEncoder` arguments (`encoder_kwargs`).

    Returns:
        (`model_inputs(image_shape)`, `apply_lambda_conditioning` of their λ).
    """
    inputs = model_inputs(image_shape)
    return inputs, apply_lambda_conditioning(inputs[LAMBDA_KEY], variant, encoder)


def apply_normalization(
    x: keras.KerasTensor,
    conditioning: Conditioning,
    *,
    norm_name: str,
    film_name: Optional[str] = None,
) -> keras.KerasTensor:
    """Normalises `x` as the variant asks and, where named, modulates it with FiLM.

    "plain" and "oat_single_bn" use `BatchNormalization`, "oat" and
    "mixture_bn" use `DualBatchNormalization` routed by `conditioning.clean`. FiLM follows when
    `film_name` is given and the variant is conditioned; normalisations that
    the reference code leaves unmodulated (shortcut BNs, the last BN of a
    Wide ResNet) pass `film_name=None`.

    Args:
        x: KerasTensor [N, ..., C], channels last.
        conditioning: `Conditioning` of the network.
        norm_name: str, name of the normalisation layer.
        film_name: str or None, name of the FiLM layer; None for no FiLM.

    Returns:
        KerasTensor shaped like `x`.
    """
    modulated = film_name is not None and conditioning.use_film
    if conditioning.use_dual_bn:
        # Fused: the dual BN hands over its per-sample scale and shift and FiLM
        # applies both in one pass over the features.
        x = dual_batch_norm.DualBatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            return_scale_shift=modulated and conditioning.fused_normalization,
            name=norm_name,
        )(x, conditioning.clean)
    else:
        # Synchronized: under MirroredStrategy the batch moments are those of the
        # global batch, so a step equals the same step on one device.
        x = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True, name=norm_name
        )(x)
    if modulated:
        x = film.FiLM(hidden_multiplier=conditioning.film_hidden_multiplier, name=film_name)(
            x, conditioning.code
        )
    return x


def apply_normalization_relu(
    x: keras.KerasTensor,
    conditioning: Conditioning,
    *,
    prefix: str,
    suffix: str = "",
    relu: bool = True,
) -> keras.KerasTensor:
    """BN(-FiLM) and ReLU named after a unit: `{prefix}_bn{suffix}`, `_film`, `_relu`.

    The unit every backbone repeats after a convolution or hidden dense layer
    (`conditioning.normalize`, then the activation), made through the
    conditioning's layer kit.

    Args:
        x: KerasTensor [N, ..., C].
        conditioning: `Conditioning` of the network.
        prefix: str, the unit's prefix (e.g. "stage2_block1", "stem", "fc1").
        suffix: str, the unit's index in its block ("1", "2", ...; "" for none).
        relu: bool, end with the ReLU (False for the last unit of a residual
            branch, which the addition follows).

    Returns:
        KerasTensor shaped like `x`.
    """
    x = conditioning.normalize(
        x, norm_name=f"{prefix}_bn{suffix}", film_name=f"{prefix}_film{suffix}"
    )
    return conditioning.relu(x, name=f"{prefix}_relu{suffix}") if relu else x


def apply_logits(
    x: keras.KerasTensor, num_classes: int, *, pool: bool = False, name: str = "logits"
) -> keras.KerasTensor:
    """The classifier layer every backbone and exit ends with, in float32.

    The logits stay float32 under a mixed-precision policy, so that losses,
    attacks and serving outputs are float32 whatever the network computes in.

    Args:
        x: KerasTensor [N, C], or [N, H, W, C] with `pool`.
        num_classes: int, the number of classes K.
        pool: bool, global-average-pool `x` first (layer "avg_pool").
        name: str, the name of the dense layer.

    Returns:
        KerasTensor [N, K], float32 logits (no softmax).
    """
    if pool:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dense(num_classes, name=name, dtype="float32")(x)


def conv_padding(kernel_size: int, strides: int) -> Tuple[int, str]:
    """The padding of a convolution padded like PyTorch's `padding=kernel_size // 2`.

    Stride 1 uses "same" padding (symmetric for odd kernels). A strided
    convolution with a kernel larger than 1 gets an explicit symmetric
    zero padding of `kernel_size // 2` and "valid" padding, because Keras'
    "same" pads only the bottom/right for even inputs; the sampled positions
    then match the PyTorch reference models exactly. 1×1 convolutions are
    "valid".

    Args:
        kernel_size: int, square kernel size.
        strides: int, stride.

    Returns:
        (explicit zero padding in pixels, 0 for none; the Keras padding).
    """
    if strides > 1 and kernel_size > 1:
        return kernel_size // 2, "valid"
    if kernel_size == 1:
        return 0, "valid"
    return 0, "same"
