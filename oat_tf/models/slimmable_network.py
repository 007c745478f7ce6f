"""Base of the slimmable oat_tf networks (OATS, PGD-ATS): the width is a call argument.

A slimmable network holds one set of full-width weights and runs at any width
α of its list (default 0.5, 0.75, 1.0) by keeping the first α·C channels of
every layer (`oat_tf.layers.slimmable`). The width is a static Python float
passed with each call, never a mutated attribute:

```python
network = SlimmableSmallCNN(variant="oats")
logits = network({"image": x, "lambda": lam}, training=False, width=0.5)
half = network.width_model(0.5)   # functional keras.Model of width 0.5, same weights
```

Variants (`ModelConfig.variant`):

- `"oats"`: OATS. λ is encoded once (`LambdaEncoder`) and routed once
  (`CleanRoute`); every normalisation is a `SwitchableDualBatchNormalization`
  (clean and adversarial statistics for each width: 3 widths → 6 BNs per BN of
  the backbone), followed by a `SlimmableFiLM` where the OAT networks have FiLM.
- `"oats_single_bn"`: as `"oats"` with `SwitchableBatchNormalization` (one BN
  per width; the "OATS with normal S-BN" ablation of the paper's Fig. 9).
- `"ats"`: the PGD-ATS baseline, a slimmable network without conditioning:
  `SwitchableBatchNormalization`, no FiLM, λ accepted and ignored (trained
  with a fixed λ).

Subclasses do not describe their architecture again: `_forward` runs the
backbone's one graph function (`small_cnn.apply_small_cnn`,
`resnet.apply_resnet`) with a `SlimmableConditioning`, the slimmable layer
kit. Its `conv`, `dense`, `normalize`, ... fetch each sublayer by name
(`sublayer(name, factory)`) and run it at the call's width. The constructor
runs `_forward` at full width on symbolic inputs, which creates every sublayer
(as an attribute named after the layer, so `tf.train.Checkpoint` and `.keras`
saving reach it) and builds it with its full-width shapes; later calls only
look the sublayers up. The same `_forward` serves eager and traced calls and
the functional per-width views of `width_model` (FLOPs counting, export).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

import keras

from oat_tf import config as config_lib
from oat_tf.layers import lambda_encoding
from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_conv
from oat_tf.layers import slimmable_dense
from oat_tf.layers import slimmable_film
from oat_tf.layers import switchable_batch_norm
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import saved_config

SLIMMABLE_VARIANTS = config_lib.SLIMMABLE_VARIANTS


# The non-slimmable variant whose normalisations each slimmable variant has.
CONDITIONING_VARIANT = {"oats": "oat", "oats_single_bn": "oat_single_bn", "ats": "plain"}


def flat_dense_initializer(spatial_size: int, channels: int, units: int):
    """Glorot-uniform init of a dense layer on H·W·C features, for a kernel [H, W, C, U].

    Keras' Glorot for a convolution counts the spatial size in both fans; this
    `VarianceScaling` gives the uniform limit sqrt(6 / (H·W·C + U)) of a
    `Dense` layer on the flattened features (`SmallCNN`'s fc1).

    Args:
        spatial_size: int, H·W of the feature map.
        channels: int, C.
        units: int, U.

    Returns:
        keras.initializers.VarianceScaling.
    """
    fan_in = spatial_size * channels
    return keras.initializers.VarianceScaling(
        scale=2.0 * fan_in / (fan_in + units), mode="fan_in", distribution="uniform"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class SlimmableConditioning(conditioning_lib.Conditioning):
    """The λ-derived tensors of one call of a slimmable network, and its layer kit.

    The graph functions of the backbones make every layer through their
    conditioning (`Conditioning.conv`, `dense`, `normalize`, ...). This one
    fetches the network's shared slimmable layers instead of adding new ones
    (creating them on the constructor's full-width pass) and runs them at
    `width`: `SlimmableConv2D` and `SlimmableDense` keep the first ⌈α·C⌉
    channels, every normalisation is a switchable (dual) BN followed by a
    `SlimmableFiLM` where the OAT networks have FiLM. The image is never
    slimmed, and neither are the logits.

    Attributes:
        network: the `SlimmableNetwork` whose sublayers these are.
        width: float, the call's width α.
        training: bool or None, the call's training flag.
        image: the call's image input (the one tensor a convolution reads
            unslimmed).
    """

    network: Any = None
    width: float = slimmable.FULL_WIDTH
    training: Any = None
    image: Any = None

    def layer(self, name: str, factory: Callable[[], keras.layers.Layer]) -> keras.layers.Layer:
        return self.network.sublayer(name, factory)

    def conv(self, x, filters, kernel_size, strides=1, *, name, use_bias=False, padding=None):
        slim_inputs = x is not self.image
        if padding is None:
            x, padding = self.pad_like_pytorch(x, kernel_size, strides, name=name)
        return self.layer(
            name,
            lambda: slimmable_conv.SlimmableConv2D(
                filters,
                kernel_size,
                widths=self.network.widths,
                slim_inputs=slim_inputs,
                strides=strides,
                padding=padding,
                use_bias=use_bias,
                kernel_initializer="he_normal",
                name=name,
            ),
        )(x, width=self.width)

    def dense(self, x, units, *, name, use_bias=True):
        return self.layer(
            name,
            lambda: slimmable_dense.SlimmableDense(
                units, widths=self.network.widths, use_bias=use_bias, name=name
            ),
        )(x, width=self.width)

    def flatten_dense(self, x, units, *, name, use_bias=True):
        """A `SlimmableConv2D` whose kernel covers the whole map, then "<name>_flatten".

        It computes exactly `Dense` on the flattened features (the same kernel
        reshaped to [H·W·C, U]), and slicing its input channels keeps the
        first α·C channels at every spatial position, which the rows of a
        flattened dense kernel would not.
        """
        height, width_px, channels = (int(d) for d in x.shape[1:])
        x = self.layer(
            name,
            lambda: slimmable_conv.SlimmableConv2D(
                units,
                (height, width_px),
                widths=self.network.widths,
                padding="valid",
                use_bias=use_bias,
                kernel_initializer=flat_dense_initializer(height * width_px, channels, units),
                name=name,
            ),
        )(x, width=self.width)
        return self.layer(f"{name}_flatten", lambda: keras.layers.Flatten(name=f"{name}_flatten"))(x)

    def dropout(self, x, rate, *, seed, name):
        return self.layer(
            name, lambda: keras.layers.Dropout(rate, seed=seed, name=name)
        )(x, training=self.training)

    def normalize(self, x, *, norm_name, film_name=None):
        """The switchable (dual) BN of the width, then slimmable FiLM where named and used."""
        norm_class = (
            switchable_batch_norm.SwitchableDualBatchNormalization
            if self.use_dual_bn
            else switchable_batch_norm.SwitchableBatchNormalization
        )
        norm = self.layer(
            norm_name,
            lambda: norm_class(
                widths=self.network.widths,
                momentum=conditioning_lib.BN_MOMENTUM,
                epsilon=conditioning_lib.BN_EPSILON,
                name=norm_name,
            ),
        )
        if self.use_dual_bn:
            x = norm(x, self.clean, width=self.width, training=self.training)
        else:
            x = norm(x, width=self.width, training=self.training)
        if film_name is not None and self.use_film:
            film = self.layer(
                film_name,
                lambda: slimmable_film.SlimmableFiLM(
                    widths=self.network.widths,
                    hidden_multiplier=self.film_hidden_multiplier,
                    name=film_name,
                ),
            )
            x = film(x, self.code, width=self.width)
        return x

    def logits(self, x, num_classes, *, pool=False):
        if pool:
            x = self.layer(
                "avg_pool", lambda: keras.layers.GlobalAveragePooling2D(name="avg_pool")
            )(x)
        return self.layer(
            "logits",
            lambda: slimmable_dense.SlimmableDense(
                num_classes,
                widths=self.network.widths,
                slim_outputs=False,
                name="logits",
                dtype="float32",
            ),
        )(x, width=self.width)


class _WidthModels:
    """Cache of the functional per-width views (a plain object: not tracked)."""

    def __init__(self):
        self.models: Dict[float, keras.Model] = {}


class SlimmableNetwork(saved_config.SavedConfig, keras.Model):
    """Common part of the slimmable networks: conditioning, widths, views, config.

    Subclasses call `super().__init__` with the common arguments, set their
    own attributes, then call `self._build_full_width()`; they implement
    `_forward(inputs, width, training)` by running their backbone's graph
    function with `self._conditioning(inputs, width=..., training=...)`.

    Args:
        num_classes: int, number of logits.
        image_shape: tuple (H, W, C), at least `min_image_size` high and wide.
        variant: str, one of `SLIMMABLE_VARIANTS`.
        encoder: None, dict of `LambdaEncoder` arguments or `EncoderConfig`
            (ignored by "ats").
        widths: sequence of float in (0, 1] containing 1.0.
        min_image_size: int, the smallest height and width the subclass's
            network takes.
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`).

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations (of this width
            only), dropout on.
        width: Python float from `widths` (keyword only), default 1.0.

    Returns:
        Logits [N, num_classes] (no softmax) of the width-α sub-network.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        image_shape: Sequence[int],
        variant: str,
        encoder: Optional[Any],
        widths: Sequence[float],
        min_image_size: int,
        **kwargs,
    ):
        common = conditioning_lib.check_network_arguments(
            num_classes,
            image_shape,
            variant,
            encoder,
            min_size=min_image_size,
            variants=SLIMMABLE_VARIANTS,
        )
        checked_widths = slimmable.check_widths(widths)
        super().__init__(**kwargs)
        self.save_config(**common, widths=checked_widths)
        self._width_models = _WidthModels()
        self._sublayers_frozen = False

    @property
    def use_film(self) -> bool:
        """Whether FiLM (and the λ encoder) follow the normalisations."""
        return self.variant != "ats"

    @property
    def use_dual_bn(self) -> bool:
        """Whether normalisations are `SwitchableDualBatchNormalization`."""
        return self.variant == "oats"

    def sublayer(self, name: str, factory: Callable[[], keras.layers.Layer]):
        """The sublayer `name`, created by `factory()` during the full-width build pass.

        The slimmable layer kit (`SlimmableConditioning`) fetches every layer
        through it; after the build pass an unknown name is an error.

        Args:
            name: str, the layer's name, also its attribute name.
            factory: callable making the layer, named `name`.

        Returns:
            keras.layers.Layer.

        Raises:
            ValueError: `name` clashes with a non-layer attribute, is unknown
                after the build pass, or the factory names its layer otherwise.
        """
        layer = self.__dict__.get(name)
        if layer is None:
            # Keras' attribute tracking may keep attributes outside __dict__.
            layer = getattr(self, name, None)
        if layer is not None:
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(
                    f"Sublayer name {name!r} clashes with an attribute of "
                    f"{type(self).__name__}. Expected a layer name that is not an attribute."
                )
            return layer
        if self._sublayers_frozen:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no sublayer {name!r}: every "
                "sublayer is created by the full-width pass of the constructor."
            )
        layer = factory()
        if layer.name != name:
            raise ValueError(
                f"The factory of sublayer {name!r} made a layer named {layer.name!r}. "
                "Expected the same name."
            )
        setattr(self, name, layer)
        return layer

    def _conditioning(self, inputs, *, width: float, training) -> SlimmableConditioning:
        """The call's layer kit: λ encoded once and routed as the variant needs.

        Args:
            inputs: dict with "image" and "lambda".
            width: float, the call's width.
            training: bool or None, the call's training flag.

        Returns:
            A `SlimmableConditioning` for the backbone's graph function.
        """
        lambdas = inputs[conditioning_lib.LAMBDA_KEY]
        code = clean = None
        if self.use_film:
            code = self.sublayer(
                "lambda_encoder",
                lambda: lambda_encoding.LambdaEncoder(
                    **conditioning_lib.lambda_encoder_kwargs(self.encoder), name="lambda_encoder"
                ),
            )(lambdas)
        if self.use_dual_bn:
            clean = self.sublayer(
                "clean_route", lambda: lambda_encoding.CleanRoute(name="clean_route")
            )(lambdas)
        return SlimmableConditioning(
            CONDITIONING_VARIANT[self.variant],
            code=code,
            clean=clean,
            film_hidden_multiplier=conditioning_lib.film_hidden_multiplier(self.encoder),
            network=self,
            width=width,
            training=training,
            image=inputs[conditioning_lib.IMAGE_KEY],
        )

    def _forward(self, inputs, *, width: float, training):
        """The backbone's graph function run with `self._conditioning(...)`: the logits."""
        raise NotImplementedError

    def _build_full_width(self) -> None:
        """Creates and builds every sublayer with a symbolic full-width pass."""
        self.width_model(slimmable.FULL_WIDTH)
        self._sublayers_frozen = True
        self.built = True

    def call(self, inputs, training=None, width=None):
        width = slimmable.check_width(width, self.widths)
        return self._forward(inputs, width=width, training=training)

    def width_model(self, width: float) -> keras.Model:
        """Returns the width-α sub-network as a functional `keras.Model`.

        The view shares every layer (and so every weight and moving
        statistic) with this network: `view(inputs, training=t)` equals
        `network(inputs, training=t, width=width)`. It takes the same dict of
        inputs, so attacks, evaluation, FLOPs counting and export use it like
        any oat_tf network. Views are cached. (A shared layer's `.output`
        is that of its first call, at full width: read a view's own
        intermediate tensors from its nodes.)

        Args:
            width: float from `widths`.

        Returns:
            keras.Model named `<name>_width_<α>`.
        """
        width = slimmable.check_width(width, self.widths)
        cached = self._width_models.models.get(width)
        if cached is None:
            inputs = conditioning_lib.model_inputs(self.image_shape)
            outputs = self._forward(inputs, width=width, training=None)
            cached = keras.Model(inputs=inputs, outputs=outputs, name=f"{self.name}_width_{width}")
            self._width_models.models[width] = cached
        return cached
