"""Multi-exit (RDI-Nets) networks: output names, stage views and per-exit MACs.

A multi-exit network (SPEC §3) is a functional `keras.Model` with the inputs
of every oat_tf network, `{"image": [N, H, W, C], "lambda": [N]}`, and a dict
of logits as output, `{"exit_1": [N, K], ..., "exit_M": [N, K], "final":
[N, K]}`: M side exits plus the final output. Exit index i runs over 0..M,
where M means "final".

A multi-exit model (`multi_exit_network.MultiExitNetwork`; the RDI-Nets of
`rdi_networks`) records, in the attribute `exit_feature_layers`, the names of the layers whose
outputs are the backbone features where each side exit attaches (one per side
exit, in order). The backbone between two such layers is a **stage**:

    stage 0: image            → features_1 (+ exit_1's head → exit_1 logits)
    stage i: features_i       → features_{i+1} (+ exit_{i+1}'s head)
    stage M: features_M       → final logits

`stage_views` turns a network into M + 1 callables, one per stage, built from
the network's own intermediate KerasTensors (`keras.Model([features_tensor,
lambda_input], outputs)`): the same layers and weights, so chaining them gives
exactly the network's outputs. The λ conditioning (encoder, dual-BN route) is
recomputed in each stage from the λ input, which costs nothing worth counting.
Adaptive inference (`oat_tf.export.adaptive_saved_model`) runs the stages one
after another and sends only the samples that did not exit to the next one.

`exit_macs` and `backbone_macs` count multiply-accumulates per image with
`oat_tf.models.flops.count_flops`: taking exit i costs stages 0..i-1 (where
exit i attaches after stage i-1) and every head up to exit i, since the earlier
heads ran to test their entropies.

Example:

```python
network = rdi_networks.rdi_small_cnn(variant="oat")
features = images
for view in stage_views(network):
    features, logits = view(features, lambdas)  # None after the last stage.
exit_macs(network)  # {"exit_1": ..., "exit_2": ..., "final": ...}
```
"""

from __future__ import annotations

import re
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import keras

from oat_tf.models import conditioning as conditioning_lib
from oat_tf.models import flops

FINAL_OUTPUT_NAME = "final"
EXIT_OUTPUT_PREFIX = "exit_"
# The variants a multi-exit network comes in.
MULTI_EXIT_VARIANTS = ("plain", "oat", "oat_single_bn")

_EXIT_NAME = re.compile(r"^exit_([1-9][0-9]*)$")
_STAGE_VIEWS: "weakref.WeakKeyDictionary[keras.Model, List[StageView]]" = (
    weakref.WeakKeyDictionary()
)


def exit_output_name(index: int) -> str:
    """Returns the output name of side exit `index` (1-based): "exit_1", "exit_2", ...

    Args:
        index: int >= 1.

    Returns:
        str.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 1:
        raise ValueError(f"`index` must be an int >= 1. Received: index={index!r}")
    return f"{EXIT_OUTPUT_PREFIX}{index}"


def output_names_for(num_exits: int) -> Tuple[str, ...]:
    """Returns ("exit_1", ..., "exit_M", "final") for M = `num_exits` side exits.

    Args:
        num_exits: int >= 1, the number of side exits M.

    Returns:
        Tuple of M + 1 names.
    """
    if isinstance(num_exits, bool) or not isinstance(num_exits, int) or num_exits < 1:
        raise ValueError(f"`num_exits` must be an int >= 1. Received: num_exits={num_exits!r}")
    return tuple(exit_output_name(i) for i in range(1, num_exits + 1)) + (FINAL_OUTPUT_NAME,)


def _output_dict(model) -> Optional[dict]:
    """The model's symbolic output dict, or None for anything else."""
    if not isinstance(model, keras.Model) or not getattr(model, "built", False):
        return None
    try:
        outputs = model.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    return outputs if isinstance(outputs, dict) else None


def _names_of(outputs: Optional[dict]) -> Optional[Tuple[str, ...]]:
    if not outputs:
        return None
    keys = set(outputs)
    indices = [int(m.group(1)) for m in map(_EXIT_NAME.match, keys) if m]
    if not indices:
        return None
    expected = output_names_for(len(indices))
    return expected if keys == set(expected) else None


def is_multi_exit(model) -> bool:
    """Whether `model` is a multi-exit network (output dict "exit_1", ..., "final").

    Args:
        model: anything.

    Returns:
        bool.
    """
    return _names_of(_output_dict(model)) is not None


def output_names(model: keras.Model) -> Tuple[str, ...]:
    """Returns the output names of a multi-exit network, in order: exit_1, ..., exit_M, final.

    Args:
        model: keras.Model, a built functional model whose output is a dict
            of logits keyed "exit_1", ..., "exit_M", "final" (M >= 1).

    Returns:
        Tuple of M + 1 names.

    Raises:
        ValueError: if `model` is not a multi-exit network.
    """
    outputs = _output_dict(model)
    names = _names_of(outputs)
    if names is None:
        received = sorted(outputs) if outputs else type(getattr(model, "output", None)).__name__
        raise ValueError(
            "`model` must be a multi-exit network: a built functional keras.Model whose "
            'output is a dict of logits keyed "exit_1", ..., "exit_M", "final" (M >= 1). '
            f"Received: model={getattr(model, 'name', type(model).__name__)!r} with "
            f"outputs {received}"
        )
    return names


def layer_outputs(
    model: keras.Model, layer_names: Sequence[str], argument: str
) -> List[keras.KerasTensor]:
    """The symbolic outputs of named layers of a functional model.

    Args:
        model: functional keras.Model.
        layer_names: sequence of str, layers of `model`, each called once.
        argument: str, what holds the names, for the error message.

    Returns:
        list of KerasTensor, in the order of `layer_names`.

    Raises:
        ValueError: if a name is not a layer of `model` called once.
    """
    outputs = []
    for name in layer_names:
        try:
            outputs.append(model.get_layer(name).output)
        except ValueError as error:
            raise ValueError(
                f"`{argument}` must name layers of the model called once. "
                f"Received: {name!r} in model {model.name!r} ({error})"
            ) from error
    return outputs


class StageView:
    """One stage of a multi-exit network, callable on features and λ.

    Built by `stage_views`; not meant to be constructed directly.

    Attributes:
        index: int, the stage index i in 0..M.
        output_name: str, the output this stage computes ("exit_{i+1}" or
            "final").
        is_final: bool, whether this is the last stage (no next features).
        model: keras.Model, inputs `[features_i, lambda]` (the image for
            stage 0); outputs `[features_{i+1}, logits]`, or the final logits
            for the last stage.

    Call arguments:
        features: tensor, the image [N, H, W, C] for stage 0, else the
            features returned by the previous stage.
        lambdas: tensor [N], λ per sample (ignored by a "plain" network).
        training: bool, batch statistics in the normalisations, dropout on.

    Returns:
        Tuple `(next_features, logits)`: next_features is None for the last
        stage.
    """

    def __init__(self, index: int, output_name: str, model: keras.Model, is_final: bool):
        self.index = index
        self.output_name = output_name
        self.model = model
        self.is_final = is_final

    def __call__(self, features, lambdas, training: bool = False):
        features = keras.ops.convert_to_tensor(features)
        lambdas = keras.ops.convert_to_tensor(lambdas)
        outputs = self.model([features, lambdas], training=training)
        if self.is_final:
            return None, outputs
        return outputs[0], outputs[1]

    def __repr__(self):
        return f"StageView(index={self.index}, output_name={self.output_name!r})"


def _feature_layers(model: keras.Model) -> Tuple[str, ...]:
    names = output_names(model)
    layers = getattr(model, "exit_feature_layers", None)
    if (
        not isinstance(layers, (tuple, list))
        or len(layers) != len(names) - 1
        or not all(isinstance(n, str) for n in layers)
    ):
        raise ValueError(
            "`model` must record in `exit_feature_layers` the names of the layers whose "
            f"outputs feed its {len(names) - 1} side exits, in order. Received: model="
            f"{model.name!r} with exit_feature_layers={layers!r}"
        )
    return tuple(layers)


def _feature_tensors(model: keras.Model) -> List[keras.KerasTensor]:
    """The image input, then the features where each side exit attaches."""
    features = layer_outputs(model, _feature_layers(model), "model.exit_feature_layers")
    return [model.input[conditioning_lib.IMAGE_KEY]] + features


def _sub_model(inputs, outputs, name: str, model: keras.Model) -> keras.Model:
    try:
        return keras.Model(inputs, outputs, name=name)
    except ValueError as error:
        raise ValueError(
            f"`model.exit_feature_layers` must cut {model.name!r} into stages: each stage "
            "must depend on the previous stage's features and λ only (no connection "
            f"across an exit point). Received: exit_feature_layers="
            f"{tuple(model.exit_feature_layers)!r}; building {name!r} failed with: {error}"
        ) from error


def stage_views(model: keras.Model) -> List[StageView]:
    """Returns the M + 1 stages of a multi-exit network, built once per model.

    Args:
        model: keras.Model, a multi-exit network with `exit_feature_layers`.

    Returns:
        List of M + 1 `StageView`s: stage i < M maps (features_i, λ) to
        (features_{i+1}, logits of exit i+1), stage M maps (features_M, λ) to
        (None, final logits); features_0 is the image. They share the
        network's layers and weights; chaining them gives its outputs.

    Raises:
        ValueError: if `model` is not a multi-exit network, does not record
            its exit points, or they do not cut it into stages.
    """
    cached = _STAGE_VIEWS.get(model)
    if cached is not None:
        return list(cached)
    names = output_names(model)
    outputs = model.output
    features = _feature_tensors(model)
    lambda_input = model.input[conditioning_lib.LAMBDA_KEY]
    views = []
    for index, name in enumerate(names):
        is_final = name == FINAL_OUTPUT_NAME
        stage_outputs = outputs[name] if is_final else [features[index + 1], outputs[name]]
        stage_model = _sub_model(
            [features[index], lambda_input], stage_outputs, f"{model.name}_stage{index}", model
        )
        views.append(StageView(index, name, stage_model, is_final))
    _STAGE_VIEWS[model] = views
    return list(views)


def _stage_costs(model: keras.Model) -> Tuple[List[int], List[int]]:
    """MACs per image of each backbone stage (M + 1) and of each exit head (M)."""
    names = output_names(model)
    outputs = model.output
    features = _feature_tensors(model)
    lambda_input = model.input[conditioning_lib.LAMBDA_KEY]
    stages, heads = [], []
    for index, name in enumerate(names):
        if name == FINAL_OUTPUT_NAME:
            backbone = _sub_model(
                [features[index], lambda_input], outputs[name], f"stage{index}", model
            )
            stages.append(flops.count_flops(backbone)["macs"])
            continue
        backbone = _sub_model(
            [features[index], lambda_input], features[index + 1], f"stage{index}", model
        )
        head = _sub_model(
            [features[index + 1], lambda_input], outputs[name], f"head{index + 1}", model
        )
        stages.append(flops.count_flops(backbone)["macs"])
        heads.append(flops.count_flops(head)["macs"])
    return stages, heads


def exit_macs(model: keras.Model) -> Dict[str, int]:
    """MACs per image of taking each output under early exit.

    Taking side exit i costs the backbone stages before it and the heads of
    exits 1..i (each earlier head ran, since its entropy was tested); "final"
    costs every stage and every side head. Counted with
    `oat_tf.models.flops.count_flops` (thop's convention).

    Args:
        model: keras.Model, a multi-exit network with `exit_feature_layers`.

    Returns:
        Dict output name → int MACs, in the order of `output_names(model)`.
    """
    stages, heads = _stage_costs(model)
    names = output_names(model)
    costs = {}
    for index, name in enumerate(names):
        if name == FINAL_OUTPUT_NAME:
            costs[name] = int(sum(stages) + sum(heads))
        else:
            costs[name] = int(sum(stages[: index + 1]) + sum(heads[: index + 1]))
    return costs


def backbone_macs(model: keras.Model) -> int:
    """MACs per image of the backbone alone: every stage and the final head, no side exits.

    The baseline of the FLOPs saving of early exit.

    Args:
        model: keras.Model, a multi-exit network with `exit_feature_layers`.

    Returns:
        int.
    """
    stages, _ = _stage_costs(model)
    return int(sum(stages))
