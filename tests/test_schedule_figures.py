"""scripts/plot_schedules.py writes its three figures into --out; a bad folder is exit 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_schedules.py"
FIGURES = (
    "schedule_exponential_decay.png",
    "schedule_piecewise_constant.png",
    "schedule_registry.png",
)


def _load_script():
    spec = importlib.util.spec_from_file_location("plot_schedules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figures_are_written_to_out(tmp_path, capsys):
    out = tmp_path / "figs"
    assert _load_script().main(["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES)
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 800 and image.height > 400
    assert capsys.readouterr().out.count(".png") == 3


def test_traces_are_the_lr_each_optimizer_step_uses():
    script = _load_script()
    import schedulers

    lrs = script.trace(lambda o: schedulers.ExponentialDecay(o, 100, 0.96, True), 0.1, 201)
    assert (lrs[0], lrs[99], lrs[100], lrs[200]) == (0.1, 0.1, 0.1 * 0.96, 0.1 * 0.96**2)


def test_an_unusable_out_folder_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _load_script().main(["--out", str(blocker / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plot_schedules: cannot create") and err.count("\n") == 1
