import subprocess
import sys

from PySide6.QtGui import QImage

from workbench.data.sft_store import SftStore
from workbench.project import Project


def test_screenshots_render_every_page_with_the_model_loaded(tiny_project, tmp_path):
    out = tmp_path / "shots"
    project = Project.open(tiny_project)
    SftStore(project).add_many([[{"role": "user", "content": "Where is my parcel?"},
                                 {"role": "assistant", "content": "It ships today."}]] * 4)
    project.close()
    before = tiny_project.read_bytes()
    result = subprocess.run([sys.executable, "-m", "ui.cli", "screenshots", str(tiny_project), str(out),
                             "--train-steps", "4"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["01-project.png", "02-model.png", "03-sft-data.png", "04-sft-training.png", "05-rank.png",
                     "06-team.png", "07-reward.png", "08-ppo-did-it-work.png", "08-ppo-over-optimisation.png",
                     "08-ppo.png", "09-dpo-did-it-work.png", "09-dpo.png", "10-runs.png"]
    assert tiny_project.read_bytes() == before  # the run was made on a copy
    image = QImage(str(out / "02-model.png"))
    assert image.width() >= 1000 and image.height() >= 700


def test_screenshots_without_a_model_never_wait_for_the_annotator_dialog(tiny_project, tmp_path):
    # The Rank page asks for a name when first shown; offscreen that dialog would wait forever.
    out = tmp_path / "shots"
    result = subprocess.run([sys.executable, "-m", "ui.cli", "screenshots", str(tiny_project), str(out), "--no-model"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {"05-rank.png", "10-runs.png"} <= {p.name for p in out.iterdir()}


def test_screenshots_of_a_non_project_fail_in_one_line(tmp_path):
    bogus = tmp_path / "x.rlhf"
    bogus.write_text("nope")
    result = subprocess.run([sys.executable, "-m", "ui.cli", "screenshots", str(bogus), str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["workbench: error: x.rlhf is not a workbench project (it is not an SQLite file)."]
