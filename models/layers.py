"""The layers Keras lacks: maxout, weight normalization and a left-right flip.

* ``Maxout(units, pieces)``: Goodfellow et al. 2013, "Maxout Networks" (lecture: activation
  functions, "Maxout neuron"). A Dense layer with ``units * pieces`` outputs followed by the max
  over each unit's ``pieces``; it holds ``pieces`` times the parameters of ``Dense(units)``.
* ``MaxoutActivation(pieces)``: the max half of maxout on its own, so the builders can put a
  norm between the (widened) Dense/Conv and the max. ``Dense(units * pieces)`` followed by
  ``MaxoutActivation(pieces)`` computes exactly ``Maxout(units, pieces)``.
* ``WeightNormalization(layer, data_init=False)``: Salimans & Kingma 2016, "Weight
  Normalization". Wraps a Dense or ConvND and uses ``w = g * v / ||v||`` with one ``g`` and one
  norm per output unit.
* ``FlipLeftRight()``: mirrors NHWC images left to right, the flipped views of ten-crop
  averaging (Krizhevsky et al. 2012, AlexNet) inside an exported model (``recipes.export``);
  Keras's ``RandomFlip`` flips only at random and only while training.

Every layer is registered under package ``babysit`` and round-trips through ``get_config``, so
a saved ``.keras`` model reloads with ``keras.saving.load_model(path)`` in safe mode.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def _max_over_pieces(x, pieces: int):
    # (..., units * pieces) -> (..., units, pieces) -> (..., units): unit j owns the contiguous
    # slice [j * pieces, (j + 1) * pieces) of the last axis.
    shape = ops.shape(x)
    x = ops.reshape(x, (-1, *shape[1:-1], shape[-1] // pieces, pieces))
    return ops.max(x, axis=-1)


@keras.saving.register_keras_serializable(package="babysit")
class MaxoutActivation(keras.layers.Layer):
    """Max over groups of ``pieces`` consecutive features of the last axis (maxout's max).

    Goodfellow et al. 2013, "Maxout Networks". Input ``(..., units * pieces)``, output
    ``(..., units)``; the last axis must be divisible by ``pieces``.
    """

    def __init__(self, pieces: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(pieces) < 1:
            raise ValueError(f"MaxoutActivation: pieces must be >= 1, got {pieces!r}")
        self.pieces = int(pieces)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % self.pieces:
            raise ValueError(
                f"MaxoutActivation: last axis {input_shape[-1]} is not divisible by "
                f"pieces={self.pieces}"
            )

    def call(self, inputs):
        return _max_over_pieces(inputs, self.pieces)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] // self.pieces,)

    def get_config(self):
        return {**super().get_config(), "pieces": self.pieces}


@keras.saving.register_keras_serializable(package="babysit")
class Maxout(keras.layers.Layer):
    """A maxout layer: ``units`` outputs, each the max of ``pieces`` affine functions.

    Goodfellow et al. 2013, "Maxout Networks"; lecture slide "Maxout neuron":
    ``max(w1^T x + b1, w2^T x + b2)``. Kernel ``(in, units * pieces)``, bias
    ``(units * pieces,)``: ``pieces`` times the parameters of ``Dense(units)``.

    Args:
        units: Number of outputs.
        pieces: Affine pieces per output (k in the paper).
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: As in ``keras.layers.Dense``.
    """

    def __init__(
        self,
        units: int,
        pieces: int = 2,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units, self.pieces = int(units), int(pieces)
        if self.units < 1 or self.pieces < 1:
            raise ValueError(f"Maxout: units and pieces must be >= 1, got {units}, {pieces}")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def build(self, input_shape):
        width = self.units * self.pieces
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], width),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(width,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def call(self, inputs):
        z = ops.matmul(inputs, self.kernel) + self.bias  # (..., units * pieces)
        return _max_over_pieces(z, self.pieces)  # (..., units)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        s = keras.initializers.serialize
        return {
            **super().get_config(),
            "units": self.units,
            "pieces": self.pieces,
            "kernel_initializer": s(self.kernel_initializer),
            "bias_initializer": s(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }


@keras.saving.register_keras_serializable(package="babysit")
class WeightNormalization(keras.layers.Wrapper):
    """Reparameterizes a Dense/ConvND kernel as ``w = g * v / ||v||`` (one g per output unit).

    Salimans & Kingma 2016, "Weight Normalization: A Simple Reparameterization to Accelerate
    Training of Deep Neural Networks". ``v`` is the wrapped layer's own kernel (so its
    initializer, regularizer and constraint apply to the direction), ``||v||`` is taken over
    every axis but the last (the output units). ``g`` starts at ``||v||`` so the initial
    effective kernel equals the wrapped layer's initialization. With ``data_init=True`` the
    first training batch instead sets ``g = 1 / std(t)`` and ``bias = -mean(t) / std(t)``
    (t = the pre-activation with ``w = v / ||v||``), so that batch leaves with zero mean and unit
    variance per unit (paper, section 3).

    Args:
        layer: A ``keras.layers.Dense`` or ``keras.layers.Conv1D/2D/3D`` (groups=1).
        data_init: Use the paper's data-dependent initialization on the first training batch.
    """

    def __init__(self, layer: keras.layers.Layer, data_init: bool = False, **kwargs):
        if not isinstance(layer, keras.layers.Dense) and not hasattr(layer, "filters"):
            raise ValueError(
                f"WeightNormalization wraps Dense or Conv layers, got {type(layer).__name__}"
            )
        super().__init__(layer, **kwargs)
        self.data_init = bool(data_init)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self.layer.kernel
        units = kernel.shape[-1]
        self._norm_axes = tuple(range(len(kernel.shape) - 1))  # every axis but the outputs
        self.g = self.add_weight(name="g", shape=(units,), initializer="ones")
        self.g.assign(ops.sqrt(ops.sum(ops.square(kernel), axis=self._norm_axes)))
        self.initialized = self.add_weight(
            name="initialized", shape=(), initializer="zeros", trainable=False, dtype="bool"
        )
        self.built = True

    def effective_kernel(self):
        """Returns ``g * v / ||v||``, the kernel the layer actually applies."""
        v = self.layer.kernel
        norm = ops.sqrt(ops.sum(ops.square(v), axis=self._norm_axes))  # (units,)
        return v * (self.g / norm)

    def _linear(self, x, kernel):
        inner = self.layer
        if isinstance(inner, keras.layers.Dense):
            return ops.matmul(x, kernel)
        return ops.conv(
            x,
            kernel,
            strides=inner.strides,
            padding=inner.padding,
            data_format=inner.data_format,
            dilation_rate=inner.dilation_rate,
        )

    def _bias_axis(self):
        return 1 if getattr(self.layer, "data_format", None) == "channels_first" else -1

    def _add_bias(self, z, bias):
        if self._bias_axis() == 1:
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(z.shape) - 2))
        return z + bias

    def _data_init(self, x):
        # Paper eq. (6): t = v.x / ||v||; g <- 1/sigma[t], b <- -mu[t]/sigma[t], per unit.
        v = self.layer.kernel
        t = self._linear(x, v / ops.sqrt(ops.sum(ops.square(v), axis=self._norm_axes)))
        axes = tuple(i for i in range(len(t.shape)) if i != len(t.shape) + self._bias_axis())
        mean, var = ops.moments(t, axes=axes)
        inv_std = 1.0 / ops.sqrt(var + 1e-6)
        self.g.assign(inv_std)
        if self.layer.use_bias:
            self.layer.bias.assign(-mean * inv_std)
        self.initialized.assign(True)
        return self._forward(x)

    def _forward(self, x):
        z = self._linear(x, self.effective_kernel())
        if self.layer.use_bias:
            z = self._add_bias(z, self.layer.bias)
        return self.layer.activation(z) if self.layer.activation is not None else z

    def call(self, inputs, training=None):
        if self.data_init and training:
            # tf.cond, not ops.cond: keras' cond cannot take a tensor predicate eagerly.
            return tf.cond(
                tf.convert_to_tensor(self.initialized),
                lambda: self._forward(inputs),
                lambda: self._data_init(inputs),
            )
        return self._forward(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["layer"] = keras.layers.serialize(self.layer)
        return {**config, "data_init": self.data_init}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


@keras.saving.register_keras_serializable(package="babysit")
class FlipLeftRight(keras.layers.Layer):
    """Mirrors NHWC images left to right: the flipped views of ten-crop averaging (AlexNet)."""

    def call(self, inputs):
        return ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape
