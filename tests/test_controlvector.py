"""llama.cpp control vectors: exact round trip, the file layout llama.cpp reads, clear errors."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from actsteer import SteeringVector
from actsteer.controlvector import ControlVectorError, export_control_vector, import_control_vector
from actsteer.vector import VectorMeta


def _vector(layers=(0, 1, 2, 3), d=64, site="resid_post", dtype=torch.float32) -> SteeringVector:
    g = torch.Generator().manual_seed(7)
    rows = torch.randn(len(layers), d, generator=g).to(dtype)
    return SteeringVector(rows, layers, site, VectorMeta(model="tiny", dataset="toy", n_items=5))


def _llama_cpp_rows(path, n_layer: int) -> dict[int, np.ndarray]:
    """What llama.cpp adds at each block output, following its loader (written here from
    common_control_vector_load_one and llama_adapter_cvec::apply): direction.N goes to
    row N - 1 of a flat buffer, and block il (1 <= il < n_layer) reads row il - 1."""
    reader = gguf.GGUFReader(str(path))
    n_embd = None
    buffer: list[float] = []
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        assert prefix == "direction" and int(index) > 0
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert len(tensor.shape) == 1
        n_embd = n_embd or int(tensor.n_elements)
        layer = int(index)
        buffer += [0.0] * max(0, n_embd * layer - len(buffer))
        buffer[n_embd * (layer - 1): n_embd * layer] = tensor.data.tolist()
    assert n_embd is not None
    return {il: np.asarray(buffer[n_embd * (il - 1): n_embd * il], dtype=np.float32)
            for il in range(1, n_layer) if n_embd * il <= len(buffer)}


def test_round_trip_is_exact(tmp_path):
    v = _vector()
    path = export_control_vector(v, tmp_path / "v.gguf", layers=[1, 3])
    again = import_control_vector(path)
    assert again.layers == (1, 3) and again.site == "resid_post"
    assert again.directions.dtype == torch.float32
    assert torch.equal(again.directions, v.select([1, 3]).directions)
    assert again.meta.model == "tiny" and again.meta.dataset == "toy"  # provenance travels
    assert again.meta.history[-2:] == ("export_control_vector(llama)",
                                       "import_control_vector(v.gguf, site=resid_post)")


def test_bf16_vector_exports_as_float32_exactly(tmp_path):
    v = _vector(dtype=torch.bfloat16)
    again = import_control_vector(export_control_vector(v, tmp_path / "v.gguf", layers=[2]))
    assert torch.equal(again.directions, v.select([2]).directions.float())


def test_file_has_the_layout_llama_cpp_reads(tmp_path):
    v = _vector()
    path = export_control_vector(v, tmp_path / "v.gguf", layers=[3, 1], coefficient=-2.5,
                                 model_hint="llama")
    reader = gguf.GGUFReader(str(path))
    names = {t.name: t for t in reader.tensors}
    assert set(names) == {"direction.1", "direction.3"}
    for layer in (1, 3):
        tensor = names[f"direction.{layer}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(n) for n in tensor.shape] == [64]
        np.testing.assert_array_equal(np.asarray(tensor.data), (-2.5 * v.at(layer)).numpy())

    def value(key):
        field = reader.get_field(key)
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types[0] == gguf.GGUFValueType.STRING else int(part[0])

    assert value("general.architecture") == "controlvector"
    assert value("controlvector.model_hint") == "llama"
    assert value("controlvector.layer_count") == 2
    # block il's output gets direction.il: actsteer's resid_post at layer il
    rows = _llama_cpp_rows(path, n_layer=4)
    assert sorted(rows) == [1, 2, 3]
    np.testing.assert_array_equal(rows[1], (-2.5 * v.at(1)).numpy())
    np.testing.assert_array_equal(rows[3], (-2.5 * v.at(3)).numpy())
    assert not rows[2].any()


def test_default_layers_drop_layer_zero_with_a_warning(tmp_path):
    v = _vector()
    with pytest.warns(UserWarning, match="layer 0 is left out"):
        path = export_control_vector(v, tmp_path / "v.gguf")
    assert import_control_vector(path).layers == (1, 2, 3)


def test_resid_pre_import_shifts_to_the_next_block(tmp_path):
    path = export_control_vector(_vector(), tmp_path / "v.gguf", layers=[1, 2])
    pre = import_control_vector(path, site="resid_pre")
    assert pre.layers == (2, 3) and pre.site == "resid_pre"
    assert torch.equal(pre.at(2), import_control_vector(path).at(1))
    assert import_control_vector(path, layers=[2]).layers == (2,)


def test_import_checks_the_model(tmp_path, tiny_model):
    from actsteer.vector import VectorMismatchError

    wide = export_control_vector(_vector(d=32), tmp_path / "w.gguf", layers=[1])
    with pytest.raises(VectorMismatchError, match="d_model 32"):
        import_control_vector(wide, model=tiny_model)


def test_export_refusals(tmp_path):
    target = tmp_path / "v.gguf"
    with pytest.raises(ControlVectorError, match="'mlp_out' vector cannot be exported"):
        export_control_vector(_vector(site="mlp_out"), target, layers=[1])
    with pytest.raises(ControlVectorError, match="layer 0 cannot be exported"):
        export_control_vector(_vector(), target, layers=[0, 1])
    with pytest.raises(ControlVectorError, match="no layer to export"), pytest.warns(UserWarning):
        export_control_vector(_vector(layers=(0,)), target)
    with pytest.raises(ControlVectorError, match="not finite"):
        export_control_vector(_vector(), target, layers=[1], coefficient=float("inf"))
    assert not target.exists()


def _gguf(path, arch: str, tensors: dict[str, np.ndarray]):
    writer = gguf.GGUFWriter(str(path), arch)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(("arch", "tensors", "message"), [
    ("llama", {"blk.0.attn_q.weight": np.zeros((4, 4), np.float32)},
     "architecture 'llama', not a control vector"),
    ("controlvector", {"direction.x": np.zeros(4, np.float32)}, "not named direction.N"),
    ("controlvector", {"direction.0": np.zeros(4, np.float32)}, "direction.0 is invalid"),
    ("controlvector", {"direction.1": np.zeros(4, np.float16)}, "needs 1-D F32"),
    ("controlvector", {"direction.1": np.zeros((2, 4), np.float32)}, "needs 1-D F32"),
    ("controlvector", {"direction.1": np.zeros(4, np.float32),
                       "direction.2": np.zeros(5, np.float32)}, r"different widths \[4, 5\]"),
    ("controlvector", {}, "holds no direction tensors"),
])
def test_import_refuses_what_llama_cpp_would(tmp_path, arch, tensors, message):
    path = _gguf(tmp_path / "bad.gguf", arch, tensors)
    with pytest.raises(ControlVectorError, match=message) as caught:
        import_control_vector(path)
    assert str(path) in str(caught.value)


def test_import_refuses_non_gguf_and_other_sites(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ControlVectorError, match="is not a GGUF file"):
        import_control_vector(junk)
    with pytest.raises(ControlVectorError, match="site 'attn_out'"):
        import_control_vector(junk, site="attn_out")
    with pytest.raises(FileNotFoundError):
        import_control_vector(tmp_path / "missing.gguf")


def test_repeng_style_file_imports(tmp_path):
    # a file as repeng writes it: no actsteer metadata, directions in any order
    rows = {5: np.full(8, 0.5, np.float32), 2: np.arange(8, dtype=np.float32)}
    writer = gguf.GGUFWriter(str(tmp_path / "r.gguf"), "controlvector")
    writer.add_string("controlvector.model_hint", "mistral")
    writer.add_uint32("controlvector.layer_count", 2)
    for layer, row in rows.items():
        writer.add_tensor(f"direction.{layer}", row)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    v = import_control_vector(tmp_path / "r.gguf")
    assert v.layers == (2, 5) and v.meta.model == "mistral" and v.meta.method == "control_vector"
    assert torch.equal(v.at(2), torch.arange(8, dtype=torch.float32))
