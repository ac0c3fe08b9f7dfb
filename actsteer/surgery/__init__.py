"""Model Surgery: move a behaviour by editing a few MLP gate rows, no gradients, no hooks.

Wang et al. 2024, "Model Surgery: Modulating LLM's Behavior Via Simple Parameter
Editing" (arXiv 2407.08770, NAACL 2025), in three steps, one module each:

1. **probe** (:mod:`~actsteer.surgery.probe`): a linear classifier on one layer's hidden
   states, trained on examples with and without the behaviour;
2. **region** (:mod:`~actsteer.surgery.region`): per MLP layer, the gate-projection rows
   (one per neuron) most inversely aligned with the probe direction;
3. **surgery** (:mod:`~actsteer.surgery.edit`, :mod:`~actsteer.surgery.apply`): add
   ``strength * probe direction`` to those rows. The neurons then fire more on inputs that
   show the behaviour, which (the paper finds) pushes the hidden state away from it.

Edits are values (:class:`SurgeryEdit`) in checkpoint coordinates (Hugging Face
``gate_proj.weight`` rows, see :mod:`~actsteer.surgery.gates` for how TransformerLens's
folded weights map to them), or with ``basis="folded"`` in the basis the probe lives in
(rows times the RMSNorm weight; the derivation is in :mod:`~actsteer.surgery.gates`),
applied in place with exact revert, as a copy, or exported as a plain ``transformers``
folder (:mod:`~actsteer.surgery.export`).

What the method's sources say, and what is used here. The paper's full text was not
reachable from here; read were its abstract (huggingface.co/papers/2407.08770), the
Figure 1 caption as quoted by a review (liner.com) and the authors' code
(github.com/lucywang720/model-surgery: ``modification/modify.py``,
``train/run_pplm_discrim_train.py``, ``scripts/``), read for facts only:

* probe: a two-class linear head (PPLM-style) on the token-mean of the last hidden state
  (after the final norm); the "behaviour" class's weight row, unnormalised, is the probe
  vector. Here: logistic regression on activations of one layer, unit direction.
* region: cosine between that vector and every *raw* ``gate_proj.weight`` row (checkpoint
  coordinates, no norm folding) of all 32 layers of a 7B model; the 4096 * 4 = 16384 most
  negative over all layers together (about 4.7% of the 352,256 gate rows): a global K, no
  threshold in the code. The paper describes "row vectors in gate projections that exhibit
  inverse alignment with the direction of the behavior probe". Here: ``threshold`` or
  ``k``, counted per layer (``per="layer"``) or globally (``per="all"``, the code's choice).
* surgery: ``gate_proj.weight[j] += alpha * probe_vector`` with alpha a command-line
  argument (default 1.0); the paper's side: add the probe of the behaviour to avoid to the
  rows anti-aligned with it, which moves the model away from that behaviour. Here the probe
  vector is unit length, so ``strength`` is the step's norm; the code's alpha corresponds to
  ``strength = alpha * |w|`` for its raw weight ``w`` (``Probe.scale`` is that norm for a
  probe from :func:`train_probe`, whose regularisation differs, so the numbers do not carry
  over). Negative ``strength`` reverses the step on the same rows; ``probe.flipped()``
  targets the opposite behaviour the paper's way (through a different region).

Example::

    pos, neg = contrastive_activations(model, pairs, layers=[12])
    probe = train_probe(pos[:, 0], neg[:, 0], layer=12)
    region = select_region(model, probe, layers=range(4, 20), k=64)
    edit = make_edit(model, probe, region, strength=2.0)
    with surgery(model, edit):                 # no hooks: the weights are edited
        logits = model(tokens)
    save_surgery_hf(edit, "smollm2-edited")    # plain transformers folder
"""

from actsteer.surgery.apply import SurgeryHandle, apply_surgery, operate, surgery
from actsteer.surgery.edit import SurgeryEdit, make_edit
from actsteer.surgery.errors import SurgeryError, SurgeryFileError
from actsteer.surgery.export import EDIT_FILE, ExportFolderError, save_surgery_hf
from actsteer.surgery.gates import BASES, Basis
from actsteer.surgery.probe import Probe, ProbeProvenance, train_probe
from actsteer.surgery.region import Region, Scope, select_region

__all__ = [
    "BASES",
    "EDIT_FILE",
    "Basis",
    "ExportFolderError",
    "Probe",
    "ProbeProvenance",
    "Region",
    "Scope",
    "SurgeryEdit",
    "SurgeryError",
    "SurgeryFileError",
    "SurgeryHandle",
    "apply_surgery",
    "make_edit",
    "operate",
    "save_surgery_hf",
    "select_region",
    "surgery",
    "train_probe",
]
