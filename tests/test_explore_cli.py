"""``handprop explore`` as a command: it serves until Ctrl-C (exit 130), refuses bad
input in one line (exit 2), and writes its static copy safely."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from handprop.cli import main
from handprop.explore import export as export_module
from handprop.explore.export import MARKER, frame_steps
from handprop.explore.session import Session, Settings

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words: str) -> None:
    assert err.startswith("handprop: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def read_data(folder: Path) -> dict:
    text = (folder / "data.js").read_text()
    prefix = "window.HANDPROP_EXPORT = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2])


# -- the server ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_server_stops_cleanly_with_exit_130(signum):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "handprop", "explore", "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, (line, process.stderr.read())
        url = line.split("serving on ")[1].split()[0]
        with urllib.request.urlopen(url + "api/meta", timeout=30) as response:
            assert response.status == 200
        process.send_signal(signum)
        code = process.wait(timeout=30)
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130, err
    assert err.strip() == "handprop: interrupted"


def test_a_port_in_use_is_one_line_and_exit_2(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run(capsys, "explore", "--no-browser", "--port", str(taken.getsockname()[1]))
    assert code == 2
    one_line_error(err, "cannot listen on 127.0.0.1:")


@pytest.mark.parametrize(("argv", "words"), [
    (["--rule", "nope"], ["unknown rule 'nope'"]),
    (["--port", "70000"], ["--port", "0..65535"]),
    (["--dataset", "mnist"], ["--dataset"]),
    (["--seed", "-1"], ["--seed"]),
])
def test_bad_options_are_one_line_and_exit_2(capsys, argv, words):
    code, _, err = run(capsys, "explore", "--no-browser", "--port", "0", *argv)
    assert code == 2
    one_line_error(err, *words)


# -- the static copy ----------------------------------------------------------------------

def test_the_copy_holds_the_page_and_handprops_numbers(capsys, tmp_path):
    out = tmp_path / "copy"
    code, stdout, err = run(capsys, "explore", "--export", str(out), "--rules", "exact,seed-broken",
                            "--seeds", "0,2", "--steps", "7", "--images", "1")
    assert code == 0, err
    assert f"wrote a static copy to {out}" in stdout
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"index.html", "data.js", MARKER, "static/style.css", "static/js/app.js"} <= names
    page = (out / "index.html").read_text()
    assert '<script src="data.js"></script>' in page and "http" not in page.replace(
        "http-equiv", "")
    data = read_data(out)
    assert set(data["traces"]) == {"exact|0", "seed-broken|0", "exact|2", "seed-broken|2"}
    assert data["meta"]["frames"] == frame_steps(7)
    trace = data["traces"]["seed-broken|2"]
    live = Session(Settings(rule="seed-broken", seed=2))
    for frame in trace["frames"]:
        live.step(frame["step"] - live.steps)
        assert frame["cost"] == live.runs[0].cost
        assert frame["angles"] == live.runs[0].angles
    assert trace["curve"]["steps"] == list(range(8))
    assert json.loads((out / MARKER).read_text())["files"] == sorted(names)


def test_a_folder_the_export_did_not_write_is_refused_and_left_alone(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "explore", "--export", str(out), "--steps", "2")
    assert code == 2
    one_line_error(err, "is not empty and holds no export of handprop explore")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_an_earlier_export_is_rewritten_and_nothing_else_is_touched(capsys, tmp_path):
    out = tmp_path / "copy"
    assert run(capsys, "explore", "--export", str(out), "--rules", "exact", "--steps", "2",
               "--images", "1")[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "static" / "old.js").write_text("stale")
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "files": marker["files"] + ["static/old.js"]}))
    code, _, err = run(capsys, "explore", "--export", str(out), "--rules", "fa", "--steps", "3",
                       "--images", "1")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "static" / "old.js").exists()  # ours, and no longer part of the copy
    assert set(read_data(out)["traces"]) == {"fa|0"}


def test_links_are_never_followed(capsys, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    code, _, err = run(capsys, "explore", "--export", str(link), "--steps", "2")
    assert code == 2
    one_line_error(err, "symbolic link")
    assert not any(target.iterdir())
    # an earlier export whose static folder was swapped for a link
    out = tmp_path / "copy"
    assert run(capsys, "explore", "--export", str(out), "--rules", "exact", "--steps", "2",
               "--images", "1")[0] == 0
    (out / "static").rename(tmp_path / "moved")
    (out / "static").symlink_to(target)
    code, _, err = run(capsys, "explore", "--export", str(out), "--rules", "exact", "--steps", "2",
                       "--images", "1")
    assert code == 2
    one_line_error(err, "not a plain folder")
    assert not any(target.iterdir())


@pytest.mark.parametrize(("argv", "words"), [
    (["--rules", "exact,nope"], ["unknown rule 'nope'"]),
    (["--steps", "0"], ["--steps"]),
    (["--images", "400"], ["--images must be indices in 0..363"]),
    (["--rules", ",".join(["exact"] * 2) + ",fa,usf,frsf,brsf,dfa", "--seeds",
      ",".join(map(str, range(5)))], ["over 24 traces"]),
    (["--steps", "5000", "--rules", "exact,fa,usf,dfa,kp", "--seeds", "0,1,2,3",
      "--images", "0,1,2,3,4,5,6,7"], ["views", "choose fewer"]),
    (["--steps", "20000", "--rules", "exact,fa,usf,dfa,kp,brsf"], ["over 100000 steps"]),
])
def test_a_bad_export_request_writes_nothing(capsys, tmp_path, argv, words):
    out = tmp_path / "copy"
    code, _, err = run(capsys, "explore", "--export", str(out), *argv)
    assert code == 2
    one_line_error(err, *words)
    assert list(tmp_path.iterdir()) == []


def test_an_export_path_under_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "explore", "--export", str(tmp_path / "file" / "copy"))
    assert code == 2
    one_line_error(err, "not a directory")


def test_an_interrupted_or_failed_export_leaves_nothing(capsys, tmp_path, monkeypatch):
    out = tmp_path / "copy"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "build_data", interrupted)
    assert run(capsys, "explore", "--export", str(out), "--steps", "2")[0] == 130
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    written = []
    original = Path.write_bytes

    def disk_full(self, data):
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(self)
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    code, _, err = run(capsys, "explore", "--export", str(out), "--rules", "exact", "--steps", "2",
                       "--images", "1")
    assert code == 2
    one_line_error(err, "No space left on device")
    assert list(tmp_path.iterdir()) == []
