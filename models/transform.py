"""Named repairs of a user's Keras network: edit its config, rebuild it with fresh weights.

Lecture: CS231n "Training neural networks I" (activation functions, weight initialization,
batch normalization) and Karpathy 2019, "A recipe for training neural networks": when the
diagnosis names a cause in the network itself (wrong output layer, dead ReLUs, saturated
tanh units, bad init), the remedy is the same network with one thing changed.

Every transform takes a built Sequential or Functional ``keras.Model`` and returns a NEW,
uncompiled model with freshly initialized weights; the input model is never touched. The
work is done on a deep copy of ``model.get_config()`` and rebuilt with
``keras.Sequential.from_config`` / ``keras.Model.from_config``. Keras has no graph-editing
API (``keras.models.clone_model``'s ``clone_function`` maps one layer to one layer, so it
cannot insert a BatchNormalization or drop a trailing Softmax), which is why
:class:`_Graph` rewires the Functional config's inbound nodes by hand.

Vocabulary: a *kernel layer* is a Dense/Conv-like layer (one with a kernel initializer and
an ``activation`` argument; recurrent layers excluded); the *output layer* is the last
kernel layer before the model's output; every other kernel layer is *hidden*. An
activation is either a kernel layer's ``activation`` argument or a separate layer
(``Activation``, ``ReLU``, ``LeakyReLU``, ``PReLU``, ``ELU``, ``Softmax``).
Nested models (a Sequential inside a Functional model) are rebuilt as they are: their
inner layers are not edited.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import keras

from models import activations
from models.inspect import walk

KINDS = ("multiclass", "binary", "multilabel")
OUTPUT_ACTIVATION = {"multiclass": "softmax", "binary": "sigmoid", "multilabel": "sigmoid"}
KERNEL_KEYS = ("kernel_initializer", "depthwise_initializer", "pointwise_initializer")
DROPOUTS = frozenset(("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                      "GaussianDropout", "AlphaDropout"))
NORMS = frozenset(("BatchNormalization", "LayerNormalization", "GroupNormalization"))
# Layers an activation may sit behind without changing what the kernel layer's output means
# (relu commutes with max pooling; dropout, reshapes and norms are linear at inference).
PASS_THROUGH = DROPOUTS | NORMS | frozenset(
    f"{kind}{dim}" for kind in ("MaxPooling", "AveragePooling", "GlobalAveragePooling",
                                "GlobalMaxPooling", "ZeroPadding", "Cropping", "UpSampling")
    for dim in ("1D", "2D", "3D")) | frozenset(
    ("Flatten", "Reshape", "Permute", "GaussianNoise", "ActivityRegularization"))
# Activation layers by class (``Activation`` reads its argument; ``ReLU`` its slope).
ACTIVATION_LAYERS = {"LeakyReLU": "leaky_relu", "PReLU": "prelu", "ELU": "elu",
                     "Softmax": "softmax", "MaxoutActivation": "maxout"}
# He et al. 2015 init suits rectifier-like units; Glorot the symmetric, saturating ones.
RELU_FAMILY = frozenset((*activations.RECTIFIERS, "relu6", "selu", "swish", "mish", "celu",
                         "softplus", "maxout", "hard_silu", "hard_swish"))
SATURATING = frozenset(("tanh", "sigmoid", "hard_sigmoid", "hard_tanh"))
SUBCLASSED = ("model {name}: a subclassed model cannot be transformed; "
              "pass a function that builds it with the fix")


def _serialize(obj: Any) -> Any:
    return keras.saving.serialize_keras_object(obj)


def _act_name(value: Any) -> str:
    """The name of a serialized ``activation`` argument ("relu", a dict, None -> "linear")."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, dict) and isinstance(value.get("config"), str):
        return value["config"].lower()  # a function serialized as {"config": "name", ...}
    return "custom"


def _is_kernel(entry: dict) -> bool:
    cfg = entry["config"]
    return ("activation" in cfg and any(k in cfg for k in KERNEL_KEYS)
            and "recurrent_initializer" not in cfg)


def _layer_activation(entry: dict) -> str | None:
    """The activation an activation layer applies; None for any other layer."""
    cls, cfg = entry["class_name"], entry["config"]
    if cls == "Activation":
        return _act_name(cfg.get("activation"))
    if cls == "ReLU":
        return "leaky_relu" if cfg.get("negative_slope") else "relu"
    return ACTIVATION_LAYERS.get(cls)


def _histories(obj: Any) -> Iterator[list]:
    """Every ``[layer, node, tensor]`` reference (mutable) inside inbound nodes or outputs."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj["config"]["keras_history"]
            return
        for value in obj.values():
            yield from _histories(value)
    elif isinstance(obj, list | tuple):
        if len(obj) == 3 and isinstance(obj[0], str) and isinstance(obj[1], int) \
                and isinstance(obj[2], int):
            yield obj
            return
        for value in obj:
            yield from _histories(value)


class _Graph:
    """An editable deep copy of a Sequential or Functional config: layers in order, edges.

    Sequential edges are the list order; Functional edges are the ``keras_history``
    references in each layer's ``inbound_nodes`` and in ``output_layers``.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.config = copy.deepcopy(_config_of(model))
        self.sequential = isinstance(model, keras.Sequential)

    # -- reading -------------------------------------------------------------------------
    def entry(self, name: str) -> dict:
        for entry in self.config["layers"]:
            if entry["config"].get("name") == name:
                return entry
        raise KeyError(name)

    def names(self) -> list[str]:
        return [e["config"]["name"] for e in self.config["layers"]
                if e["class_name"] != "InputLayer"]

    def output_names(self) -> list[str]:
        if self.sequential:
            return self.names()[-1:]
        return list(dict.fromkeys(h[0] for h in _histories(self.config["output_layers"])))

    def successors(self, name: str) -> list[str]:
        if self.sequential:
            names = self.names()
            i = names.index(name)
            return names[i + 1:i + 2]
        return [e["name"] for e in self.config["layers"]
                if any(h[0] == name for h in _histories(e["inbound_nodes"]))]

    def predecessors(self, name: str) -> list[str]:
        if self.sequential:
            names = self.names()
            i = names.index(name)
            return names[i - 1:i] if i else []
        return list(dict.fromkeys(h[0] for h in _histories(self.entry(name)["inbound_nodes"])))

    def downstream(self, name: str) -> list[str]:
        """Every layer fed (directly or not) by ``name``, in config order."""
        seen, todo = set(), [name]
        while todo:
            for nxt in self.successors(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return [n for n in self.names() if n in seen]

    def output_kernels(self) -> list[str]:
        """The output layers: per model output, the kernel layer it comes from."""
        found = []
        for name in self.output_names():
            while name is not None and not _is_kernel(self.entry(name)):
                before = self.predecessors(name)
                name = before[0] if len(before) == 1 else None
            if name is not None and name not in found:
                found.append(name)
        if not found:  # an output made by a merge: fall back to the last kernel layer
            found = [n for n in self.names() if _is_kernel(self.entry(n))][-1:]
        return found

    def tail(self) -> set[str]:
        """The output layers and everything after them."""
        heads = self.output_kernels()
        return set(heads).union(*(self.downstream(h) for h in heads))

    def hidden_kernels(self) -> list[str]:
        tail = self.tail()
        return [n for n in self.names() if _is_kernel(self.entry(n)) and n not in tail]

    def hidden_activation_layers(self) -> list[str]:
        tail = self.tail()
        return [n for n in self.names()
                if _layer_activation(self.entry(n)) is not None and n not in tail]

    def next_step(self, name: str) -> tuple[str, str | None, list[str]]:
        """What a layer's output meets next, through PASS_THROUGH layers on a single path.

        Returns:
            ``(what, layer, passed)``: ``what`` is "activation" or "kernel" (``layer`` names
            it) or "end" (a branch, a merge, the model output or another layer).
        """
        passed, current = [], name
        while True:
            after = self.successors(current)
            if len(after) != 1 or current in self.output_names():
                return "end", None, passed
            entry = self.entry(after[0])
            if _layer_activation(entry) is not None:
                return "activation", after[0], passed
            if _is_kernel(entry):
                return "kernel", after[0], passed
            if entry["class_name"] not in PASS_THROUGH:
                return "end", None, passed
            passed.append(after[0])
            current = after[0]

    def effective_activation(self, name: str) -> str:
        """A kernel layer's nonlinearity: its ``activation`` argument or the layer after it."""
        own = _act_name(self.entry(name)["config"].get("activation"))
        if own != "linear":
            return own
        what, layer, _ = self.next_step(name)
        return _layer_activation(self.entry(layer)) if what == "activation" else "linear"

    # -- editing -------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        taken = {e["config"].get("name") for e in self.config["layers"]}
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        return name

    def new_entry(self, layer: keras.layers.Layer, like: str) -> dict:
        """A serialized fresh layer, with the dtype policy of layer ``like``."""
        entry = _serialize(layer)
        entry["config"]["dtype"] = copy.deepcopy(self.entry(like)["config"].get("dtype"))
        return entry

    def replace(self, name: str, entry: dict) -> None:
        """Swaps layer ``name`` for ``entry`` (same name and inputs)."""
        old = self.entry(name)
        old.pop("build_config", None)
        for key in ("module", "class_name", "config", "registered_name"):
            old[key] = entry.get(key)
        old["config"]["name"] = name

    def insert_after(self, name: str, entries: list[dict]) -> None:
        """Puts the chain ``entries`` between layer ``name`` and everything it fed."""
        layers = self.config["layers"]
        index = layers.index(self.entry(name)) + 1
        if self.sequential:
            layers[index:index] = entries
            return
        if len(self.entry(name)["inbound_nodes"]) > 1:
            raise ValueError(f"model {self.model.name}: layer {name} is shared (called more "
                             "than once); inserting a layer after it is not supported")
        refs = [h for e in layers for h in _histories(e["inbound_nodes"]) if h[0] == name]
        refs += [h for h in _histories(self.config["output_layers"]) if h[0] == name]
        tensor = self._tensor_config(name)
        previous = [name, 0, 0]
        for entry in entries:
            entry["name"] = entry["config"]["name"]
            entry["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__", "config": {
                **tensor, "keras_history": list(previous)}}], "kwargs": {}}]
            previous = [entry["name"], 0, 0]
        for ref in refs:
            ref[:] = previous
        layers[index:index] = entries

    def remove(self, name: str) -> None:
        """Drops a one-input layer; what it fed now reads its input."""
        layers = self.config["layers"]
        entry = self.entry(name)
        if not self.sequential:
            sources = list(_histories(entry["inbound_nodes"]))
            if len(sources) != 1:
                raise ValueError(f"model {self.model.name}: cannot remove layer {name}: it "
                                 f"has {len(sources)} inputs")
            for e in layers:
                for ref in _histories(e["inbound_nodes"]):
                    if ref[0] == name:
                        ref[:] = sources[0]
            for ref in _histories(self.config["output_layers"]):
                if ref[0] == name:
                    ref[:] = sources[0]
        layers.remove(entry)

    def _tensor_config(self, name: str) -> dict:
        """Shape and dtype of ``name``'s output, read off a reference to it.

        The shape is only a placeholder: Keras swaps in the real tensor when it rebuilds.
        """
        for e in self.config["layers"]:
            for node in e["inbound_nodes"]:
                for obj in _tensor_dicts(node):
                    if obj["config"]["keras_history"][0] == name:
                        return {k: v for k, v in obj["config"].items() if k != "keras_history"}
        return {"shape": [None], "dtype": "float32"}

    def build(self) -> keras.Model:
        """The edited model, with fresh weights (every layer rebuilt from its config)."""
        for entry in self.config["layers"]:
            entry.pop("build_config", None)  # shapes may have changed; calling rebuilds
        custom = _custom_objects(self.model)
        if self.sequential:
            return keras.Sequential.from_config(self.config, custom_objects=custom)
        return keras.Model.from_config(self.config, custom_objects=custom)


def _tensor_dicts(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj
            return
        for value in obj.values():
            yield from _tensor_dicts(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _tensor_dicts(value)


def _config_of(model: keras.Model) -> dict:
    """The model's config; ValueError for a subclassed or unbuilt model."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"expected a keras.Model, got {type(model).__name__}")
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "layers" not in config:
        raise ValueError(SUBCLASSED.format(name=model.name))
    if not model.built:
        raise ValueError(f"model {model.name} is not built: call it on a batch or build it "
                         "with an input shape first")
    return config


def _custom_objects(model: keras.Model) -> dict[str, Any]:
    """The model's non-Keras layer classes and activation functions, for ``from_config``."""
    found: dict[str, Any] = {}
    for layer in walk(model):
        cls = type(layer)
        if cls.__module__.split(".")[0] != "keras":
            found[cls.__name__] = cls
            found[keras.saving.get_registered_name(cls)] = cls
        fn = getattr(layer, "activation", None)
        if callable(fn) and not isinstance(fn, keras.layers.Layer) \
                and getattr(fn, "__module__", "keras").split(".")[0] != "keras":
            found[getattr(fn, "__name__", "activation")] = fn
    return found


def _initializer(name: str) -> dict:
    return _serialize(keras.initializers.get(name))


def _set_init(cfg: dict, kernel: str) -> None:
    """Sets every kernel initializer in a layer config to ``kernel``, the bias to zeros."""
    for key in KERNEL_KEYS:
        if key in cfg:
            cfg[key] = _initializer(kernel)
    if "bias_initializer" in cfg:
        cfg["bias_initializer"] = _initializer("zeros")


def _activation_entry(graph: _Graph, value: Any, name: str, like: str) -> dict:
    """An ``Activation`` layer entry applying the serialized activation ``value``."""
    entry = graph.new_entry(keras.layers.Activation("linear", name=name), like)
    entry["config"]["activation"] = copy.deepcopy(value)
    return entry


def fix_output(model: keras.Model, kind: str, num_classes: int | None = None) -> keras.Model:
    """Gives the output layer the units and activation that the task's loss expects.

    Lecture: CS231n "Linear classification" (softmax for one of C classes) and the binary /
    multi-label case (one sigmoid per label). Any activation layer after the output layer
    (a Softmax layer, ``Activation("softmax")`` after ``Dense(1)``) is removed.

    Args:
        model: a built Sequential or Functional model with one output.
        kind: "multiclass" (num_classes units, softmax), "binary" (1 unit, sigmoid) or
            "multilabel" (num_classes units, sigmoid).
        num_classes: the number of classes or labels (ignored for "binary").

    Returns:
        A new uncompiled model with fresh weights.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    units = 1 if kind == "binary" else num_classes
    least = 2 if kind == "multiclass" else 1
    if not isinstance(units, int) or units < least:
        raise ValueError(f"fix_output({kind!r}) needs num_classes >= {least}; got {num_classes}")
    graph = _Graph(model)
    if len(graph.output_names()) != 1:
        raise ValueError(f"model {model.name}: fix_output needs a model with one output; it "
                         f"has {len(graph.output_names())}")
    heads = graph.output_kernels()
    if not heads:
        raise ValueError(f"model {model.name} has no Dense/Conv output layer to fix")
    head = heads[0]
    for name in graph.downstream(head):
        if _layer_activation(graph.entry(name)) is not None:
            graph.remove(name)
    cfg = graph.entry(head)["config"]
    key = "units" if "units" in cfg else "filters" if "filters" in cfg else None
    if key is None:
        raise ValueError(f"model {model.name}: cannot set the width of output layer {head}")
    cfg[key] = units
    act = OUTPUT_ACTIVATION[kind]
    if graph.output_names() == [head]:
        cfg["activation"] = act
    else:  # e.g. Conv -> GlobalAveragePooling: the activation goes after the pooling
        cfg["activation"] = "linear"
        last = graph.output_names()[0]
        graph.insert_after(last, [_activation_entry(graph, act, graph.unique(act), head)])
    return graph.build()


def leaky_relu(model: keras.Model, negative_slope: float = 0.1) -> keras.Model:
    """Turns every hidden ReLU into a leaky ReLU and zeroes the hidden biases.

    Lecture: CS231n "Activation functions": a ReLU unit whose input is always negative is
    dead (zero gradient); Leaky ReLU, max(αx, x), keeps a small gradient. A large negative
    bias initializer is a common cause, hence the zero biases.

    Args:
        model: a built Sequential or Functional model.
        negative_slope: α, the slope for negative inputs.

    Returns:
        A new uncompiled model with fresh weights.
    """
    if not 0 < negative_slope < 1:
        raise ValueError(f"negative_slope must be in (0, 1); got {negative_slope}")
    graph = _Graph(model)
    act_layers = graph.hidden_activation_layers()
    for name in graph.hidden_kernels():
        cfg = graph.entry(name)["config"]
        if "bias_initializer" in cfg:
            cfg["bias_initializer"] = _initializer("zeros")
        if _act_name(cfg["activation"]) == "relu":
            cfg["activation"] = "linear"
            leaky = keras.layers.LeakyReLU(negative_slope=negative_slope,
                                           name=graph.unique(f"{name}_leaky_relu"))
            graph.insert_after(name, [graph.new_entry(leaky, name)])
    for name in act_layers:
        if _layer_activation(graph.entry(name)) == "relu":
            leaky = keras.layers.LeakyReLU(negative_slope=negative_slope, name=name)
            graph.replace(name, graph.new_entry(leaky, name))
    return graph.build()


def reinitialize(model: keras.Model) -> keras.Model:
    """He normal kernels before ReLU-like units, Glorot uniform elsewhere; zero biases.

    Lecture: CS231n "Weight initialization": Xavier/Glorot keeps the activations' variance
    for tanh-like units; ReLU halves it, so He et al. 2015 double it (std = sqrt(2 / fan_in)).

    Args:
        model: a built Sequential or Functional model.

    Returns:
        A new uncompiled model with fresh weights.
    """
    graph = _Graph(model)
    for name in graph.names():
        if _is_kernel(graph.entry(name)):
            relu_like = graph.effective_activation(name) in RELU_FAMILY
            _set_init(graph.entry(name)["config"], "he_normal" if relu_like else "glorot_uniform")
    return graph.build()


def batchnorm(model: keras.Model) -> keras.Model:
    """Inserts BatchNormalization after each hidden Dense/Conv, before its nonlinearity.

    Lecture: CS231n "Batch normalization" (Ioffe & Szegedy 2015): usually inserted after
    fully connected or convolutional layers and before the nonlinearity. ``Dense(relu)``
    becomes ``Dense`` -> ``BatchNormalization`` -> ``Activation(relu)``; a layer already
    followed by a BatchNormalization is left alone.

    Args:
        model: a built Sequential or Functional model (branches are fine; a shared layer,
            called more than once, raises ValueError).

    Returns:
        A new uncompiled model with fresh weights.
    """
    graph = _Graph(model)
    for name in graph.hidden_kernels():
        after = graph.successors(name)
        if len(after) == 1 and graph.entry(after[0])["class_name"] == "BatchNormalization":
            continue
        cfg = graph.entry(name)["config"]
        axis = 1 if cfg.get("data_format") == "channels_first" else -1
        norm = keras.layers.BatchNormalization(axis=axis, name=graph.unique(f"{name}_bn"))
        chain = [graph.new_entry(norm, name)]
        if _act_name(cfg["activation"]) != "linear":
            chain.append(_activation_entry(graph, cfg["activation"],
                                           graph.unique(f"{name}_act"), name))
            cfg["activation"] = "linear"
        graph.insert_after(name, chain)
    return graph.build()


def relu(model: keras.Model) -> keras.Model:
    """Turns hidden tanh/sigmoid units into ReLUs, with He normal kernels and zero biases.

    Lecture: CS231n "Activation functions": sigmoid and tanh saturate and kill gradients
    (sigmoid is not zero-centred either); "use ReLU", initialized as He et al. 2015.

    Args:
        model: a built Sequential or Functional model.

    Returns:
        A new uncompiled model with fresh weights.
    """
    graph = _Graph(model)
    act_layers = graph.hidden_activation_layers()
    for name in graph.hidden_kernels():
        if graph.effective_activation(name) in SATURATING:
            _set_init(graph.entry(name)["config"], "he_normal")
        cfg = graph.entry(name)["config"]
        if _act_name(cfg["activation"]) in SATURATING:
            cfg["activation"] = "relu"
    for name in act_layers:
        if _layer_activation(graph.entry(name)) in SATURATING:
            unit = keras.layers.Activation("relu", name=name)
            graph.replace(name, graph.new_entry(unit, name))
    return graph.build()


def add_activations(model: keras.Model, activation: str = "relu") -> keras.Model:
    """Puts a nonlinearity between stacked Dense/Conv layers that have none.

    Lecture: CS231n "Neural networks" (a stack of linear layers is one linear layer: without
    a nonlinearity in between, depth adds nothing). A hidden linear layer followed by another
    kernel layer (directly or through Dropout/Flatten/pooling/norms) gets ``activation``:
    as its ``activation`` argument, or as an Activation layer after a normalization layer.

    Args:
        model: a built Sequential or Functional model.
        activation: any ``keras.activations`` name.

    Returns:
        A new uncompiled model with fresh weights.
    """
    value = _serialize(keras.activations.get(activation))
    graph = _Graph(model)
    for name in graph.hidden_kernels():
        cfg = graph.entry(name)["config"]
        what, _, passed = graph.next_step(name)
        if _act_name(cfg["activation"]) != "linear" or what != "kernel":
            continue
        norms = [p for p in passed if graph.entry(p)["class_name"] in NORMS]
        if norms:  # after the norm, as batchnorm() places it
            act = _activation_entry(graph, value, graph.unique(f"{name}_act"), name)
            graph.insert_after(norms[-1], [act])
        else:
            cfg["activation"] = copy.deepcopy(value)
    return graph.build()


def cap_dropout(model: keras.Model, max_rate: float = 0.5) -> keras.Model:
    """Lowers every Dropout (and SpatialDropout) rate above ``max_rate`` to ``max_rate``.

    Lecture: CS231n "Regularization: dropout" (p = 0.5 is the usual choice; much higher
    drops so much signal that the network underfits).

    Args:
        model: a built Sequential or Functional model.
        max_rate: the highest rate kept, in [0, 1).

    Returns:
        A new uncompiled model with fresh weights.
    """
    if not 0 <= max_rate < 1:
        raise ValueError(f"max_rate must be in [0, 1); got {max_rate}")
    graph = _Graph(model)
    for name in graph.names():
        entry = graph.entry(name)
        if entry["class_name"] in DROPOUTS and entry["config"].get("rate", 0) > max_rate:
            entry["config"]["rate"] = max_rate
    return graph.build()


TRANSFORMS: dict[str, Callable[..., keras.Model]] = {
    "fix_output": fix_output,
    "leaky_relu": leaky_relu,
    "reinitialize": reinitialize,
    "batchnorm": batchnorm,
    "relu": relu,
    "add_activations": add_activations,
    "cap_dropout": cap_dropout,
}


def _get(name: str) -> Callable[..., keras.Model]:
    if name not in TRANSFORMS:
        raise ValueError(f"Unknown transform {name!r}; valid names: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]


def apply(name: str, model: keras.Model, **kwargs: Any) -> keras.Model:
    """Runs the transform ``name`` (a key of TRANSFORMS) on ``model``.

    Args:
        name: the transform's name; an unknown one raises ValueError listing the names.
        model: a built Sequential or Functional model.
        **kwargs: the transform's own arguments (``kind``, ``num_classes`` for fix_output).

    Returns:
        A new uncompiled model with fresh weights.
    """
    return _get(name)(model, **kwargs)


def describe(name: str) -> str:
    """One line on what the transform ``name`` does (its docstring's first line)."""
    return (_get(name).__doc__ or name).strip().splitlines()[0]


def changed_layers(before: keras.Model, after: keras.Model) -> list[str]:
    """Names of the layers a transform changed: "+name" added, "-name" removed, "name" edited.

    Args:
        before: the model given to the transform.
        after: the model it returned.

    Returns:
        The names, in the order of ``after``'s layers, then the removed ones.
    """
    old = {layer.name: layer for layer in before.layers}
    new = {layer.name: layer for layer in after.layers}
    out = []
    for name, layer in new.items():
        if name not in old:
            out.append(f"+{name}")
        elif type(layer) is not type(old[name]) or layer.get_config() != old[name].get_config():
            out.append(name)
    return out + [f"-{name}" for name in old if name not in new]
