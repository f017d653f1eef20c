"""The GUI sends library warnings to its log file instead of the terminal (issue 15)."""

import logging
import warnings

import pytest

from workbench import library_logs


@pytest.fixture
def routed():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
             for name in (*library_logs.LIBRARIES, "transformers")}
    library_logs.route_to(handler)
    yield records
    library_logs._handler = None
    logging.captureWarnings(False)
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def test_library_warnings_reach_the_log_and_not_stderr(routed, capfd):
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
    warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
    library_logs.after_transformers_import()
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
    assert [r.getMessage().split(":")[0] for r in routed][:1] == ["Failed to load CPU gemm_4bit_forward"]
    assert any("is deprecated" in r.getMessage() for r in routed)
    assert any(r.getMessage() == "a transformers warning" for r in routed)
    assert "gemm_4bit" not in capfd.readouterr().err and not transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_default_handler()
    transformers_logging.enable_progress_bar()
