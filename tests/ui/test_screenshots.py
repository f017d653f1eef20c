import subprocess
import sys

from PySide6.QtGui import QImage


def test_screenshots_render_every_page_with_the_model_loaded(tiny_project, tmp_path):
    out = tmp_path / "shots"
    result = subprocess.run([sys.executable, "-m", "ui.cli", "screenshots", str(tiny_project), str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["01-project.png", "02-model.png"]
    image = QImage(str(out / "02-model.png"))
    assert image.width() >= 1000 and image.height() >= 700


def test_screenshots_of_a_non_project_fail_in_one_line(tmp_path):
    bogus = tmp_path / "x.rlhf"
    bogus.write_text("nope")
    result = subprocess.run([sys.executable, "-m", "ui.cli", "screenshots", str(bogus), str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["workbench: error: x.rlhf is not a workbench project (it is not an SQLite file)."]
