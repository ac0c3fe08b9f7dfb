"""Model Surgery: probe, region, edits as values, exact in-place edit and revert, export.

Most tests run on the tiny random Llama with two changes written into a copy of its
folder: random weights for the RMSNorm before each MLP (the tiny model's are all ones,
which would hide any mix-up between checkpoint and folded coordinates) and gate rows
planted against a known unit vector. Each is loaded on both backends, with and without
TransformerLens's weight processing.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from actsteer import SteeringVector
from actsteer.errors import ActsteerError, InvalidValueError, MissingFileError
from actsteer.models import load_model, quiet_deprecation
from actsteer.models.info import available_backends, record
from actsteer.surgery import (
    EDIT_FILE,
    ExportFolderError,
    Probe,
    SurgeryEdit,
    SurgeryError,
    SurgeryFileError,
    apply_surgery,
    make_edit,
    operate,
    save_surgery_hf,
    select_region,
    surgery,
    train_probe,
)
from actsteer.vector import VectorMeta

D_MODEL, D_MLP = 64, 128
PLANTED = {1: (3, 17, 40), 2: (5, 99)}  # rows anti-aligned with U in checkpoint coordinates
ALIGNED = {1: (8,), 2: (6,)}  # rows aligned with U: the wrong side
DECOYS = {1: (60, 61)}  # anti-aligned with U only after ln2.weight is folded in
THRESHOLD = -0.9
TOKENS = torch.tensor([[1, 50, 300, 7000, 12, 9, 4000, 2, 77, 31]])


def _unit(seed: int, d: int = D_MODEL) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


U = _unit(100)


@dataclass
class Planted:
    folder: Path
    hf: torch.nn.Module
    norms: dict[int, torch.Tensor]  # ln2 weights per layer


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_folder) -> Planted:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in hf.model.layers:  # the norm folded into the gate rows
            weight = layer.post_attention_layernorm.weight
            weight.copy_(torch.rand(weight.shape, generator=g) * 1.7 + 0.3)
        for layer, rows in PLANTED.items():
            gate = hf.model.layers[layer].mlp.gate_proj.weight
            for j in rows:
                gate[j] = -U * 3.0 + 0.05 * torch.randn(D_MODEL, generator=g)
            for j in ALIGNED[layer]:
                gate[j] = U * 3.0
        norm = hf.model.layers[1].post_attention_layernorm.weight
        for j in DECOYS[1]:
            hf.model.layers[1].mlp.gate_proj.weight[j] = -U / norm + 0.01 * torch.randn(
                D_MODEL, generator=g)
    folder = tmp_path_factory.mktemp("planted") / "tiny-planted"
    hf.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_folder).save_pretrained(folder)
    norms = {i: layer.post_attention_layernorm.weight.detach().clone()
             for i, layer in enumerate(hf.model.layers)}
    return Planted(folder, hf, norms)


MODES = [(backend, fold) for fold in (True, False) for backend in available_backends()]


@pytest.fixture(scope="module", params=MODES,
                ids=[f"{b}-{'fold' if f else 'raw'}" for b, f in MODES])
def model(request, planted):
    backend, fold = request.param
    return load_model(planted.folder, backend=backend, fold_ln=fold)


@pytest.fixture(scope="module")
def hooked(planted):
    return load_model(planted.folder)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS)


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(before: dict, model) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"changed: {changed}"


def _gate_key(model, layer: int) -> tuple[str, bool]:
    """State-dict key of block ``layer``'s gate and whether rows are its columns."""
    if type(model).__name__ == "HookedTransformer":
        return f"blocks.{layer}.mlp.W_gate", True
    return f"blocks.{layer}.mlp.gate.weight", False


def _is_folded(model) -> bool:
    from actsteer.models import model_info

    return model_info(model).weight_processing == "fold_ln+centre"


def _edit(model, strength: float = 3.0, seed: int = 1, k: int = 5) -> SurgeryEdit:
    probe = Probe.from_direction(_unit(seed), layer=2)
    return make_edit(model, probe, select_region(model, probe, layers=[0, 2, 3], k=k),
                     strength=strength)


# -- coordinates -----------------------------------------------------------------------

def test_transformer_lens_folds_the_norm_into_the_gate_rows(planted):
    """The fact the coordinate handling rests on, checked against the checkpoint."""
    hooked = load_model(planted.folder)
    bridge = load_model(planted.folder, backend="bridge")
    for layer in (1, 3):
        gate = planted.hf.model.layers[layer].mlp.gate_proj.weight.detach()
        norm = planted.norms[layer]
        assert torch.equal(hooked.blocks[layer].mlp.W_gate, (norm[None, :] * gate).T)
        hf_layer = bridge.original_model.model.layers[layer]
        assert torch.equal(hf_layer.mlp.gate_proj.weight, gate * norm[None, :])
        assert torch.equal(hf_layer.post_attention_layernorm.weight, torch.ones(D_MODEL))
        assert not torch.equal(gate * norm[None, :], gate)  # the norm is visible


def test_region_cosines_are_in_checkpoint_coordinates(model, planted):
    region = select_region(model, U, layers=[1, 3], threshold=1.0)
    for layer in (1, 3):
        gate = planted.hf.model.layers[layer].mlp.gate_proj.weight.detach().double()
        expected = torch.nn.functional.cosine_similarity(gate, U.double()[None, :], dim=1)
        assert region.rows[layer] == tuple(range(D_MLP))
        torch.testing.assert_close(torch.tensor(region.cosines[layer], dtype=torch.float64),
                                   expected, atol=1e-6, rtol=0)


def test_planted_rows_are_found_by_threshold_and_by_k(model, planted):
    by_threshold = select_region(model, U, threshold=THRESHOLD)
    assert by_threshold.rows == {0: (), **PLANTED, 3: ()}
    assert by_threshold.threshold == THRESHOLD and by_threshold.k is None
    recorded = make_edit(model, U, by_threshold)
    assert recorded.threshold == THRESHOLD and recorded.k is None and recorded.n_rows == 5
    assert all(c < THRESHOLD for cs in by_threshold.cosines.values() for c in cs)
    by_k = select_region(model, Probe.from_direction(U * 5.0), layers=[1, 2], k=3)
    assert by_k.rows[1] == PLANTED[1] and by_k.k == 3 and by_k.threshold is None
    assert set(PLANTED[2]) < set(by_k.rows[2]) and len(by_k.rows[2]) == 3
    overall = select_region(model, U, layers=[2, 1], k=5, per="all")
    assert overall.rows == PLANTED and overall.n_rows == 5 and overall.k == 5
    # the decoys are anti-aligned only in folded coordinates: a mix-up would select them
    norm = planted.norms[1]
    decoy = planted.hf.model.layers[1].mlp.gate_proj.weight[DECOYS[1][0]].detach()
    assert torch.nn.functional.cosine_similarity(decoy * norm, U, dim=0) < -0.99
    assert torch.nn.functional.cosine_similarity(decoy, U, dim=0) > THRESHOLD
    flipped = select_region(model, Probe.from_direction(U).flipped(), threshold=THRESHOLD)
    assert flipped.rows == {0: (), **ALIGNED, 3: ()}


# -- applying and reverting -----------------------------------------------------------

def test_edit_touches_only_the_selected_rows_and_reverts_exactly(model, planted):
    edit = _edit(model)
    before, logits = _snapshot(model), _logits(model)
    handle = apply_surgery(model, edit)
    after = model.state_dict()
    assert before.keys() == after.keys()
    edited_keys = {_gate_key(model, layer)[0] for layer in edit.layers}
    assert [k for k in before if not torch.equal(before[k], after[k])] == sorted(
        edited_keys, key=list(before).index)
    for layer in edit.layers:
        key, transposed = _gate_key(model, layer)
        old, new = (before[key].T, after[key].T) if transposed else (before[key], after[key])
        rows = list(edit.rows[layer])
        others = [j for j in range(D_MLP) if j not in rows]
        assert torch.equal(old[others], new[others])
        step = edit.added * (planted.norms[layer] if _is_folded(model) else 1.0)
        torch.testing.assert_close(new[rows] - old[rows], step.expand(len(rows), -1),
                                   atol=1e-5, rtol=0)
    assert not any(hook.fwd_hooks for hook in model.hook_dict.values())  # weights, not hooks
    assert (_logits(model) - logits).abs().max() > 1e-3
    handle.revert()
    _assert_same_state(before, model)
    assert torch.equal(_logits(model), logits)
    handle.revert()  # a second revert does nothing
    _assert_same_state(before, model)


def test_context_manager_restores_after_an_exception(model):
    edit = _edit(model, strength=-2.0)
    before, logits = _snapshot(model), _logits(model)
    with pytest.raises(RuntimeError, match="inside"), surgery(model, edit) as edited:
        assert edited is model
        assert not torch.equal(_logits(model), logits)
        raise RuntimeError("inside")
    _assert_same_state(before, model)
    assert torch.equal(_logits(model), logits)


def test_strength_zero_is_the_identity(model):
    logits = _logits(model)
    with surgery(model, _edit(model).with_strength(0.0)):
        assert torch.equal(_logits(model), logits)


def test_every_backend_computes_the_same_edited_model(planted):
    """Independent reference: the plain transformers model with the rows edited by hand."""
    hooked = load_model(planted.folder)
    edit = _edit(hooked, strength=4.0)
    reference = copy.deepcopy(planted.hf)
    with torch.no_grad():
        for layer, rows in edit.rows.items():
            reference.model.layers[layer].mlp.gate_proj.weight[list(rows)] += edit.added
        expected = _centred(reference(TOKENS).logits)
        plain = _centred(planted.hf(TOKENS).logits)
    assert (expected - plain).abs().max() > 1e-2
    for backend, fold in MODES:
        other = hooked if (backend, fold) == ("hooked", True) else load_model(
            planted.folder, backend=backend, fold_ln=fold)
        with surgery(other, edit):
            got = _centred(_logits(other))
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_operate_returns_an_edited_copy(hooked):
    edit = _edit(hooked)
    before, logits = _snapshot(hooked), _logits(hooked)
    edited = operate(hooked, edit)
    assert edited is not hooked
    _assert_same_state(before, hooked)
    with surgery(hooked, edit):
        expected = _logits(hooked)
    assert torch.equal(_logits(edited), expected)
    assert not torch.equal(expected, logits)
    select_region(edited, U, k=1)  # the copy still finds its checkpoint


def test_reverting_out_of_order_is_refused(hooked):
    before, logits = _snapshot(hooked), _logits(hooked)
    edit = _edit(hooked, strength=1.0)  # selected once: the same rows twice
    first = apply_surgery(hooked, edit)
    second = apply_surgery(hooked, edit.with_strength(2.0))
    with pytest.raises(SurgeryError, match="revert that one first"):
        first.revert()
    assert first.active
    second.revert()
    first.revert()
    _assert_same_state(before, hooked)
    assert torch.equal(_logits(hooked), logits)


# -- values and files -----------------------------------------------------------------

def test_edit_values_record_provenance_and_scale(hooked, planted):
    probe = train_probe(torch.randn(6, D_MODEL) + 3 * U, torch.randn(5, D_MODEL), layer=2)
    region = select_region(hooked, probe, layers=[1, 2], k=2, per="all")
    edit = make_edit(hooked, probe, region, strength=1.5)
    assert edit.model == str(planted.folder) and edit.k == 2 and edit.per == "all"
    assert edit.threshold is None and edit.n_layers == 4 and edit.d_mlp == D_MLP
    assert edit.probe.layer == 2 and edit.probe.n_positive == 6 and edit.probe.n_negative == 5
    assert edit.probe.accuracy == probe.accuracy
    assert edit.rows == region.rows and edit.n_rows == region.n_rows
    doubled = edit.scaled(2.0)
    assert doubled.strength == 3.0 and edit.strength == 1.5
    assert doubled.history == ("scaled(2)",)
    torch.testing.assert_close(doubled.added, 2 * edit.added)
    assert not doubled.equals(edit) and doubled.with_strength(1.5).rows == edit.rows


def test_save_and_load_round_trip(hooked, tmp_path):
    edit = _edit(hooked, strength=2.5)
    path = edit.save(tmp_path / "edit.safetensors")
    loaded = SurgeryEdit.load(path, model=hooked)
    assert loaded.equals(edit) and loaded.rows == edit.rows and loaded.probe == edit.probe
    with surgery(hooked, edit):
        original = _logits(hooked)
    with surgery(hooked, loaded):
        again = _logits(hooked)
    torch.testing.assert_close(again, original, atol=1e-5, rtol=0)
    assert not loaded.equals(edit.scaled(1.0 + 1e-6))


def _rewrite_header(source: Path, target: Path, change) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    info = json.loads(header["actsteer_surgery"])
    save_file(tensors, str(target), metadata={"actsteer_surgery": change(info)})
    return target


@pytest.mark.parametrize(("change", "message"), [
    (lambda info: "{not json", "not valid JSON"),
    (lambda info: json.dumps({**info, "format": 9}), "format-1"),
    (lambda info: json.dumps({**info, "colour": "red"}), "unknown fields"),
    (lambda info: json.dumps({**info, "rows": {"0": ["a"]}}), "layer -> list"),
    (lambda info: json.dumps({**info, "rows": {"0": [999]}}), "neuron index 999"),
    (lambda info: json.dumps({**info, "rows": {"9": [1]}}), "layer 9"),
    (lambda info: json.dumps({**info, "strength": "big"}), "strength"),
    (lambda info: json.dumps({**info, "probe": {"accuracy": 2.0}}), "accuracy"),
])
def test_corrupt_files_raise_a_surgery_file_error(hooked, tmp_path, change, message):
    good = _edit(hooked).save(tmp_path / "good.safetensors")
    bad = _rewrite_header(good, tmp_path / "bad.safetensors", change)
    with pytest.raises(SurgeryFileError, match=message):
        SurgeryEdit.load(bad)


def test_wrong_files_and_models_are_refused(hooked, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(SurgeryFileError, match="never loads pickles"):
        SurgeryEdit.load(tmp_path / "junk.safetensors")
    vector = SteeringVector(torch.ones(1, D_MODEL), (1,), meta=VectorMeta(model="tiny"))
    with pytest.raises(SurgeryFileError, match=r"SteeringVector\.load"):
        SurgeryEdit.load(vector.save(tmp_path / "vector.safetensors"))
    with pytest.raises(MissingFileError, match="no surgery edit file"):
        SurgeryEdit.load(tmp_path / "missing.safetensors")
    edit = _edit(hooked)
    wide = replace(edit, d_mlp=256)
    with pytest.raises(SurgeryError, match="d_mlp 256"):
        SurgeryEdit.load(wide.save(tmp_path / "wide.safetensors"), model=hooked)
    before = _snapshot(hooked)
    with pytest.raises(SurgeryError, match="d_mlp 256"):
        apply_surgery(hooked, wide)
    _assert_same_state(before, hooked)


def test_hf_export_is_plain_transformers(hooked, planted, tmp_path):
    """The folder reproduces the edited model: within 1e-5 in float64, and within 1e-4 in
    float32, where TransformerLens and transformers already differ by ~1e-5 unedited."""
    from transformers import AutoModelForCausalLM

    edit = _edit(hooked, strength=4.0)
    folder = save_surgery_hf(edit, tmp_path / "edited", source=planted.folder)
    for dtype, atol in ((torch.float64, 1e-5), (torch.float32, 1e-4)):
        ours_model = hooked if dtype == torch.float32 else load_model(planted.folder, dtype=dtype)
        reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        with torch.no_grad():
            theirs = _centred(reloaded(TOKENS).logits)
        with surgery(ours_model, edit):
            ours = _centred(_logits(ours_model))
        torch.testing.assert_close(theirs, ours, atol=atol, rtol=0)
        assert (ours - _centred(_logits(ours_model))).abs().max() > 1e4 * atol  # it shows
    assert SurgeryEdit.load(folder / EDIT_FILE).equals(edit)
    for layer in range(4):
        rows = list(edit.rows.get(layer, ()))
        old = planted.hf.model.layers[layer].mlp.gate_proj.weight.detach()
        new = reloaded.model.layers[layer].mlp.gate_proj.weight.detach()
        others = [j for j in range(D_MLP) if j not in rows]
        assert torch.equal(old[others], new[others])
        assert torch.equal(new[rows], old[rows] + edit.added)
    with pytest.raises(ExportFolderError, match="not empty"):
        save_surgery_hf(edit, folder)  # default source: the model the edit was made on


# -- the probe ------------------------------------------------------------------------

def test_probe_recovers_a_separating_direction():
    d, n = 32, 200
    g = torch.Generator().manual_seed(3)
    direction = _unit(4, d)
    noise = torch.randn(2 * n, d, generator=g)
    noise -= (noise @ direction)[:, None] * direction  # orthogonal to the direction
    margin = 1.0 + torch.rand(2 * n, generator=g)
    positive = noise[:n] + (margin[:n] + 0.5)[:, None] * direction
    negative = noise[n:] - (margin[n:] - 0.5)[:, None] * direction  # offset: bias matters
    probe = train_probe(positive, negative, layer=5)
    assert probe.accuracy == 1.0 and probe.n == 2 * n and probe.layer == 5
    assert float(probe.direction @ direction) > 0.9
    assert probe.predict(positive).all() and not probe.predict(negative).any()
    assert float(probe.direction.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(probe.flipped().direction @ direction) < -0.9
    assert not probe.flipped().predict(positive).any()


def test_probes_from_given_directions():
    vector = SteeringVector(torch.stack([U * 7, -U]), (3, 4), meta=VectorMeta(n_items=12))
    probe = Probe.from_vector(vector, 3)
    torch.testing.assert_close(probe.direction, U)
    assert probe.layer == 3 and probe.accuracy is None and probe.n == 24
    torch.testing.assert_close(Probe.from_direction(U * 3).direction, U)
    assert Probe.from_direction(U).equals(Probe.from_direction(U))


# -- refusals -------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layers": [7], "k": 2}, "layer 7 is out of range"),
    ({"layers": [1, 1], "k": 2}, "duplicate layers"),
    ({"threshold": -0.5, "k": 2}, "exactly one of threshold"),
    ({}, "exactly one of threshold"),
    ({"k": 0}, "k must be an int in 1..128"),
    ({"k": 300, "per": "all", "layers": [1, 2]}, "k must be an int in 1..256"),
    ({"threshold": -1.5}, "threshold must be a cosine"),
    ({"threshold": float("nan")}, "threshold must be a cosine"),
    ({"threshold": -0.5, "per": "all"}, "applies to k only"),
])
def test_bad_region_requests_name_the_value(hooked, kwargs, message):
    with pytest.raises(ActsteerError, match=message):
        select_region(hooked, U, **kwargs)


def test_bad_values_name_the_value(hooked):
    with pytest.raises(InvalidValueError, match="d_model 65"):
        select_region(hooked, torch.ones(65), k=1)
    nan = U.clone()
    nan[3] = math.nan
    with pytest.raises(InvalidValueError, match="NaN"):
        select_region(hooked, nan, k=1)
    with pytest.raises(InvalidValueError, match="zero"):
        Probe.from_direction(torch.zeros(D_MODEL))
    edit = _edit(hooked)
    with pytest.raises(InvalidValueError, match="strength must be a finite number, got nan"):
        edit.with_strength(math.nan)
    with pytest.raises(InvalidValueError, match="neuron index 128"):
        replace(edit, rows={1: (3, 128)})
    with pytest.raises(InvalidValueError, match="layer 4 is out of range"):
        replace(edit, rows={4: (3,)})
    with pytest.raises(InvalidValueError, match="ascending and distinct"):
        replace(edit, rows={1: (5, 3)})
    with pytest.raises(InvalidValueError, match="unit vector"):
        replace(edit, direction=U * 2)
    with pytest.raises(InvalidValueError, match="activations contain NaN"):
        train_probe(torch.full((2, 4), math.nan), torch.zeros(2, 4), layer=0)
    with pytest.raises(InvalidValueError, match=r"acts\[:, i\]"):
        train_probe(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), layer=0)


def test_a_failed_apply_leaves_the_model_untouched(hooked, monkeypatch):
    import actsteer.surgery.apply as apply_module

    before, edit = _snapshot(hooked), _edit(hooked)
    with pytest.raises(SurgeryError, match="non-finite"):  # found before any write
        apply_surgery(hooked, edit.with_strength(1e300))
    _assert_same_state(before, hooked)
    put, calls = apply_module._Write.put, []

    def failing_put(self, values):
        calls.append(self.site.layer)
        if len(calls) == 2:  # the second layer's write fails; the first is undone
            raise RuntimeError("write failed")
        put(self, values)

    monkeypatch.setattr(apply_module._Write, "put", failing_put)
    with pytest.raises(RuntimeError, match="write failed"):
        apply_surgery(hooked, edit)
    assert calls == [0, 2, 0]
    _assert_same_state(before, hooked)


@pytest.mark.hooked  # builds a GELU model from HookedTransformerConfig
def test_models_surgery_cannot_handle_are_refused(hooked):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_ctx=8, d_vocab=10,
                                  act_fn="gelu", normalization_type="LN")
    with quiet_deprecation():
        gelu = HookedTransformer(cfg)
    with pytest.raises(SurgeryError, match="no gated MLP"):
        select_region(gelu, torch.ones(8), k=1)
    orphan = copy.deepcopy(hooked)
    record(orphan, "not-a-folder", "hooked", True)
    with pytest.raises(SurgeryError, match="'not-a-folder' is not one"):
        select_region(orphan, U, k=1)


# -- the embedded model ---------------------------------------------------------------

@pytest.mark.slow
def test_embedded_model_edit_changes_logits_and_reverts_exactly(smol):
    probe = Probe.from_direction(_unit(11, 576), layer=15)
    edit = make_edit(smol, probe, select_region(smol, probe, layers=[8, 15, 22], k=32),
                     strength=8.0)
    tokens = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    before = {k: v.clone() for k, v in smol.state_dict().items()
              if any(k.startswith(f"blocks.{layer}.mlp.") for layer in edit.layers)}
    with torch.no_grad():
        plain = smol(tokens)
        handle = apply_surgery(smol, edit)
        edited = smol(tokens)
        handle.revert()
        restored = smol(tokens)
    assert (edited - plain).abs().max() > 1e-2
    assert torch.equal(restored, plain)
    after = smol.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
