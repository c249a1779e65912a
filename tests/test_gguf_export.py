"""llama.cpp's converter, unpacked from the pinned llama.cpp source: clear errors before and after it runs."""
import pytest

from embedfactory.llm import gguf


def test_an_unknown_type_is_refused_before_the_converter_runs(tmp_path):
    with pytest.raises(ValueError, match="q4_k_m.*one of f32, f16, bf16, q8_0"):
        gguf.convert(tmp_path, tmp_path / "m.gguf", "q4_k_m")


def test_a_folder_without_a_model_fails_naming_it_and_leaves_no_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match=f"could not convert {tmp_path / 'empty'} to GGUF"):
        gguf.convert(tmp_path / "empty", tmp_path / "m.gguf")
    assert gguf.converter().name == "convert_hf_to_gguf.py" and (gguf.converter().parent / "gguf-py").is_dir()
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"]  # neither the file nor a partial one
