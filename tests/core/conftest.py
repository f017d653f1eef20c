import pytest

from workbench.config import ModelSpec
from workbench.models.loading import ModelSession


def loaded(folder) -> ModelSession:
    """A ModelSession with the model in `folder` loaded."""
    session = ModelSession()
    for _ in session.load(ModelSpec(kind="folder", location=str(folder))):
        pass
    return session


@pytest.fixture
def models(tiny_model_dir):
    """A ModelSession with the tiny random Llama loaded."""
    return loaded(tiny_model_dir)
