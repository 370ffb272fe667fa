"""The report's weight, diversity and claims sections, from stores holding real ΔW spectra.

The spectra are computed by ``learnforget.measure.spectrum.spectrum`` on small planted weight
changes of a 2-layer Llama-shaped set of matrices (hidden 32, MLP 64):

- "full finetuning": ΔW = c · Gaussian noise, which is full-rank and hardly turns W's top
  singular directions (no intruders);
- "LoRA r=4": ΔW = s · U_plant · Vᵀ of rank 4, with s 5–10 times W's largest singular value and
  each planted direction u_j = U_base · h_j / √32 for orthogonal ±1 vectors h_j (Hadamard rows).
  Each u_j has |cos| = 1/√32 ≈ 0.18 with every base direction; W_tuned's top 4 directions are
  close to them (their best |cos| with a base direction is 0.24–0.36), so they are intruders at
  ε = 0.5 and none is at ε = 0.1.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import pytest
import torch
from claim_studies import write_study

from learnforget.analysis.best_lr import AtBestLR
from learnforget.analysis.claims import judge_claims
from learnforget.analysis.frame import load_frame
from learnforget.analysis.judge import judge_study, write_claims_json
from learnforget.analysis.weights import (
    best_spectra,
    diversity_table,
    intruder_counts,
    load_artifacts,
    rank_grid,
)
from learnforget.measure.spectrum import spectrum
from learnforget.measure.spectrum_summary import spectrum_summary
from learnforget.pipeline import write_run_index, write_study_report
from learnforget.report.build import build_report
from learnforget.report.claims_section import claims_section
from learnforget.report.figures import DPI, FigureSkipped
from learnforget.report.weights import (
    diversity_figure,
    diversity_section,
    intruder_figure,
    matrix_spectrum,
    rank_over_tokens,
    spectrum_heatmap,
    weights_section,
)

torch.set_num_threads(1)

HIDDEN, MLP, LAYERS, PLANTED = 32, 64, 2, 4
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (MLP, HIDDEN), "mlp.up_proj": (MLP, HIDDEN),
          "mlp.down_proj": (HIDDEN, MLP)}
METHODS = [{"kind": "full", "lr": [1e-3]}, {"kind": "lora", "r": [4], "lr": [1e-2]}]
POINTS = {"full": {1e-3: [(0.10, 0.05), (0.20, 0.10)]},
          "lora-r4-all": {1e-2: [(0.05, 0.01), (0.12, 0.02)]}}


def _hadamard(n: int) -> torch.Tensor:
    """Sylvester's ±1 Hadamard matrix of size n (a power of two): orthogonal rows."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def _base() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {f"model.layers.{i}.{name}.weight": torch.randn(*shape, generator=generator) / 4
            for i in range(LAYERS) for name, shape in SHAPES.items()}


def _full_delta(w: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    return scale * torch.randn(*w.shape, generator=torch.Generator().manual_seed(seed))


def _lora_delta(w: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    u_base = torch.linalg.svd(w, full_matrices=False)[0]
    n = u_base.shape[1]
    planted = u_base @ _hadamard(n)[:PLANTED].T / math.sqrt(n)
    generator = torch.Generator().manual_seed(seed)
    right = torch.linalg.qr(torch.randn(w.shape[1], PLANTED, generator=generator))[0]
    return strength * float(torch.linalg.matrix_norm(w, 2)) * planted @ right.T


def _spectra(kind: str, step: int) -> list[dict]:
    pairs = {}
    for i, (name, w) in enumerate(_base().items()):
        delta = (_full_delta(w, 0.005 * step, i) if kind == "full"
                 else _lora_delta(w, 2.5 * step / 2, i))
        pairs[name] = (w, w + delta)
    return [s.to_dict() for s in spectrum(pairs)]


@pytest.fixture(scope="module")
def spectra_by_kind() -> dict[str, list[list[dict]]]:
    """Per-matrix spectra of each kind at steps 4 and 8."""
    return {kind: [_spectra(kind, step) for step in (4, 8)] for kind in ("full", "lora")}


def _summary_rows(matrices: list[dict]) -> dict[str, float]:
    from learnforget.measure.spectrum import MatrixSpectrum

    objects = [MatrixSpectrum(**{**m, "shape": tuple(m["shape"])}) for m in matrices]
    return {f"spectrum/{k}": v for k, v in spectrum_summary(objects).items()}


def _diversity(distinct: float, similarity: float) -> dict[str, float]:
    return {"diversity/mean_distinct": distinct, "diversity/mean_pairwise_similarity": similarity,
            "diversity/distinct_fraction": distinct / 4, "diversity/distinct_2": similarity / 2,
            "diversity/prompts": 2.0, "diversity/samples": 8.0,
            "diversity/mean_distinct_stderr": 0.1}


def write_weights_study(out: Path, spectra: dict[str, list[list[dict]]] | None,
                        diversity: bool = True, name: str = "weights", domain: str = "code",
                        regime: str = "cpt") -> Path:
    """The study of ``METHODS`` with spectra (artifacts and summaries) and diversity."""
    labels = {"full": "full", "lora": "lora-r4-all"}
    extra: dict[str, list[dict]] = {label: [{}, {}] for label in labels.values()}
    artifacts: dict[str, list[dict]] = {label: [{}, {}] for label in labels.values()}
    for kind, label in labels.items():
        for i in range(2):
            if spectra:
                extra[label][i] |= _summary_rows(spectra[kind][i])
                artifacts[label][i]["spectrum"] = spectra[kind][i]
        if diversity:
            extra[label][1] |= _diversity(2.0, 0.7) if kind == "full" else _diversity(3.5, 0.4)
            artifacts[label][1]["diversity_samples"] = [
                [f"def f():\n    return {kind} {j} <b>" for j in range(4)], ["x", "y", "x", "z"]]
    return write_study(out, METHODS, POINTS, extra=extra, artifacts=artifacts, name=name,
                       domain=domain, regime=regime,
                       base_extra=_diversity(3.0, 0.5) if diversity else None)


@pytest.fixture(scope="module")
def weights_out(tmp_path_factory, spectra_by_kind) -> Path:
    return write_weights_study(tmp_path_factory.mktemp("weights"), spectra_by_kind)


@pytest.fixture(scope="module")
def weights_page(weights_out: Path) -> str:
    return write_study_report(weights_out)[0].read_text()


# --- the data behind the figures ---------------------------------------------------------------
def test_rank_grid_and_intruder_counts_recover_the_planted_changes(weights_out: Path) -> None:
    frame = load_frame(weights_out)
    spectra = best_spectra(AtBestLR(frame), load_artifacts(weights_out, "spectrum"))
    assert list(spectra) == ["full", "lora-r4-all"] and set(spectra["full"]) == {4, 8}
    lora_grid, random = rank_grid(spectra["lora-r4-all"][8])
    full_grid, _ = rank_grid(spectra["full"][8])
    assert list(lora_grid.index) == [0, 1] and set(lora_grid.columns) == {
        name.split(".")[1] for name in SHAPES}
    # four equal planted singular values: 90% of Σσ² needs all four
    assert (lora_grid.to_numpy() == PLANTED).all()
    # Gaussian noise is as high-rank as the random baseline of its shape
    for module in full_grid.columns:
        assert (full_grid[module] >= 0.8 * random[module]).all(), module
    eps = [0.1, 0.5, 0.9]
    lora = intruder_counts(spectra["lora-r4-all"][8], eps)
    assert lora[0] == 0.0 and PLANTED <= lora[1] <= PLANTED + 1 and lora[2] >= lora[1]
    assert intruder_counts(spectra["lora-r4-all"][4], [0.5]) == [PLANTED]
    assert intruder_counts(spectra["full"][8], eps)[:2] == [0.0, 0.0]


# --- the figures --------------------------------------------------------------------------------
FIGURES = ["spectrum_heatmap", "rank_over_tokens", "matrix_spectrum", "intruders", "diversity"]


def test_the_report_draws_the_weight_and_diversity_figures(weights_page: str,
                                                           weights_out: Path) -> None:
    for name in FIGURES:
        image = matplotlib.image.imread(weights_out / "report" / f"{name}.png")
        assert image.shape[0] >= 2 * DPI and image.shape[1] >= 2 * DPI, name
    for title in ("How the weights moved", "Generation diversity", "Claims checklist",
                  "ΔW rank per layer and module", "Intruder dimensions"):
        assert title in weights_page
    assert "could not be" not in weights_page
    for title in ("ΔW rank", "One matrix", "Intruder", "Generation diversity"):
        assert f"{title}: not drawn" not in weights_page
    # the samples are shown escaped
    assert "return lora 0 &lt;b&gt;" in weights_page and "return lora 0 <b>" not in weights_page


def test_the_claims_section_and_claims_json(weights_page: str, weights_out: Path) -> None:
    record = json.loads((weights_out / "claims.json").read_text())
    assert record["study"] == "weights" and record["target"]["regime"] == "cpt"
    verdicts = {c["number"]: c for c in record["claims"]}
    assert list(verdicts) == list(range(1, 10))
    # planted: 4 intruders per LoRA matrix, none for full finetuning
    assert verdicts[9]["verdict"] == "holds"
    assert ("full FT 0 (0 of 14 matrices have any); LoRA r=4 (all) 4.07 (14 of 14 matrices "
            "have any)") in verdicts[9]["evidence"]  # 57 intruders in 14 matrices
    # LoRA samples: 3.5 distinct vs 2, similarity 0.4 vs 0.7
    assert verdicts[8]["verdict"] == "holds"
    assert verdicts[4]["verdict"] == "not testable"
    section = weights_page[weights_page.index('id="claims-checklist"'):]
    assert '<span style="color:#1e7b34;font-weight:bold">holds</span>' in section
    assert weights_page.index("Claims checklist</h2>") < weights_page.index("Recommendation</h2>")


def test_figures_are_skipped_without_their_data(tmp_path: Path) -> None:
    out = write_weights_study(tmp_path, None, diversity=False)
    frame = load_frame(out)
    spectra = best_spectra(AtBestLR(frame), load_artifacts(out, "spectrum"))
    assert spectra == {}
    for draw in (lambda: spectrum_heatmap(frame, tmp_path, spectra),
                 lambda: matrix_spectrum(frame, tmp_path, spectra),
                 lambda: intruder_figure(frame, tmp_path, spectra),
                 lambda: rank_over_tokens(frame, tmp_path),
                 lambda: diversity_figure(frame, tmp_path, diversity_table(AtBestLR(frame)))):
        with pytest.raises(FigureSkipped):
            draw()
    page = build_report(judge_study(out),
                        [weights_section, diversity_section, claims_section]).read_text()
    assert "No per-matrix ΔW spectrum is stored" in page
    assert "Generation diversity was not measured" in page
    assert "could not be" not in page and "Claims checklist" in page
    assert not any((out / "report" / f"{name}.png").exists() for name in FIGURES)


def test_a_figure_without_its_data_becomes_a_note(tmp_path: Path, spectra_by_kind) -> None:
    """Spectra stored without intruder similarities or counts: the intruder figure is noted."""
    stripped = {kind: [[{**m, "max_similarity": [], "intruders": None} for m in matrices]
                       for matrices in steps] for kind, steps in spectra_by_kind.items()}
    out = write_weights_study(tmp_path, stripped, diversity=False)
    page = build_report(judge_study(out), [weights_section]).read_text()
    assert "Intruder dimensions: not drawn — no intruder similarities or counts were stored" \
        in page
    assert (tmp_path / "report" / "spectrum_heatmap.png").is_file()


# --- the index of a multi-study run ----------------------------------------------------------
def test_index_page_judges_the_cross_study_claim(tmp_path: Path) -> None:
    cpt = write_weights_study(tmp_path / "code-cpt", None, diversity=False, name="code-cpt")
    ift = write_weights_study(tmp_path / "code-ift", None, diversity=False, name="code-ift",
                              domain="code", regime="ift")
    # one study's checklist comes from its claims.json, the other's is judged for the index
    judged = judge_study(cpt)
    write_claims_json(replace(judged, verdicts=[replace(v, verdict="holds")
                                                for v in judged.verdicts]))
    page = write_run_index(tmp_path, [cpt, ift]).read_text()
    assert 'href="code-cpt/report/index.html"' in page
    # the within-study part of claim 1 is named apart from the cross-study part
    assert "Within the study: full finetuning learns at least as much" in page
    findings = page[page.index("Findings and recommendations"):page.index("Claims across")]
    assert findings.count("<tr>") == 3 and "kept" in findings  # header + one row per study
    # a study's report links back to the index of the run
    report = write_study_report(cpt)[0].read_text()
    assert '<a href="../../index.html">← all studies of this run</a>' in report
    # both studies: LoRA kept 0.12 / 0.20 = 60% of full finetuning's learning → equal gaps
    assert "code-cpt (CPT) gap 40% vs code-ift (IFT) 40%" in page
    assert "does not hold" in page
    checklist = page[page.index("Each study's claims checklist"):]
    rows = re.findall(r"<tr>(.*?)</tr>", checklist)[1:]
    cells = [re.findall(r">(holds|does not hold|inconclusive|not testable)</span>", row)
             for row in rows]
    judged = [v.verdict for v in judge_claims(load_frame(ift))]
    assert cells == [["holds", verdict] for verdict in judged]  # code-cpt's from claims.json
