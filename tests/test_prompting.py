"""Prompting beside steering in the expressed comparison: the scaffold isolates the
instruction, every row is measured as steering is (checked against hand computations on the
tiny model), steering − prompting is paired per prompt, the fluency cost scores only the
document, an interrupted run keeps its finished cells, and a behaviour without instruction
is reported as such."""

from __future__ import annotations

import json

import pytest
import torch
from recording import Recording
from test_expressed import _behaviour_file

from actsteer.accuracy import Documents, accuracy_sweep
from actsteer.effects import paired_effect
from actsteer.paper import multi_behaviour as mb
from actsteer.paper.multi_behaviour.expressed import analysis, prompting
from actsteer.paper.multi_behaviour.expressed.report import report_tables as report
from actsteer.paper.multi_behaviour.expressed.state import split_prompts
from actsteer.plan import empty_plan, single

INSTRUCTION = "Write in a cheerful, positive tone."
SMOL = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
"""SmolLM2's chat template written out (its default system turn): the tiny model has it."""


def _differ_only_by_instruction(plain: list[int], prompted: list[int], tokenizer) -> None:
    start = next(i for i, (a, b) in enumerate(zip(plain, prompted, strict=False)) if a != b)
    end = next(i for i in range(1, len(plain)) if plain[-i] != prompted[-i]) - 1
    end = min(end, len(plain) - start)  # "tone." and "text." share the final "."
    assert prompted[:start] == plain[:start] and prompted[len(prompted) - end:] == plain[
        len(plain) - end:]
    assert start + end == len(plain)  # nothing of the plain scaffold is replaced
    assert tokenizer.decode(prompted[start:len(prompted) - end]) == " " + INSTRUCTION


def test_the_scaffolds_differ_by_the_instruction_tokens_only() -> None:
    from transformers import AutoTokenizer

    from actsteer.models import embedded_tokenizer_path

    opening = "The weather this week has been"
    chat = AutoTokenizer.from_pretrained(embedded_tokenizer_path())  # ChatML, as SmolLM2
    bare = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
    bare.chat_template = None  # chat_prompt falls back to Llama 2's [INST] format
    for tokenizer, tail in ((chat, SMOL.split("{}")[1]), (bare, " [/INST] ")):
        for texts in ([prompting.opening_scaffold(tokenizer, opening, i)
                       for i in (None, INSTRUCTION)],
                      [prompting.document_scaffold(tokenizer, i) for i in (None, INSTRUCTION)]):
            plain, prompted = (tokenizer(t, add_special_tokens=False).input_ids for t in texts)
            _differ_only_by_instruction(plain, prompted, tokenizer)
        # the opening is the start of the answer: the scaffold ends with it
        assert prompting.opening_scaffold(tokenizer, opening, INSTRUCTION).endswith(
            INSTRUCTION + tail + opening)


def _config(folder, behaviours=None, **overrides):
    return mb.profile("quick", **{
        "out_dir": str(folder / "out"),
        "behaviours": behaviours or ("sentiment", str(_behaviour_file(folder))),
        "n_grid": 4, "n_test": 8, "candidate_layers": (1, 3), "generate_prompts": 0,
        "tax_documents": 3, "tax_max_tokens": 12, "n_resamples": 200, **overrides})


@pytest.fixture(scope="module")
def prompted(tiny_model, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("prompting"))
    return config, mb.run_any(config, model=tiny_model, progress=False)


def test_the_prompting_row_is_the_word_mass_read_after_the_opening_in_the_scaffold(
        prompted, tiny_model) -> None:
    config, results = prompted
    vocab = tiny_model.tokenizer.get_vocab()
    words = {side: [vocab["Ġ" + w] for w in getattr(load("sentiment").words, side)
                    if "Ġ" + w in vocab] for side in ("behaviour", "contrast")}
    by_hand = []
    for opening in split_prompts(config)["test"]:
        text = SMOL.format(f"{prompting.REQUEST} {INSTRUCTION}") + opening
        ids = tiny_model.tokenizer(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = tiny_model(torch.tensor([ids]))[0, -1].double()
        logp = logits.log_softmax(-1)
        by_hand.append(float(logp[words["behaviour"]].logsumexp(0)
                             - logp[words["contrast"]].logsumexp(0)))
    found = analysis.scaffold_values(results, "prompting", "sentiment", "sentiment")
    assert found is not None and found.tolist() == pytest.approx(by_hand, abs=2e-4)
    plain = analysis.scaffold_values(results, "baseline", "sentiment", "sentiment")
    assert plain is not None and not torch.allclose(plain, found, atol=1e-3)


def load(name):
    from actsteer.data.expressed import load_expressed

    return load_expressed(name)


def test_steering_minus_prompting_is_the_paired_per_prompt_difference(prompted) -> None:
    _, results = prompted
    cells = results["cells"]
    steered = torch.tensor(cells["expressed-scaffold/scaffold=-/plan=individual:sentiment"][
        "values"]["sentiment"], dtype=torch.float64)
    asked = torch.tensor(cells["expressed-scaffold/scaffold=sentiment/plan=unsteered"][
        "values"]["sentiment"], dtype=torch.float64)
    found = analysis.steering_minus_prompting(results, "sentiment")
    by_hand = paired_effect(steered - asked, torch.zeros_like(asked), n_resamples=200)
    assert found is not None and found.value == pytest.approx(float((steered - asked).mean()))
    assert (found.low, found.high) == pytest.approx((by_hand.low, by_hand.high))
    # pairing matters: shuffling one side's prompts gives another interval
    unpaired = paired_effect(steered, asked[torch.randperm(len(asked), generator=torch.
                                                           Generator().manual_seed(1))],
                             n_resamples=200)
    assert (unpaired.low, unpaired.high) != pytest.approx((found.low, found.high))
    text = str(report(results))
    row = next(x for x in text.splitlines() if "steering − prompting" in x
               and x.startswith("sentiment"))
    assert format(found, ".2f") in row


def test_documents_with_context_score_only_the_tokens_after_it(tiny_model) -> None:
    docs = [[1, 5, 9, 11, 2, 7, 3], [1, 4, 4, 8], [1, 6, 2, 9, 9]]
    context = [3, 1, 2]
    plan = single(torch.ones(int(tiny_model.cfg.d_model)) * 0.5, 1, 1.0)
    for side in ("right", "left"):
        documents = Documents.build(tiny_model, docs, batch_size=2, padding_side=side,
                                    context=context)
        scored = accuracy_sweep(tiny_model, documents, [empty_plan(), plan])
        for row, steering in enumerate((empty_plan(), plan)):
            from actsteer.steering import steer

            for i, (doc, lead) in enumerate(zip(docs, context, strict=True)):
                with torch.no_grad(), steer(tiny_model, steering):
                    logp = tiny_model(torch.tensor([doc]))[0].double().log_softmax(-1)
                nll = -sum(float(logp[t - 1, doc[t]]) for t in range(lead, len(doc)))
                assert float(scored[row].nll[i]) == pytest.approx(nll, abs=1e-4)
                assert int(scored[row].tokens[i]) == len(doc) - lead
    with pytest.raises(ValueError, match="context=4 leaves no token"):
        Documents.build(tiny_model, docs, context=[1, 4, 1])


def test_the_fluency_cost_scores_the_document_after_the_scaffold(prompted, tiny_model) -> None:
    from actsteer.data.corpora import builtin_text_corpus

    config, results = prompted
    cell = results["cells"]["expressed-scaffold-tax/scaffold=sentiment/plan=unsteered"]
    prefix = tiny_model.tokenizer(SMOL.format(f"{prompting.REQUEST} {INSTRUCTION}"),
                                  add_special_tokens=False).input_ids
    for i, text in enumerate(builtin_text_corpus().texts()[:config.tax_documents]):
        doc = tiny_model.tokenizer(text, add_special_tokens=False).input_ids[
            :config.tax_max_tokens]
        with torch.no_grad():
            logp = tiny_model(torch.tensor([prefix + doc]))[0].double().log_softmax(-1)
        nll = -sum(float(logp[len(prefix) + j - 1, t]) for j, t in enumerate(doc))
        assert cell["nll"][i] == pytest.approx(nll, abs=1e-3)
        assert cell["tokens"][i] == len(doc)
    base = results["cells"]["expressed-scaffold-tax/scaffold=-/plan=unsteered"]
    ratio = analysis.fluency_ratio(results, "prompting", "sentiment")
    extra = sum(cell["nll"]) - sum(base["nll"])
    assert ratio is not None and ratio.value == pytest.approx(
        float(torch.tensor(extra / sum(base["tokens"])).exp()), rel=1e-6)


def test_an_interrupted_run_keeps_its_finished_scaffold_cells(tiny_model, tmp_path,
                                                              prompted) -> None:
    import dataclasses
    import shutil

    config, results = prompted
    copy = dataclasses.replace(config, out_dir=str(tmp_path / "out"))
    shutil.copytree(config.out_dir, copy.out_dir)
    log = tmp_path / "out" / mb.RESULTS_FILE
    lines = log.read_text().splitlines(keepends=True)
    # killed after the first prompting unit: the log ends with its cells
    last = max(i for i, x in enumerate(lines) if '"expressed-scaffold/scaffold=-/' in x)
    log.write_text("".join(lines[:last + 1]))
    counting = Recording()
    again = mb.run_any(copy, model=tiny_model, progress=False, executor=counting)
    assert sorted(counting.keys) == ["fluency:-", "fluency:sentiment", "scaffold:sentiment"]
    kept = [k for k in results["cells"] if k.startswith("expressed-scaffold/scaffold=-/")]
    assert len(kept) == 3 and all(again["cells"][k] == results["cells"][k] for k in kept)
    assert str(report(again)) == str(report(results))  # as the uninterrupted run
    # a changed instruction is scored again, and only its cells
    garden = next(b for b in config.behaviours if b.endswith(".json"))
    with open(garden) as handle:
        original = handle.read()
    try:
        with open(garden, "w") as handle:
            json.dump({**json.loads(original), "instruction": "Talk about your garden."}, handle)
        counting = Recording()
        changed = mb.run_any(copy, model=tiny_model, progress=False, executor=counting)
    finally:
        with open(garden, "w") as handle:
            handle.write(original)
    assert sorted(counting.keys) == ["fluency:gardening", "scaffold:gardening"]
    assert analysis.row_effect(changed, "prompting", "gardening") is not None


def test_a_behaviour_without_instruction_gets_steering_and_is_named(prompted) -> None:
    _, results = prompted
    assert not any("scaffold=gardening" in key for key in results["cells"])
    assert analysis.row_effect(results, "steering", "gardening") is not None
    assert analysis.row_effect(results, "prompting", "gardening") is None
    text = str(report(results))
    assert "no instruction, so no prompting rows: gardening" in text
    rows = [x for x in text.splitlines() if x.startswith("gardening ")]
    assert any(" steering " in x for x in rows) and not any("prompting" in x for x in rows)


def test_the_report_renders_its_tables_as_html_with_the_numbers_it_prints(prompted) -> None:
    from test_report_table import check_same_cells, tables_of

    from actsteer.report_table import Table

    _, results = prompted
    value = report(results)
    tables = [b for b in value.blocks if isinstance(b, Table)]
    assert any(t.title.startswith("prompting vs steering:") for t in tables)
    for table in tables:
        check_same_cells(table)
        assert str(table) in str(value)
    assert len(tables_of(value._repr_html_())) == len(tables)
    assert mb.report_any(results) == str(value)
