"""Model Surgery in the folded basis (``basis="folded"``), beside the paper's checkpoint basis.

A tiny random Llama gets random weights for the RMSNorm before each MLP (``g``, all ones
in the tiny model, which would make the two bases one) and two kinds of planted gate rows
against a unit vector ``U``: rows anti-aligned with ``U`` as saved (``-3 U``), and rows
anti-aligned only once ``g`` is multiplied in (``-U / g``). Every expected value is
computed by hand from the plain ``transformers`` weights: the folded row is
``g ⊙ gate_proj.weight[j]``, and a folded-basis step ``s U`` reaches the saved row as
``s U / g``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from actsteer.errors import InvalidValueError
from actsteer.models import load_model
from actsteer.models.info import available_backends
from actsteer.surgery import (
    EDIT_FILE,
    Probe,
    SurgeryEdit,
    SurgeryFileError,
    make_edit,
    save_surgery_hf,
    select_region,
    surgery,
)

D_MODEL, D_MLP = 64, 128
SAVED = {1: (3, 17), 2: (5,)}  # anti-aligned with U as saved
FOLDED = {1: (60, 61), 2: (90,)}  # anti-aligned with U only after g is multiplied in
TOKENS = torch.tensor([[1, 50, 300, 7000, 12, 9, 4000, 2, 77, 31]])
U = torch.nn.functional.normalize(torch.randn(D_MODEL, generator=torch.Generator()
                                              .manual_seed(100)), dim=0)
MODES = [(backend, fold) for fold in (True, False) for backend in available_backends()]


@pytest.fixture(scope="module")
def gained(tmp_path_factory, tiny_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for layer in hf.model.layers:
            weight = layer.post_attention_layernorm.weight
            # log-normal: spread enough that cos(g ⊙ U, U) is about 0.6, not about 0.9
            weight.copy_(torch.randn(weight.shape, generator=g).exp())
        for layer in (1, 2):
            gate = hf.model.layers[layer].mlp.gate_proj.weight
            gain = hf.model.layers[layer].post_attention_layernorm.weight
            for j in SAVED[layer]:
                gate[j] = -3.0 * U + 0.05 * torch.randn(D_MODEL, generator=g)
            for j in FOLDED[layer]:
                gate[j] = -U / gain + 0.01 * torch.randn(D_MODEL, generator=g)
    folder = tmp_path_factory.mktemp("gained") / "tiny-gained"
    hf.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_folder).save_pretrained(folder)
    return folder, hf


@pytest.fixture(scope="module", params=MODES,
                ids=[f"{b}-{'fold' if f else 'raw'}" for b, f in MODES])
def model(request, gained):
    backend, fold = request.param
    return load_model(gained[0], backend=backend, fold_ln=fold)


def _hand_cosines(hf, layer: int, basis: str) -> torch.Tensor:
    rows = hf.model.layers[layer].mlp.gate_proj.weight.detach().double()
    if basis == "folded":
        rows = rows * hf.model.layers[layer].post_attention_layernorm.weight.detach().double()
    return torch.nn.functional.cosine_similarity(rows, U.double()[None, :], dim=1)


def _centred_logits(forward) -> torch.Tensor:
    with torch.no_grad():
        out = forward(TOKENS)
    logits = getattr(out, "logits", out)
    return logits - logits.mean(-1, keepdim=True)


def test_folded_region_is_the_hand_computed_one(model, gained):
    hf = gained[1]
    for basis in ("checkpoint", "folded"):
        region = select_region(model, U, layers=[1, 2, 3], k=4, basis=basis)
        assert region.basis == basis
        for layer in (1, 2, 3):
            cosines = _hand_cosines(hf, layer, basis)
            expected = tuple(sorted(int(j) for j in torch.argsort(cosines, stable=True)[:4]))
            assert region.rows[layer] == expected
            torch.testing.assert_close(torch.tensor(region.cosines[layer], dtype=torch.float64),
                                       cosines[list(expected)], atol=1e-6, rtol=0)
    # the planted rows tell the bases apart: each basis finds its own, not the other's
    folded = select_region(model, U, layers=[1, 2], threshold=-0.9, basis="folded")
    saved = select_region(model, U, layers=[1, 2], threshold=-0.9)
    assert folded.rows == FOLDED and saved.rows == SAVED


def test_folded_edit_steps_the_saved_rows_by_s_u_over_g(model, gained):
    """The edited model's logits equal the plain transformers model with ``3 U / g``
    added to the region's ``gate_proj`` rows by hand, on every backend and processing."""
    hf = gained[1]
    probe = Probe.from_direction(U, layer=2)
    region = select_region(model, probe, layers=[1, 2], k=3, basis="folded")
    edit = make_edit(model, probe, region, strength=3.0)
    assert edit.basis == "folded" and edit.rows == region.rows
    reference = copy.deepcopy(hf)
    with torch.no_grad():
        for layer, rows in edit.rows.items():
            mlp = reference.model.layers[layer]
            step = 3.0 * U / mlp.post_attention_layernorm.weight
            mlp.mlp.gate_proj.weight[list(rows)] += step
    expected, plain = _centred_logits(reference), _centred_logits(hf)
    assert (expected - plain).abs().max() > 1e-2
    with surgery(model, edit):
        got = _centred_logits(model)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # the faithful edit of the same rows adds 3 U as saved: another model
    with surgery(model, replace(edit, basis="checkpoint")):
        faithful = _centred_logits(model)
    assert (faithful - got).abs().max() > 1e-3


def test_checkpoint_step_is_the_step_over_g(gained):
    hooked = load_model(gained[0])
    edit = make_edit(hooked, U, select_region(hooked, U, layers=[1], k=2, basis="folded"),
                     strength=2.0)
    gain = gained[1].model.layers[1].post_attention_layernorm.weight.detach()
    torch.testing.assert_close(edit.checkpoint_step(gain), 2.0 * U.double() / gain.double(),
                               atol=1e-6, rtol=0)
    faithful = make_edit(hooked, U, select_region(hooked, U, layers=[1], k=2), strength=2.0)
    assert torch.equal(faithful.checkpoint_step(gain), 2.0 * U.double())


def test_folded_export_is_plain_transformers(gained, tmp_path):
    from transformers import AutoModelForCausalLM

    folder, hf = gained
    hooked = load_model(folder)
    edit = make_edit(hooked, U, select_region(hooked, U, k=3, basis="folded"), strength=4.0)
    out = save_surgery_hf(edit, tmp_path / "edited", source=folder)
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    for layer, rows in edit.rows.items():
        old = hf.model.layers[layer].mlp.gate_proj.weight.detach()
        new = reloaded.model.layers[layer].mlp.gate_proj.weight.detach()
        gain = hf.model.layers[layer].post_attention_layernorm.weight.detach()
        torch.testing.assert_close(new[list(rows)], old[list(rows)] + 4.0 * U / gain,
                                   atol=1e-6, rtol=0)
    with surgery(hooked, edit):
        ours = _centred_logits(hooked)
    torch.testing.assert_close(_centred_logits(reloaded), ours, atol=1e-4, rtol=0)
    assert SurgeryEdit.load(out / EDIT_FILE).basis == "folded"


# -- the basis in values and files --------------------------------------------------------

def _rewrite(source: Path, target: Path, change) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        header = json.loads(handle.metadata()["actsteer_surgery"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    save_file(tensors, str(target), metadata={"actsteer_surgery": json.dumps(change(header))})
    return target


def test_the_basis_round_trips_and_old_files_load_as_checkpoint(gained, tmp_path):
    hooked = load_model(gained[0])
    edit = make_edit(hooked, U, select_region(hooked, U, k=3, basis="folded"), strength=2.5)
    loaded = SurgeryEdit.load(edit.save(tmp_path / "folded.safetensors"), model=hooked)
    assert loaded.basis == "folded" and loaded.equals(edit)
    assert not loaded.equals(replace(edit, basis="checkpoint"))
    # a file written before the field existed has no "basis": the paper's basis
    old = _rewrite(tmp_path / "folded.safetensors", tmp_path / "old.safetensors",
                   lambda header: {k: v for k, v in header.items() if k != "basis"})
    assert SurgeryEdit.load(old).basis == "checkpoint"
    bad = _rewrite(tmp_path / "folded.safetensors", tmp_path / "bad.safetensors",
                   lambda header: {**header, "basis": "normed"})
    with pytest.raises(SurgeryFileError, match="basis must be one of 'checkpoint', 'folded', "
                                               "got 'normed'"):
        SurgeryEdit.load(bad)


def test_bad_bases_are_refused_by_name(gained):
    hooked = load_model(gained[0])
    with pytest.raises(InvalidValueError, match="got 'raw'"):
        select_region(hooked, U, k=2, basis="raw")  # type: ignore[arg-type]
    region = select_region(hooked, U, k=2)
    with pytest.raises(InvalidValueError, match="selected in the 'checkpoint' basis"):
        make_edit(hooked, U, region, basis="folded")
    with pytest.raises(InvalidValueError, match="got None"):
        replace(make_edit(hooked, U, region), basis=None)
