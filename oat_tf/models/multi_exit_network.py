"""A multi-exit network: any backbone, side exits tapped from its named features.

`MultiExitNetwork(backbone, exits)` takes a built oat_tf network (SmallCNN,
ResNet, WideResNet, MobileNetV2; any variant that a multi-exit network comes
in) and a list of `exit_branch.ExitBranch`es. Each branch reads the output of
a named backbone layer and ends in logits; the network's output is the dict
`{"exit_1", ..., "exit_M", "final"}` of `oat_tf.models.multi_exit`, with the
backbone's logits as "final".

The network is the backbone's own graph plus the branches: the backbone's
layers, names and connections stay as they are (their checkpoint keys too),
and the branches are normalised and modulated like the backbone, reading the
same λ code and dual-BN route (`conditioning.conditioning_of`). The layouts
of the RDI-Nets paper are in `oat_tf.models.rdi_networks`.

Example:

```python
backbone = SmallCNN(variant="oat", filters=(4, 8), hidden_units=16)
network = MultiExitNetwork(backbone, [ExitBranch("block2_relu1", hidden_units=(16,),
                                                 use_batch_norm=True)])
outputs = network({"image": images, "lambda": lambdas})  # {"exit_1", "final"}
```
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import exit_branch
from oat_tf.models import multi_exit


def _checked_exits(exits: Any) -> Tuple[exit_branch.ExitBranch, ...]:
    """`exits` as a non-empty tuple of `ExitBranch` (configs are rebuilt)."""
    if isinstance(exits, (str, bytes, Mapping)) or not isinstance(exits, Sequence) or not exits:
        raise ValueError(
            "`exits` must be a non-empty sequence of `ExitBranch` (or their configs). "
            f"Received: exits={exits!r}"
        )
    return tuple(
        branch if isinstance(branch, exit_branch.ExitBranch)
        else exit_branch.ExitBranch.from_config(branch)
        for branch in exits
    )


def _checked_backbone(backbone: Any) -> keras.Model:
    """A built single-output oat_tf network of a multi-exit variant."""
    if isinstance(backbone, Mapping):
        backbone = keras.saving.deserialize_keras_object(dict(backbone))
    outputs = getattr(backbone, "outputs", None) if isinstance(backbone, keras.Model) else None
    if not outputs or len(outputs) != 1 or not hasattr(backbone, "variant"):
        raise ValueError(
            "`backbone` must be a functional oat_tf network (SmallCNN, ResNet, WideResNet, "
            "MobileNetV2, ...) with one logits output. Received: backbone of type "
            f"{type(backbone).__name__}"
        )
    conditioning_lib.check_variant(backbone.variant, multi_exit.MULTI_EXIT_VARIANTS)
    return backbone


def _build_exit(
    branch: exit_branch.ExitBranch,
    features: keras.KerasTensor,
    conditioning: conditioning_lib.Conditioning,
    *,
    index: int,
    backbone: keras.Model,
) -> keras.KerasTensor:
    """Exit `index`'s logits; a map too small for it is reported against `image_shape`."""
    name = f"exit{index}"
    try:
        return branch.apply(
            features, conditioning, num_classes=backbone.num_classes, name=name
        )
    except exit_branch.FeaturesTooSmallError as error:
        raise ValueError(
            f"`image_shape` is too small for exit {index}: the output of "
            f"{branch.feature_layer!r} is {tuple(features.shape[1:])} ({error}). "
            f"Received: image_shape={tuple(backbone.image_shape)!r}"
        ) from error


@keras.saving.register_keras_serializable(package="oat_tf")
class MultiExitNetwork(keras.Model):
    """A backbone with side exits; inputs `{"image", "lambda"}`, a dict of logits out.

    Layer names: the backbone's, then exit i's (`exit{i}_...`,
    `exit_branch.apply_exit_branch`).

    Args:
        backbone: a built oat_tf network whose variant is one of
            `multi_exit.MULTI_EXIT_VARIANTS`, or its `keras.saving`
            serialisation.
        exits: non-empty sequence of `exit_branch.ExitBranch` (or their
            configs), in exit order; exit i reads `exits[i - 1].feature_layer`.
        **kwargs: `keras.Model` keyword arguments (`name`, `trainable`);
            the name defaults to "rdi_" + the backbone's name.

    Call arguments:
        inputs: dict with "image" [N, H, W, C] floats in [0, 1] and "lambda"
            [N] floats.
        training: bool, batch statistics in the normalisations.

    Returns:
        Dict of logits [N, num_classes] (no softmax): "exit_1", ...,
        "exit_M", "final".

    Attributes:
        exits: tuple of `ExitBranch`.
        exit_feature_layers: tuple of str, the layers the exits read, in
            order (`multi_exit.stage_views`).
        num_exits: int, M.
        variant, encoder, num_classes, image_shape: the backbone's.

    Raises:
        ValueError: for a backbone of another kind or variant, a malformed
            branch, a feature layer the backbone does not have, or features
            too small for a branch (naming `image_shape`).
    """

    def __init__(
        self,
        backbone: Union[keras.Model, Mapping[str, Any]],
        exits: Sequence[Union[exit_branch.ExitBranch, Mapping[str, Any]]],
        **kwargs,
    ):
        # === Validation ===
        branches = _checked_exits(exits)
        backbone = _checked_backbone(backbone)
        if kwargs.get("name") is None:
            kwargs["name"] = f"rdi_{backbone.name}"

        # === Functional Model ===
        feature_layers = tuple(branch.feature_layer for branch in branches)
        features = multi_exit.layer_outputs(backbone, feature_layers, "exits[].feature_layer")
        conditioning = conditioning_lib.conditioning_of(backbone)
        outputs = {
            multi_exit.exit_output_name(index): _build_exit(
                branch, feature, conditioning, index=index, backbone=backbone
            )
            for index, (branch, feature) in enumerate(zip(branches, features), start=1)
        }
        outputs[multi_exit.FINAL_OUTPUT_NAME] = backbone.output
        super().__init__(inputs=backbone.input, outputs=outputs, **kwargs)

        # === Attributes ===
        self.backbone_config: Dict[str, Any] = keras.saving.serialize_keras_object(backbone)
        self.exits = branches
        self.exit_feature_layers = feature_layers
        self.num_exits = len(branches)
        for key in ("variant", "encoder", "num_classes", "image_shape"):
            setattr(self, key, getattr(backbone, key))

    def get_config(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_config,
            "exits": [branch.get_config() for branch in self.exits],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MultiExitNetwork":
        return cls(**config)
