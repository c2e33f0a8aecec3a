"""The example network spec in docs/ builds, survives its own spec, passes
``handprop gradcheck`` and trains through the CLI (checkpoint and pictures included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import load_json, run_cli

from handprop.core.ops.avgpool import AvgPool2d
from handprop.core.ops.batchnorm import BatchNorm2d
from handprop.core.spec import load_network_spec, network_from_spec
from handprop.training.checkpoint import load_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "bn_cnn.toml"


def test_example_spec_builds_and_round_trips() -> None:
    net = load_network_spec(EXAMPLE)
    assert any(isinstance(layer, BatchNorm2d) for layer in net.layers)
    pool = net.layer("pool2")
    assert isinstance(pool, AvgPool2d) and not pool.count_include_pad
    assert net.output_shape == (10,) and net.shapes[-3] == (16, 2, 2)
    assert network_from_spec(net.spec()).spec() == net.spec()
    assert set(net.init(0).buffers) == {"bn1.running_mean", "bn1.running_var", "bn2.running_mean",
                                "bn2.running_var"}


def test_gradcheck_passes_on_the_example(tmp_path) -> None:
    code, out, err = run_cli("gradcheck", "--net", EXAMPLE, "--json", tmp_path / "g.json")
    assert code == 0, out + err
    result = load_json(tmp_path / "g.json")
    assert {"bn1.weight", "bn2.bias", "fc3.weight"} <= set(result["per_parameter"])
    assert result["max_rel_error"] <= 1e-6


def test_the_example_trains_and_draws_from_a_checkpoint(tmp_path) -> None:
    checkpoint = tmp_path / "bn.npz"
    code, out, err = run_cli("train", "--net", EXAMPLE, "--epochs", "2", "--quiet",
                             "--checkpoint", checkpoint)
    assert code == 0, out + err
    saved = load_checkpoint(checkpoint)
    assert saved.buffers.shape == (48,) and np.all(np.isfinite(saved.buffers))
    code, out, err = run_cli("show", "maps", "--checkpoint", checkpoint, "--out", tmp_path)
    assert code == 0, out + err
    assert list(tmp_path.glob("*.png"))
