"""Hand-made studies for the claims tests: a real ``Store`` and real run configs (``plan.expand``
of a real ``Study``) whose every checkpoint's learning and forgetting are given directly as the
change of the study's first learning task (``<task>/bpb`` = 3 − learn) and of ``source_bpb``
(2 + forget), so the expected verdicts follow from the numbers in each test."""

from __future__ import annotations

from pathlib import Path

from learnforget.analysis.claims import judge_claims
from learnforget.analysis.frame import Frame, load_frame
from learnforget.plan import expand
from learnforget.store import Measurement, Store
from learnforget.study import parse_study

STEPS = (4, 8)
TOKENS_PER_STEP = 1024
Values = dict[str, dict[float, list[tuple[float, float]]]]
Extra = dict[str, list[dict[str, float]]]


def write_study(out: Path, methods: list[dict], values: Values, extra: Extra | None = None,
                domain: str = "code", regime: str = "cpt", name: str = "claims",
                base_extra: dict[str, float] | None = None,
                artifacts: dict[str, list[dict]] | None = None,
                seed_offsets: dict[int, float] | None = None,
                base_artifacts: dict | None = None, stderr: float | None = 0.001) -> Path:
    """OUT with study.json and a store holding the base model and every run of ``methods``.

    ``values[label][lr]`` lists (learn, forget) at steps 4 and 8; a run whose (label, lr) is
    missing is stored as diverged without a checkpoint. ``extra[label]`` lists, per step, more
    ``task/metric`` values for every run of the label; ``artifacts[label]`` per step artifacts
    (``{kind: payload}``), ``base_artifacts`` the base model's. ``seed_offsets`` runs one seed
    per key and adds its value to every forgetting of that seed's runs. Every bits-per-byte value
    is stored with the standard error ``stderr`` (None: none stored, a store without a noise
    estimate), unless ``extra`` gives one."""
    learn_task = f"{domain}_bpb"
    study = parse_study({
        "name": name, "base": "builtin:micro", "target": {"domain": domain, "regime": regime},
        "methods": methods, "budgets": {"steps": list(STEPS)},
        "training": {"seeds": sorted(seed_offsets or {0: 0.0})},
        "evaluation": {"learning": [learn_task], "forgetting": ["source_bpb"]}})
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(study.model_dump_json())
    store = Store(out / "results.sqlite")
    errors = {} if stderr is None else {f"{learn_task}/bpb_stderr": stderr,
                                        "source_bpb/bpb_stderr": stderr}
    base = [Measurement(learn_task, "bpb", 3.0), Measurement("source_bpb", "bpb", 2.0),
            *(Measurement(*key.split("/"), v)
              for key, v in {**errors, **(base_extra or {})}.items())]
    store.ensure_run("base-x", study.name, "base", "base", {"base": {}})
    store.record_checkpoint("base-x", 0, 0, None, [(0, 0, m) for m in base], base_artifacts)
    store.set_status("base-x", "finished")
    for run in expand(study):
        store.ensure_run(run.run_id, study.name, run.method.kind, run.label,
                         run.model_dump(mode="json"))
        points = values.get(run.label, {}).get(run.method.lr)
        if points is None:
            store.set_status(run.run_id, "diverged")
            continue
        for i, (step, (learn, forget)) in enumerate(zip(STEPS, points, strict=False)):
            forget += (seed_offsets or {}).get(run.seed, 0.0)
            rows = [Measurement(learn_task, "bpb", 3.0 - learn),
                    Measurement(learn_task, "bpb_delta", -learn),
                    Measurement("source_bpb", "bpb", 2.0 + forget),
                    Measurement("source_bpb", "bpb_delta", forget)]
            more = (extra or {}).get(run.label, [])
            given = {**errors, **(more[i] if i < len(more) else {})}
            rows += [Measurement(*key.split("/"), v) for key, v in given.items()]
            stored = (artifacts or {}).get(run.label, [])
            tokens = step * TOKENS_PER_STEP
            store.record_checkpoint(run.run_id, step, tokens, None,
                                    [(step, tokens, m) for m in rows],
                                    stored[i] if i < len(stored) else None)
        store.set_status(run.run_id, "finished")
    store.close()
    return out


def frame_of(tmp_path: Path, methods: list[dict], values: Values, **kwargs) -> Frame:
    """``write_study`` then ``load_frame``."""
    return load_frame(write_study(tmp_path, methods, values, **kwargs))


def verdict_of(frame: Frame, number: int):
    """Claim ``number`` of ``judge_claims(frame)``."""
    verdicts = judge_claims(frame)
    assert [v.number for v in verdicts] == list(range(1, 10))
    return verdicts[number - 1]


FULL_LORA = [{"kind": "full", "lr": [1e-4, 1e-3]},
             {"kind": "lora", "r": [8, 64], "targets": ["all"], "lr": [1e-3, 1e-2]}]


def full_lora(full: list, r8: list, r64: list) -> Values:
    """Full FT best at 1e-3 and LoRA best at 1e-2 with the given points; the other LRs learn
    half as much (forgetting the same)."""
    def sweep(points: list, best: float, other: float) -> dict:
        return {best: points, other: [(learn / 2, forget) for learn, forget in points]}

    return {"full": sweep(full, 1e-3, 1e-4), "lora-r8-all": sweep(r8, 1e-2, 1e-3),
            "lora-r64-all": sweep(r64, 1e-2, 1e-3)}


# full FT learns and forgets more than LoRA r=8 and r=64 (all), r=64 closer to full FT
PLAIN = full_lora(full=[(0.10, 0.05), (0.20, 0.10)], r8=[(0.05, 0.01), (0.12, 0.02)],
                  r64=[(0.08, 0.02), (0.16, 0.03)])


# full finetuning with and without weight decay, and LoRA r=8 (claim 4)
REGULARISED = [{"kind": "full", "lr": [1e-3], "weight_decay": [0.0, 0.1]},
               {"kind": "lora", "r": [8], "lr": [1e-2]}]
