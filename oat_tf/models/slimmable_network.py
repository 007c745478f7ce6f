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

Subclasses describe the architecture once, in `_forward`, fetching each
sublayer with `_sublayer(name, factory)`: the constructor runs `_forward` at
full width on symbolic inputs, which creates every sublayer (as an attribute
named after the layer, so `tf.train.Checkpoint` and `.keras` saving reach it)
and builds it with its full-width shapes; later calls only look the
sublayers up. The same `_forward` serves eager and traced calls and the
functional per-width views of `width_model` (FLOPs counting, export).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

import keras

from oat_tf import config as config_lib
from oat_tf.layers import lambda_encoding
from oat_tf.layers import slimmable
from oat_tf.layers import slimmable_film
from oat_tf.layers import switchable_batch_norm
from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import saved_config

SLIMMABLE_VARIANTS = config_lib.SLIMMABLE_VARIANTS


@dataclasses.dataclass(frozen=True, eq=False)
class SlimmableConditioning:
    """The λ-derived tensors of one call, shared by every normalisation.

    Attributes:
        code: tensor [N, d], the λ code for FiLM; None for "ats".
        clean: bool tensor [N], the dual-BN route (True where λ == 0); None
            unless the variant is "oats".
    """

    code: Optional[Any] = None
    clean: Optional[Any] = None


class _WidthModels:
    """Cache of the functional per-width views (a plain object: not tracked)."""

    def __init__(self):
        self.models: Dict[float, keras.Model] = {}


class SlimmableNetwork(saved_config.SavedConfig, keras.Model):
    """Common part of the slimmable networks: conditioning, widths, views, config.

    Subclasses call `super().__init__` with the common arguments, set their
    own attributes, then call `self._build_full_width()`; they implement
    `_forward(inputs, width, training)` with `_sublayer` and `_normalize`.

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

    def _sublayer(self, name: str, factory: Callable[[], keras.layers.Layer]):
        """Returns the sublayer `name`, created by `factory()` during the build pass."""
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

    def _conditioning(self, lambdas) -> SlimmableConditioning:
        """Encodes λ once and derives the dual-BN route, as the variant needs."""
        code = clean = None
        if self.use_film:
            code = self._sublayer(
                "lambda_encoder",
                lambda: lambda_encoding.LambdaEncoder(
                    **conditioning_lib.lambda_encoder_kwargs(self.encoder), name="lambda_encoder"
                ),
            )(lambdas)
        if self.use_dual_bn:
            clean = self._sublayer(
                "clean_route", lambda: lambda_encoding.CleanRoute(name="clean_route")
            )(lambdas)
        return SlimmableConditioning(code=code, clean=clean)

    def _normalize(
        self,
        x,
        conditioning: SlimmableConditioning,
        *,
        width: float,
        training,
        norm_name: str,
        film_name: Optional[str] = None,
    ):
        """Switchable (dual) BN of `width`, then slimmable FiLM where named and used.

        Args:
            x: tensor [N, ..., C(α)].
            conditioning: `SlimmableConditioning` of the call.
            width: float, the call's width.
            training: bool or None, passed to the batch norm.
            norm_name: str, name of the switchable normalisation.
            film_name: str or None, name of the FiLM layer; None for no FiLM
                (shortcut BNs, as in the OAT networks).

        Returns:
            tensor shaped like `x`.
        """
        norm_class = (
            switchable_batch_norm.SwitchableDualBatchNormalization
            if self.use_dual_bn
            else switchable_batch_norm.SwitchableBatchNormalization
        )
        norm = self._sublayer(
            norm_name,
            lambda: norm_class(
                widths=self.widths,
                momentum=conditioning_lib.BN_MOMENTUM,
                epsilon=conditioning_lib.BN_EPSILON,
                name=norm_name,
            ),
        )
        if self.use_dual_bn:
            x = norm(x, conditioning.clean, width=width, training=training)
        else:
            x = norm(x, width=width, training=training)
        if film_name is not None and self.use_film:
            film = self._sublayer(
                film_name,
                lambda: slimmable_film.SlimmableFiLM(
                    widths=self.widths,
                    hidden_multiplier=conditioning_lib.film_hidden_multiplier(self.encoder),
                    name=film_name,
                ),
            )
            x = film(x, conditioning.code, width=width)
        return x

    def _forward(self, inputs, *, width: float, training):
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
