"""Checkpoints: an interrupted-then-resumed run ends bit-identical to an uninterrupted one
(CLI and Python API), the files are pickle-free, and bad or foreign files are refused."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import bn_cnn

import handprop.cli.train as cli_train
from handprop import __version__
from handprop.cli import main
from handprop.core.presets import lenet, seed_net
from handprop.rules import make_rule
from handprop.training.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_architecture,
    load_checkpoint,
    restore_network,
    save_checkpoint,
)
from handprop.training.data import load_digits
from handprop.training.loop import TrainConfig, TrainState, fit


def _train(*argv: str) -> None:
    code = main(["train", "--quiet", *argv])
    assert code == 0, f"handprop train {' '.join(argv)} exited {code}"


def _assert_same_run(a: Path, b: Path) -> None:
    """Two checkpoints hold the same parameters, optimizer and rule state, and history."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first.params.dtype == second.params.dtype
    assert np.array_equal(first.params, second.params), "parameters differ"
    assert first.optimizer.keys() == second.optimizer.keys()
    for key in first.optimizer:
        assert np.array_equal(first.optimizer[key], second.optimizer[key]), f"optimizer.{key}"
    assert first.rule.keys() == second.rule.keys()
    for key in first.rule:
        assert np.array_equal(first.rule[key], second.rule[key]), f"rule.{key}"
    one, two = first.meta["state"], second.meta["state"]
    assert one["epoch"] == two["epoch"] and one["steps"] == two["steps"]
    assert one["cost"] == two["cost"], "cost history differs"
    assert one["shufflers"] == two["shufflers"]
    assert one["schedule"] == two["schedule"]
    assert first.meta["optimizer_state"] == second.meta["optimizer_state"]
    assert first.meta["rule_state"] == second.meta["rule_state"]
    assert (first.buffers is None) == (second.buffers is None)
    if first.buffers is not None:
        assert np.array_equal(first.buffers, second.buffers), "state buffers differ"


# -- resume through the CLI -------------------------------------------------------------

RESUME = {
    "default": [],
    "shuffle": ["--shuffle"],
    "fa": ["--rule", "fa"],
    "brsf": ["--rule", "brsf", "--shuffle"],
    "kp": ["--rule", "kp", "--shuffle"],  # B learns: its current value is rule state
    "adam": ["--optimizer", "adam", "--lr", "0.01"],
    "nesterov-minibatch": ["--optimizer", "nesterov", "--batch-size", "16", "--lr", "0.05",
                           "--momentum", "0.9", "--shuffle"],
    "float32": ["--dtype", "float32", "--shuffle"],
}


@pytest.mark.parametrize("case", list(RESUME))
def test_cli_resumed_run_is_bit_identical(tmp_path, case):
    """``train --epochs 6`` vs ``train --epochs 3`` then ``train --resume --epochs 6``."""
    flags = RESUME[case]
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    _train("--epochs", "6", "--checkpoint", str(whole), *flags)
    _train("--epochs", "3", "--checkpoint", str(part), *flags)
    assert load_checkpoint(part).meta["state"]["epoch"] == 3
    _train("--resume", str(part), "--epochs", "6")
    assert load_checkpoint(part).meta["state"]["epoch"] == 6
    _assert_same_run(whole, part)
    assert len(load_checkpoint(whole).meta["state"]["cost"][0]) == 6


def _interrupt_after(monkeypatch, epochs: int) -> None:
    """Make the CLI's next training run stop like Ctrl-C right after saving epoch N."""
    save = cli_train.save_checkpoint

    def save_then_interrupt(path, run, state):
        save(path, run, state)
        if state.epoch == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "save_checkpoint", save_then_interrupt)


@pytest.mark.parametrize("flags", [["--schedule", "cosine"],
                                   ["--schedule", "cosine", "--rule", "brsf", "--shuffle"],
                                   ["--schedule", "step", "--optimizer", "adam"],
                                   []],
                         ids=["cosine", "cosine-brsf-shuffle", "step-adam", "default"])
def test_cli_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch, flags):
    """``train --epochs 6`` interrupted (Ctrl-C) after epoch 3, then ``train --resume``:
    the same schedule over the same 6 epochs, so even the cosine schedule lines up."""
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    _train("--epochs", "6", "--checkpoint", str(whole), *flags)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        assert main(["train", "--quiet", "--epochs", "6", "--checkpoint", str(part),
                     *flags]) == 130
    assert load_checkpoint(part).meta["state"]["epoch"] == 3
    _train("--resume", str(part))
    _assert_same_run(whole, part)


def test_cli_resume_needs_more_epochs(tmp_path, capsys):
    path = tmp_path / "c.npz"
    _train("--epochs", "2", "--checkpoint", str(path))
    assert main(["train", "--quiet", "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already holds 2 epochs" in err and len(err.strip().splitlines()) == 1


def test_cli_resume_refuses_another_architecture(tmp_path, capsys):
    path = tmp_path / "c.npz"
    _train("--epochs", "1", "--checkpoint", str(path))
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(path), "--epochs", "2",
                 "--fc", "10", "12"]) == 2
    err = capsys.readouterr().err
    assert "another architecture" in err and "28" in err and "10" in err
    assert len(err.strip().splitlines()) == 1


# -- resume through the Python API ------------------------------------------------------


def _api_run(tmp_path: Path, epochs: int, stop_after: int | None, path: Path | None,
             state: TrainState | None = None, params: np.ndarray | None = None,
             rule_state: dict | None = None):
    """Two replicas (seeds 3 and 5), brsf (random state), shuffling, Nesterov, minibatch."""
    config = TrainConfig(epochs=epochs, batch_size=8, optimizer="nesterov", lr=0.05,
                         momentum=0.9, shuffle=True, schedule="cosine")
    seeds = [3, 5]
    sets = [load_digits(seed=s) for s in seeds]
    x = np.stack([d.x_train[:120] for d in sets])
    y = np.stack([d.y_train[:120] for d in sets])
    net = seed_net().init(0, replicas=seeds)
    if params is not None:
        net.set_params(net.unflatten(params))
    rule = make_rule("brsf", net, seeds)
    if rule_state is not None:
        rule.load_state(rule_state)

    finished = []

    def on_epoch(epoch, history):
        finished.append(epoch)
        if path is not None:
            s = history.state
            save_checkpoint(path, net, {"state": s.to_meta(), "config": config.to_dict()},
                            optimizer_state=s.optimizer.state(), rule_state=rule.state())

    def stop():
        return stop_after is not None and len(finished) >= stop_after

    history = fit(net, x, y, config, rule=rule, on_epoch=on_epoch, stop=stop, state=state)
    return net, history, config


def test_api_resume_with_save_checkpoint_and_trainstate_restore(tmp_path):
    whole_net, whole_history, _ = _api_run(tmp_path, 5, None, None)
    path = tmp_path / "api.npz"
    _, first_half, config = _api_run(tmp_path, 5, 2, path)
    assert first_half.cost.shape == (2, 2)
    saved = load_checkpoint(path)
    assert saved.meta["state"]["epoch"] == 2
    state = TrainState.restore(saved.meta["state"],
                               {**saved.meta["optimizer_state"], **saved.optimizer},
                               TrainConfig(**saved.meta["config"]))
    rule_state = {**saved.meta["rule_state"], **saved.rule}
    net, history, _ = _api_run(tmp_path, 5, None, None, state=state, params=saved.params,
                               rule_state=rule_state)
    assert np.array_equal(net.flat, whole_net.flat)
    assert np.array_equal(history.cost, whole_history.cost)
    assert history.steps == whole_history.steps
    assert history.diverged == [None, None]


def test_trainstate_meta_round_trip_is_json():
    config = TrainConfig(epochs=4, shuffle=True, schedule="cosine")
    state = TrainState.fresh(config, [1, 2])
    state.epoch, state.steps = 2, 20
    state.cost[:2] = [[1.5, np.nan], [0.5, np.nan]]
    state.diverged = [None, {"epoch": 1, "step": 3}]
    state.alive = np.array([True, False])
    state.shufflers[0].permutation(10)
    meta = json.loads(json.dumps(state.to_meta(), allow_nan=False))
    back = TrainState.restore(meta, state.optimizer.state(), config)
    assert back.epoch == 2 and back.steps == 20
    assert np.array_equal(back.cost[:2], state.cost[:2], equal_nan=True)
    assert np.all(np.isnan(back.cost[2:]))
    assert back.diverged == state.diverged
    assert back.alive.tolist() == [True, False]
    for a, b in zip(back.shufflers, state.shufflers, strict=True):
        assert np.array_equal(a.permutation(50), b.permutation(50))


# -- the file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "seed.npz"
    _train("--epochs", "2", "--rule", "fa", "--checkpoint", str(path))
    return path


def test_checkpoint_loads_without_pickle(checkpoint_file):
    with np.load(checkpoint_file, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    assert {"params", "meta.json"} <= set(entries)
    assert any(name.startswith("optimizer.") for name in entries)
    assert any(name.startswith("rule.") for name in entries)
    for name, array in entries.items():
        assert array.dtype != object, name
        assert array.dtype.kind in "fiub", (name, array.dtype)
    meta = json.loads(entries["meta.json"].tobytes().decode("utf-8"))
    assert meta["format"] == "handprop-checkpoint"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["handprop_version"] == __version__
    assert meta["network"] == seed_net().spec()
    assert meta["state"]["epoch"] == 2
    loaded = load_checkpoint(checkpoint_file)
    assert np.array_equal(loaded.params, entries["params"])
    assert loaded.params.shape == (seed_net().num_params,)


def _rewrite(source: Path, target: Path, change) -> Path:
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    np.savez(target, **arrays)
    return target


def _set_meta(arrays: dict, **values) -> None:
    meta = json.loads(arrays["meta.json"].tobytes())
    meta.update(values)
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message
    return message


def test_newer_format_version_is_refused(checkpoint_file, tmp_path, capsys):
    newer = FORMAT_VERSION + 1
    path = _rewrite(checkpoint_file, tmp_path / "newer.npz",
                    lambda a: _set_meta(a, format_version=newer))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = _one_line(info.value)
    assert f"format {newer}" in message and "newer" in message
    assert main(["train", "--quiet", "--resume", str(path), "--epochs", "5"]) == 2
    assert f"format {newer}" in capsys.readouterr().err


def test_other_architecture_is_refused(checkpoint_file):
    loaded = load_checkpoint(checkpoint_file)
    check_architecture(loaded, seed_net().init(0), "ckpt")  # its own: fine
    with pytest.raises(CheckpointError) as info:
        check_architecture(loaded, seed_net((10, 36)).init(0), "ckpt")
    message = _one_line(info.value)
    assert "another architecture" in message
    assert "layers[7]" in message and "28" in message and "10" in message
    with pytest.raises(CheckpointError) as info:
        check_architecture(loaded, lenet().init(0), "ckpt")
    assert "another architecture" in _one_line(info.value)
    with pytest.raises(CheckpointError) as info:
        check_architecture(loaded, seed_net().init(0, replicas=[0, 1]), "ckpt")
    message = _one_line(info.value)
    assert "shape" in message and "(2, " in message


def test_truncated_checkpoint_is_refused(checkpoint_file, tmp_path):
    data = checkpoint_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = _one_line(info.value)
        assert str(path) in message
        assert "truncated" in message or "not" in message


@pytest.mark.parametrize("content", [b"", b"hello\n", b"\x93NUMPY\x01\x00" + b"x" * 100,
                                     json.dumps({"params": [1, 2]}).encode()],
                         ids=["empty", "text", "npy", "json"])
def test_non_npz_file_is_refused(tmp_path, content):
    path = tmp_path / "not.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = _one_line(info.value)
    assert str(path) in message and "not" in message


def test_missing_checkpoint_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.npz")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


class _Tripwire:
    """Unpickling this creates the marker file: proof that pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("entry", ["params", "optimizer.velocity", "rule.B0"])
def test_object_array_is_refused_without_unpickling(checkpoint_file, tmp_path, entry):
    marker = tmp_path / "pickle-ran"
    trap = np.array([_Tripwire(marker)], dtype=object)
    assert pickle.loads(pickle.dumps(trap[0])) is None and marker.exists()  # the trap works
    marker.unlink()

    def plant(arrays):
        arrays[entry] = trap

    path = _rewrite(checkpoint_file, tmp_path / "objects.npz", plant)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = _one_line(info.value)
    assert "pickle" in message and str(path) in message
    assert not marker.exists()


def test_other_npz_files_are_refused(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(plain)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, params=np.zeros(3),
             **{"meta.json": np.frombuffer(b'{"format": "other"}', dtype=np.uint8)})
    with pytest.raises(CheckpointError, match="not a handprop checkpoint"):
        load_checkpoint(foreign)
    broken = tmp_path / "broken.npz"
    np.savez(broken, params=np.zeros(3), **{"meta.json": np.frombuffer(b"{no", np.uint8)})
    with pytest.raises(CheckpointError, match="corrupt metadata"):
        load_checkpoint(broken)


def test_nonfinite_parameters_are_refused(checkpoint_file, tmp_path):
    def poison(arrays):
        arrays["params"] = arrays["params"].copy()
        arrays["params"][0] = np.nan

    path = _rewrite(checkpoint_file, tmp_path / "nan.npz", poison)
    with pytest.raises(CheckpointError, match="not finite"):
        load_checkpoint(path)


def test_save_checkpoint_is_atomic_and_plain(tmp_path):
    net = seed_net().init(0)
    path = save_checkpoint(tmp_path / "sub" / "x.npz", net, {"note": "hi"},
                           optimizer_state={"lr": 0.1, "velocity": None,
                                            "m": np.ones(net.num_params)})
    assert [p.name for p in path.parent.iterdir()] == ["x.npz"]  # no temporary left
    loaded = load_checkpoint(path)
    assert loaded.meta["note"] == "hi"
    assert loaded.meta["optimizer_state"] == {"lr": 0.1, "velocity": None}
    assert np.array_equal(loaded.optimizer["m"], np.ones(net.num_params))
    assert np.array_equal(loaded.params, net.flat)
    assert io.BytesIO(path.read_bytes()).read(4) == b"PK\x03\x04"


# -- show from a checkpoint -------------------------------------------------------------


def test_show_all_from_checkpoint_writes_pngs(checkpoint_file, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["show", "all", "--checkpoint", str(checkpoint_file), "--out", str(out)]) == 0
    expected = {"kernels.png", "maps-test-0.png", "misclassified-test.png", "cost.png"}
    assert {p.name for p in out.iterdir()} == expected
    for name in expected:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    printed = capsys.readouterr().out
    assert all(f"wrote {out / name}" in printed for name in expected)


# -- state buffers (batch norm's running statistics) ------------------------------------

BN_NET = """
name = "bn-tiny"
input_shape = [1, 8, 8]
loss = "softmax_ce"
init = "torch"

[[layers]]
type = "conv2d"
name = "conv1"
out_channels = 4
kernel_size = 3
padding = 1

[[layers]]
type = "batch_norm2d"
name = "bn1"

[[layers]]
type = "activation"
name = "act1"
activation = "relu"

[[layers]]
type = "max_pool2d"
name = "pool1"
kernel_size = 2

[[layers]]
type = "flatten"
name = "flatten"

[[layers]]
type = "dense"
name = "fc2"
out_features = 2
"""


def test_cli_resume_restores_running_statistics(tmp_path):
    """A network with batch norm, from TOML: ``--epochs 4`` vs ``--epochs 2`` then
    ``--resume``: the same parameters *and* running statistics (saved as buffers)."""
    spec = tmp_path / "bn.toml"
    spec.write_text(BN_NET)
    flags = ["--net", str(spec), "--data", "tiny", "--batch-size", "2", "--shuffle"]
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    _train("--epochs", "4", "--checkpoint", str(whole), *flags)
    _train("--epochs", "2", "--checkpoint", str(part), *flags)
    _train("--resume", str(part), "--epochs", "4")
    _assert_same_run(whole, part)
    buffers = load_checkpoint(whole).buffers
    assert buffers.shape == (8,) and not np.array_equal(buffers, [0] * 4 + [1] * 4)


def test_buffers_round_trip_and_must_fit(tmp_path):
    net = bn_cnn().init(0, replicas=[0, 1])
    net.forward(np.random.default_rng(0).uniform(0, 1, (2, 4, 1, 8, 8)))  # move the stats
    path = save_checkpoint(tmp_path / "bn.npz", net, {})
    loaded = load_checkpoint(path)
    assert np.array_equal(loaded.buffers, net.buffer_flat)
    fresh = bn_cnn().init(1, replicas=[0, 1])
    check_architecture(loaded, fresh, "ckpt")
    restore_network(loaded, fresh)
    assert np.array_equal(fresh.flat, net.flat)
    assert np.array_equal(fresh.buffer_flat, net.buffer_flat)

    changes = {
        "missing": (lambda a: a.pop("buffers"), "holds no buffers"),
        "shape": (lambda a: a.update(buffers=a["buffers"][:, :-1]), "buffers have shape"),
    }
    for name, (change, message) in changes.items():
        bad = load_checkpoint(_rewrite(path, tmp_path / f"{name}.npz", change))
        with pytest.raises(CheckpointError, match=message) as info:
            check_architecture(bad, fresh, "ckpt")
        _one_line(info.value)
    nan = _rewrite(path, tmp_path / "nan.npz", lambda a: a["buffers"].__setitem__(0, np.nan))
    with pytest.raises(CheckpointError, match="buffers are not finite"):
        load_checkpoint(nan)


def test_stateless_checkpoints_have_no_buffers(checkpoint_file):
    """A network without state writes the files it always did, and they load."""
    with np.load(checkpoint_file, allow_pickle=False) as archive:
        assert "buffers" not in archive.files
    loaded = load_checkpoint(checkpoint_file)
    assert loaded.buffers is None
    net = seed_net().init(1)
    check_architecture(loaded, net, "ckpt")
    restore_network(loaded, net)
    assert np.array_equal(net.flat, loaded.params)


def test_a_checkpoint_reads_no_file_outside_its_folder(tmp_path, capsys):
    """A checkpoint is untrusted (issue 19): a network file its recipe names outside its
    folder is not read (the network is rebuilt from the checkpoint's own, checked
    description), and data files there are read only when ``--data`` names them again."""
    from handprop.training.data import write_idx

    elsewhere, run = tmp_path / "elsewhere", tmp_path / "run"
    elsewhere.mkdir()
    run.mkdir()
    net_file = elsewhere / "net.toml"
    net_file.write_text('preset = "small"\ninput_shape = [1, 8, 8]\nclasses = 4\n')
    rng = np.random.default_rng(0)
    write_idx(elsewhere / "images", rng.integers(0, 255, (40, 8, 8), np.uint8))
    write_idx(elsewhere / "labels", np.arange(40, dtype=np.uint8) % 4)
    data = f"idx:{elsewhere / 'images'},{elsewhere / 'labels'}"
    checkpoint = run / "c.npz"
    _train("--net", str(net_file), "--data", data, "--epochs", "1", "--checkpoint",
           str(checkpoint))
    net_file.write_text("secret = 'hunter2'\n")  # what a checkpoint must not make us read
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(checkpoint), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "outside the checkpoint's folder" in err and "--data" in err
    assert main(["train", "--quiet", "--resume", str(checkpoint), "--epochs", "2", "--data",
                 data]) == 0
    assert "hunter2" not in capsys.readouterr().err
    assert load_checkpoint(checkpoint).meta["state"]["epoch"] == 2
