"""The one progress-bar helper: drawn on terminals only, ETA, notes, env override."""

from __future__ import annotations

import io

import numpy as np

from lepton_compiler.examples import zoo
from lepton_compiler.progress import Progress, enabled_by_default, progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_count_percentage_eta_and_note():
    stream = io.StringIO()
    with progress(10, "tuning", enabled=True, stream=stream) as bar:
        for i in range(4):
            bar.update(1, note=f"best {100 - i} cycles")
        line = bar.render()
    assert "tuning [" in line and "4/10" in line and "40%" in line and "eta" in line
    assert "best 97 cycles" in line
    text = stream.getvalue()
    assert "10/10" not in text and text.endswith("\n")  # closed on exit, at its real count


def test_bar_is_silent_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("LEPTON_PROGRESS", raising=False)
    stream = io.StringIO()
    with progress(3, "calibrating", stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
    assert enabled_by_default(Terminal()) and not enabled_by_default(io.StringIO())


def test_environment_overrides_terminal_detection(monkeypatch):
    monkeypatch.setenv("LEPTON_PROGRESS", "0")
    assert not enabled_by_default(Terminal())
    monkeypatch.setenv("LEPTON_PROGRESS", "1")
    assert enabled_by_default(io.StringIO())


def test_unknown_total_and_track():
    bar = Progress(None, "reading", enabled=False)
    bar.update(5)
    assert bar.render().startswith("reading 5 ") and bar.eta_s() is None
    assert list(track(iter(range(4)), "items", enabled=False)) == [0, 1, 2, 3]


def test_build_shows_its_stages(monkeypatch, capsys):
    import lepton_compiler

    monkeypatch.setenv("LEPTON_PROGRESS", "1")
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    lepton_compiler.build(zoo.mlp(8, 16, 4, depth=2), (x,))
    err = capsys.readouterr().err
    # import simplify layout partition fuse schedule plan codegen package
    assert "compiling (host)" in err and "9/9" in err and "codegen" in err
