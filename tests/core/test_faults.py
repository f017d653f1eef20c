"""A CI-sized slice of bench/faults.py (fixed seeds): kill -9 during labeling writes loses no
acknowledged write and never damages the file, a killed import leaves all of its rows or none,
and running out of memory in SFT fails the run cleanly and leaves the model usable."""

import importlib.util
import sys
from pathlib import Path

FAULTS = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def load_faults():
    """bench/ is not a package: load bench/faults.py from its path (registered, for its dataclasses)."""
    spec = importlib.util.spec_from_file_location("bench_faults", FAULTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


faults = load_faults()


def test_kills_during_labeling_lose_no_acknowledged_write(tmp_path):
    stats = faults.run_writer_kills("labeling", 20, seed=7, work=tmp_path)
    assert stats.kills == 20 and not stats.child_errors, stats
    assert stats.acked > 0 and stats.lost == 0 and stats.integrity_failures == 0 and not stats.problems, stats


def test_kills_during_sft_edits_lose_no_acknowledged_write(tmp_path):
    stats = faults.run_writer_kills("sft", 10, seed=7, work=tmp_path)
    assert stats.kills == 10 and not stats.child_errors, stats
    assert stats.acked > 0 and stats.lost == 0 and stats.integrity_failures == 0 and not stats.problems, stats


def test_a_killed_import_leaves_all_of_its_rows_or_none(tmp_path):
    stats = faults.run_import_kills(6, seed=7, work=tmp_path, rows=2000)
    assert stats.kills == 6 and stats.by_mode == {"uniform": 3, "aimed": 3}, stats
    assert stats.outcomes["partial"] == 0 and stats.integrity_failures == 0 and not stats.problems, stats


def test_out_of_memory_in_sft_fails_the_run_and_leaves_the_model_usable(tmp_path, tiny_model_dir, models):
    path = faults.sft_training_project(tmp_path / "oom.rlhf", tiny_model_dir)
    case = faults.run_oom_case("sft", path, models, ballast_mib=256)
    assert case.fired and case.error.startswith("Out of memory during SFT run") and case.advice, case
    assert case.status == "failed" and case.same_message, case
    assert case.busy_with is None and case.adapter_removed, case
    assert case.rss_at_oom - case.rss_before > 200 * 2**20 and case.released, case  # the ballast was given back
    assert case.next_run == "finished", case
