import pytest

from workbench.config import ModelSpec
from workbench.models.loading import ModelSession


@pytest.fixture
def models(tiny_model_dir):
    """A ModelSession with the tiny random Llama loaded."""
    session = ModelSession()
    for _ in session.load(ModelSpec(kind="folder", location=str(tiny_model_dir))):
        pass
    return session
