"""``train.dtype_policy``: mixed bfloat16 training of the config's network (Micikevicius et
al. 2018, "Mixed precision training"; Keras's ``mixed_bfloat16`` policy)."""

import os

import keras
import numpy as np
import pytest
from helpers import quick

from recipes import prepare, train


def test_mixed_bfloat16_computes_in_bf16_keeps_float32_weights_and_logits(tmp_path):
    runs = {}
    for policy in ("float32", "mixed_bfloat16"):
        cfg = quick(6, **{"train.dtype_policy": policy, "model.hidden": (32,)})
        runs[policy] = train.run(cfg, str(tmp_path / policy))
        assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    summary = runs["mixed_bfloat16"]
    assert np.isfinite(summary["test_loss"])
    # accuracy holds: bf16's 8-bit mantissa costs at most a few points on this tiny run
    assert summary["test_accuracy"] > 0.5
    assert abs(summary["test_accuracy"] - runs["float32"]["test_accuracy"]) < 0.08
    tmp_path = tmp_path / "mixed_bfloat16"
    model = keras.saving.load_model(os.path.join(tmp_path, "model.keras"),
                                    safe_mode=True)
    hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)
              and layer.name != "logits"]
    assert hidden and all(layer.compute_dtype == "bfloat16" for layer in hidden)
    assert all(v.dtype == "float32" for v in model.weights)
    logits = model.get_layer("logits")
    assert logits.compute_dtype == "float32"
    x = np.zeros((2, *model.input_shape[1:]), np.float32)
    assert keras.ops.convert_to_numpy(model(x)).dtype == np.float32


@pytest.mark.parametrize("value", ["mixed_float16", "bfloat16", "", None])
def test_other_policies_are_refused_naming_the_field(value):
    cfg = quick(1)
    cfg.train.dtype_policy = value
    with pytest.raises(ValueError, match="train.dtype_policy"):
        prepare.prepare(cfg)
    assert keras.config.dtype_policy().name == "float32"


def test_a_policy_of_another_type_is_a_usage_error():
    with pytest.raises(TypeError):  # the ConfigDict's type: a one-line error on the CLI
        quick(1).train.dtype_policy = 1
