"""SteeringVector values: arithmetic, files, checks against a model; PCA and probe methods."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from actsteer import SteeringVector
from actsteer.extraction import ContrastivePair, caa_vector, directions_from_pairs
from actsteer.models import default_backend
from actsteer.vector import VectorFileError, VectorMeta, VectorMismatchError, match_norms


def _vector(seed=0, layers=(0, 1, 2, 3), d=64) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(torch.randn(len(layers), d, generator=g), layers,
                          meta=VectorMeta(model="tiny", dataset=f"d{seed}", n_items=3))


def test_operations_return_new_values():
    v, w = _vector(0), _vector(1)
    original = v.directions.clone()
    assert torch.equal((2 * v).directions, 2 * original)
    assert torch.equal((v - w).directions, original - w.directions)
    assert torch.equal((-v).directions, -original)
    assert torch.equal(v.directions, original)  # untouched
    assert (2 * v).meta.history == ("scaled(2)",)
    assert torch.allclose(v.normalized().directions.norm(dim=-1), torch.ones(4))
    picked = v.select([3, 1])
    assert picked.layers == (3, 1) and torch.equal(picked.at(1), original[1])
    assert v.norms()[2] == pytest.approx(float(original[2].norm()))


def test_controls_keep_norms():
    v = _vector(0)
    for control in (v.permuted(3), v.random_like(3)):
        torch.testing.assert_close(control.directions.norm(dim=-1), v.directions.norm(dim=-1))
        assert not torch.allclose(control.directions, v.directions)
    assert torch.equal(torch.sort(v.permuted(1).directions, -1).values,
                       torch.sort(v.directions, -1).values)


def test_mismatches_are_explained():
    with pytest.raises(VectorMismatchError, match="lacks layers"):
        _ = _vector(0) + _vector(1, layers=(0, 1))
    with pytest.raises(VectorMismatchError, match="d_model differs"):
        _ = _vector(0) + _vector(1, d=32)
    with pytest.raises(KeyError, match="layer 9"):
        _vector(0).at(9)
    with pytest.raises(VectorMismatchError, match="3 directions for 2 layers"):
        SteeringVector(torch.zeros(3, 4), (0, 1))


def test_match_norms_gives_common_norm():
    vs = [_vector(0), 3 * _vector(1)]
    matched = match_norms(vs, 2)
    norms = [float(v.directions.norm()) for v in matched]
    assert norms[0] == pytest.approx(norms[1])
    assert norms[0] == pytest.approx((float(vs[0].at(2).norm()) + float(vs[1].at(2).norm())) / 2)


def test_save_load_roundtrip(tmp_path, tiny_model):
    v = (2 * _vector(0)).select([1, 3])
    path = v.save(tmp_path / "v.safetensors")
    again = SteeringVector.load(path, model=tiny_model)
    assert again.equals(v)
    assert not again.equals(2 * v)


def test_load_refuses_pickles_and_bad_shapes(tmp_path, tiny_model):
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"directions": torch.zeros(2, 64)}))
    with pytest.raises(VectorFileError, match="never loads pickles"):
        SteeringVector.load(evil)
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"directions": torch.zeros(3, 64)}, str(bad),
              metadata={"actsteer": '{"site": "resid_post", "layers": [0, 1], "meta": {}}'})
    with pytest.raises(VectorFileError, match="3 directions for 2 layers"):
        SteeringVector.load(bad)
    wide = _vector(0, d=32).save(tmp_path / "wide.safetensors")
    with pytest.raises(VectorMismatchError, match="d_model 32"):
        SteeringVector.load(wide, model=tiny_model)
    deep = _vector(0, layers=(5,)).save(tmp_path / "deep.safetensors")
    with pytest.raises(VectorMismatchError, match=r"layers \[5\]"):
        SteeringVector.load(deep, model=tiny_model)


def test_weight_processing_mismatch_warns(tmp_path, tiny_model):
    v = SteeringVector(torch.zeros(1, 64), (0,), meta=VectorMeta(weight_processing="none"))
    with pytest.warns(UserWarning, match="weight processing"):
        v.check_fits(tiny_model)


def test_methods_on_synthetic_pairs():
    torch.manual_seed(0)
    direction = torch.zeros(8)
    direction[2] = 1.0
    negative = torch.randn(200, 1, 8)
    positive = negative + 3.0 * direction + 0.1 * torch.randn(200, 1, 8)
    mean = directions_from_pairs(positive, negative, "mean_diff")[0]
    assert mean[2] == pytest.approx(3.0, abs=0.05)
    for method in ("pca", "probe"):
        found = directions_from_pairs(positive, negative, method)[0]
        cosine = torch.nn.functional.cosine_similarity(found, direction, dim=0)
        assert cosine > 0.9, method  # sign fixed towards the mean difference
    with pytest.raises(ValueError, match="'lda'"):
        directions_from_pairs(positive, negative, "lda")  # type: ignore[arg-type]


def test_caa_records_provenance(tiny_model):
    pairs = [ContrastivePair(f"p{i} (", "A", "B") for i in range(3)]
    v = caa_vector(tiny_model, pairs, layers=[0, 2], read="answer", dataset="toy")
    assert v.layers == (0, 2) and v.d_model == 64
    assert (v.meta.method, v.meta.read_position, v.meta.n_items) == ("mean_diff", "answer", 3)
    assert v.meta.model_n_layers == 4 and v.meta.backend == default_backend()


def _file_with_header(path, text: str):
    from safetensors.torch import save_file

    save_file({"directions": torch.zeros(2, 64)}, str(path), metadata={"actsteer": text})
    return path


_GOOD = {"site": "resid_post", "layers": [0, 1], "meta": {"model": "tiny", "n_items": 3}}


def _with(**changes):
    import copy
    import json

    info = copy.deepcopy(_GOOD)
    for key, value in changes.items():
        if key.startswith("meta_"):
            info["meta"][key[5:]] = value
        elif value is _DROP:
            del info[key]
        else:
            info[key] = value
    return json.dumps(info)


_DROP = object()


@pytest.mark.parametrize(("header", "message"), [
    ("{not json", "not valid JSON"),
    ("[0, 1]", "JSON list, expected an object"),
    (_with(meta=_DROP), r"lacks \['meta'\]"),
    (_with(layers=_DROP), r"lacks \['layers'\]"),
    (_with(site=_DROP), r"lacks \['site'\]"),
    (_with(layers="0,1"), "layers '0,1' is not a list of integers"),
    (_with(layers=[0, 1.5]), r"layers \[0, 1.5\] is not a list of integers"),
    (_with(site=3), "site 3 is not one of"),
    (_with(site="resid_middle"), "site 'resid_middle' is not one of"),
    (_with(meta=["model", "tiny"]), "meta is a JSON list"),
    (_with(meta_n_items="three"), "meta field 'n_items' is 'three', expected an integer"),
    (_with(meta_model_n_layers=True), "'model_n_layers' is True, expected an integer"),
    (_with(meta_model=None), "'model' is None, expected a string"),
    (_with(meta_history="scaled(2)"), r"'history' is 'scaled\(2\)', expected a list of str"),
    (_with(meta_diagnostics=[1, 2]), r"'diagnostics' is \[1, 2\], expected an object"),
    (_with(meta_colour="red"), r"meta has unknown fields \['colour'\]"),
    (_with(extra=1), r"unknown entries \['extra'\]"),
])
def test_corrupt_metadata_is_a_vector_file_error(tmp_path, header, message):
    path = _file_with_header(tmp_path / "corrupt.safetensors", header)
    with pytest.raises(VectorFileError, match=message) as caught:
        SteeringVector.load(path)
    assert str(path) in str(caught.value)  # names the file
    assert "SteeringVector.save" in str(caught.value)  # and the fix


def test_good_header_of_the_corrupt_cases_loads(tmp_path):
    # The corrupt cases above differ from this header in one entry only.
    vector = SteeringVector.load(_file_with_header(tmp_path / "ok.safetensors", _with()))
    assert vector.layers == (0, 1) and vector.meta.n_items == 3 and vector.meta.diagnostics == {}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_vector_files_get_the_umask_mode(tmp_path, umask):
    import os
    import stat

    previous = os.umask(umask)
    try:
        path = _vector(0).save(tmp_path / "v.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_diagnostics_round_trip(tmp_path):
    diagnostics = {"15": {"cosine": 0.25, "separation": (0.5, 0.75), "n_pairs": 40,
                          "note": None, "held_out": True, "edge": float("inf")}}
    meta = VectorMeta(model="tiny", diagnostics=diagnostics)
    assert meta.diagnostics["15"]["separation"] == [0.5, 0.75]  # tuples stored as lists
    assert isinstance(hash(meta), int)  # still hashable: diagnostics is not hashed
    v = SteeringVector(torch.randn(1, 64), (15,), meta=meta)
    again = SteeringVector.load(v.save(tmp_path / "d.safetensors"))
    assert again.equals(v)
    assert again.meta.diagnostics == {"15": {"cosine": 0.25, "separation": [0.5, 0.75],
                                             "n_pairs": 40, "note": None, "held_out": True,
                                             "edge": float("inf")}}


def test_a_vector_not_trained_writes_no_training_entry(tmp_path):
    """Headers of vectors read from activations stay as before ``training`` existed, so older
    versions read them; a trained vector's header carries it."""
    from safetensors import safe_open

    plain = SteeringVector(torch.randn(1, 64), (3,), meta=VectorMeta(model="tiny"))
    trained = SteeringVector(torch.randn(1, 64), (3,),
                             meta=VectorMeta(model="tiny", training={"objective": "bipo"}))
    headers = []
    for name, vector in (("plain", plain), ("trained", trained)):
        path = vector.save(tmp_path / f"{name}.safetensors")
        with safe_open(str(path), "pt") as handle:
            headers.append(json.loads(handle.metadata()["actsteer"])["meta"])
    assert "training" not in headers[0]
    assert headers[1]["training"] == {"objective": "bipo"}
    assert SteeringVector.load(tmp_path / "plain.safetensors").meta.training == {}


def test_diagnostics_must_be_plain_json():
    with pytest.raises(TypeError, match=r"key 15 \(int\).*use '15'"):
        VectorMeta(diagnostics={15: 0.5})
    with pytest.raises(TypeError, match=r"diagnostics\['15'\] holds Tensor.*float\(x\)"):
        VectorMeta(diagnostics={"15": torch.tensor(0.5)})
    with pytest.raises(TypeError, match="must be a mapping"):
        VectorMeta(diagnostics=[0.5])  # type: ignore[arg-type]


def test_negative_layers_and_integer_directions_are_refused(tmp_path):
    """Layers count from 0 (no Python-style -1), and directions are floating point:
    refused on construction and on load, naming the file."""
    from safetensors.torch import save_file

    from actsteer.errors import InvalidTypeError, InvalidValueError

    with pytest.raises(InvalidValueError, match=r"layers \[-1, 0\].*>= 0"):
        SteeringVector(torch.zeros(2, 4), (-1, 0))
    with pytest.raises(InvalidTypeError, match=r"torch\.int64.*floating"):
        SteeringVector(torch.zeros(2, 4, dtype=torch.long), (0, 1))
    with pytest.raises(InvalidTypeError, match="floating"):
        _vector(0).to(dtype=torch.int32)
    cases = [("negative", torch.zeros(2, 64), "[-1, 0]", r"layers \[-1, 0\]"),
             ("integer", torch.ones(2, 64, dtype=torch.int64), "[0, 1]", r"torch\.int64")]
    for name, directions, layers, message in cases:
        path = tmp_path / f"{name}.safetensors"
        save_file({"directions": directions}, str(path), metadata={
            "actsteer": f'{{"site": "resid_post", "layers": {layers}, "meta": {{}}}}'})
        with pytest.raises(VectorFileError, match=rf"{name}\.safetensors.*{message}"):
            SteeringVector.load(path)
