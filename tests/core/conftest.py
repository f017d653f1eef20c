import pytest

from workbench.config import ModelSpec
from workbench.models.loading import ModelSession


def loaded(folder, **options) -> ModelSession:
    """A ModelSession with the model in `folder` loaded (`options`: ModelSpec's, e.g. quantization)."""
    session = ModelSession()
    for _ in session.load(ModelSpec(kind="folder", location=str(folder), **options)):
        pass
    return session


@pytest.fixture
def models(tiny_model_dir):
    """A ModelSession with the tiny random Llama loaded."""
    return loaded(tiny_model_dir)
