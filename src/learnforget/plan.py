"""Expand a study's grid into runs, each with a stable id (a hash of its resolved config).

Re-running a study finds the same ids, so finished runs are skipped and unfinished ones resume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from learnforget.errors import UserError
from learnforget.peft_grid import peft_label, peft_name_parts
from learnforget.precision import resolve_precision, run_id_view
from learnforget.study import (
    BaseModelSpec,
    BudgetSpec,
    FullMethod,
    LoraMethod,
    OptimizerSpec,
    PeftMethod,
    ScheduleSpec,
    Study,
    TargetSpec,
    TrainingSpec,
)


class MethodConfig(BaseModel):
    """One point of a method grid, every field a single value: the method's identity. Runs whose
    method settings differ in any field are different methods, compared apart; the label
    (``label``) and the readable name (``method_name``) are rendered from these fields only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["full", "lora", "peft"] = Field(
        description="full: every parameter trains; lora: PEFT LoRA adapters on a frozen base; "
        "peft: any PEFT method from its configuration (``peft``)")
    lr: float = Field(description="peak learning rate")
    # LoRA
    r: int | None = Field(None, description="LoRA: rank of the adapters")
    alpha: float | None = Field(None, description="LoRA: α (the update is scaled by α/r)")
    targets: Literal["attention", "mlp", "all"] | None = Field(
        None, description="LoRA: the modules that get adapters")
    init: str = Field("default", description="LoRA: adapter initialisation (PEFT "
                      "init_lora_weights)")
    use_rslora: bool = Field(False, description="LoRA: scale by α/√r instead of α/r")
    use_dora: bool = Field(False, description="LoRA: DoRA, weight-decomposed LoRA")
    dropout: float = Field(0.0, description="LoRA: dropout on the adapters' input")
    # both
    weight_decay: float = Field(0.0, description="decoupled weight decay")
    # full finetuning
    attention_dropout: float = Field(
        0.0, description="full finetuning: dropout on the attention probabilities")
    train_embeddings: bool = Field(
        True, description="full finetuning: false freezes the embeddings and the LM head")
    # any PEFT method (kind peft); absent from the run config of the other kinds
    peft: dict[str, Any] | None = Field(
        None, description="peft: the PEFT configuration (peft_type and its non-default fields)")

    @model_serializer(mode="wrap")
    def _without_unset_peft(self, handler) -> dict[str, Any]:
        """The fields as before ``peft`` existed when it is unset: full and LoRA runs keep
        their run ids."""
        data = handler(self)
        if isinstance(data, dict) and data.get("peft") is None:
            data.pop("peft", None)
        return data

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @property
    def is_full(self) -> bool:
        """Whether this is full finetuning (every parameter trains)."""
        return self.kind == "full"

    @property
    def default_alpha(self) -> bool:
        """Whether a LoRA's α is the default 2·r (or unset)."""
        return self.alpha is None or self.r is None or float(self.alpha) == 2.0 * self.r

    @property
    def label(self) -> str:
        """A short name for the method (without the LR) holding every setting that tells one
        method from another, e.g. ``lora-r8-all``, ``lora-r8-all-a8-drop0.1-wd0.1``, ``full``,
        ``full-wd0.1``. Default settings add nothing (α = 2r, no dropout, no weight decay), so
        runs differing in any setting get different labels and are never compared as one."""
        if self.is_full:
            parts = ["full"]
            if not self.train_embeddings:
                parts.append("frozen-emb")
            if self.weight_decay:
                parts.append(f"wd{self.weight_decay:g}")
            if self.attention_dropout:
                parts.append(f"drop{self.attention_dropout:g}")
            return "-".join(parts)
        if self.kind == "peft":
            return peft_label(self.peft or {}, self.weight_decay)
        parts = ["lora", f"r{self.r}", str(self.targets)]
        if self.use_rslora:
            parts.append("rs")
        if self.use_dora:
            parts.append("dora")
        if self.init != "default":
            parts.append(self.init)
        if not self.default_alpha:
            parts.append(f"a{self.alpha:g}")
        if self.dropout:
            parts.append(f"drop{self.dropout:g}")
        if self.weight_decay:
            parts.append(f"wd{self.weight_decay:g}")
        return "-".join(parts)


def method_name(method: MethodConfig, optimizer: str | None = None) -> str:
    """A readable name rendered from the method's fields and its optimizer: ``LoRA r=8 (all)``,
    ``LoRA r=64 (mlp, DoRA, Lion)``, ``full finetuning (frozen embeddings, weight decay 0.1)``."""
    extras: list[str] = []
    if method.is_full:
        name = "full finetuning"
        if not method.train_embeddings:
            extras.append("frozen embeddings")
        if method.weight_decay > 0:
            extras.append(f"weight decay {method.weight_decay:g}")
        if method.attention_dropout > 0:
            extras.append(f"attention dropout {method.attention_dropout:g}")
    elif method.kind == "peft":
        name, extras = peft_name_parts(method.peft or {})
        if method.weight_decay > 0:
            extras.append(f"weight decay {method.weight_decay:g}")
    else:
        name = f"LoRA r={method.r if method.r is not None else '?'}"
        extras.append(str(method.targets))
        if not method.default_alpha:
            extras.append(f"α={float(method.alpha):g}")
        if method.use_rslora:
            extras.append("rsLoRA")
        if method.use_dora:
            extras.append("DoRA")
        if method.init != "default":
            extras.append(f"{method.init} init")
        if method.dropout > 0:
            extras.append(f"dropout {method.dropout:g}")
        if method.weight_decay > 0:
            extras.append(f"weight decay {method.weight_decay:g}")
    if optimizer == "lion":
        extras.append("Lion")
    return f"{name} ({', '.join(extras)})" if extras else name


class RunConfig(BaseModel):
    """Everything that determines one training run; its hash is the run id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: BaseModelSpec
    target: TargetSpec
    method: MethodConfig
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    training: TrainingSpec
    seed: int
    budgets: BudgetSpec

    @property
    def run_id(self) -> str:
        """A stable 12-hex-digit id: sha256 of the canonical JSON of this config (without
        ``training.precision`` where it is the behaviour from before that field existed)."""
        return config_hash(run_id_view(self.model_dump(mode="json")))

    @property
    def label(self) -> str:
        """Method label plus optimizer (when not the default) — the grouping used in figures."""
        return run_label(self.method, self.optimizer.name)


def run_label(method: MethodConfig, optimizer: str | None) -> str:
    """A run's label: the method's label plus its optimizer when that is not AdamW (the
    default), e.g. ``lora-r8-attention-lion``."""
    label = method.label
    if optimizer and optimizer != "adamw":
        label += f"-{optimizer}"
    return label


def config_hash(config: dict) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), first 12 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _method_points(method: FullMethod | LoraMethod | PeftMethod) -> list[MethodConfig]:
    """The cartesian product of a method's grid fields."""
    if isinstance(method, PeftMethod):
        return [MethodConfig(kind="peft", lr=lr, weight_decay=method.weight_decay, peft=point)
                for point, lr in itertools.product(method.points(), method.lr)]
    if isinstance(method, FullMethod):
        return [
            MethodConfig(
                kind="full",
                lr=lr,
                weight_decay=wd,
                attention_dropout=drop,
                train_embeddings=method.train_embeddings,
            )
            for lr, wd, drop in itertools.product(
                method.lr, method.weight_decay, method.attention_dropout
            )
        ]
    return [
        MethodConfig(
            kind="lora",
            lr=lr,
            weight_decay=method.weight_decay,
            r=r,
            alpha=method.alpha if method.alpha is not None else 2.0 * r,
            targets=targets,
            dropout=method.dropout,
            use_rslora=method.use_rslora,
            use_dora=method.use_dora,
            init=method.init,
        )
        for r, targets, lr in itertools.product(method.r, method.targets, method.lr)
    ]


def expand(study: Study) -> list[RunConfig]:
    """Every run of the study, in grid order. A run defined twice (a value repeated in a grid
    list, or two ``methods`` entries that overlap) is a ``UserError`` naming both places."""
    runs: dict[str, RunConfig] = {}
    where: dict[str, int] = {}
    precision = resolve_precision(study.training.precision, study.base.device)
    for index, method in enumerate(study.methods):
        optimizers = method.optimizer or [study.optimizer.name]
        for point, opt_name, seed in itertools.product(
            _method_points(method), optimizers, study.training.seeds
        ):
            run = RunConfig(
                base=study.base,
                target=study.target,
                method=point,
                optimizer=study.optimizer.model_copy(update={"name": opt_name}),
                schedule=study.schedule,
                # seeds and threads do not define a run: one seed each, threads only speed;
                # precision ``auto`` is resolved here, so the id names what actually trains
                training=study.training.model_copy(
                    update={"seeds": [seed], "threads": 1, "precision": precision}),
                seed=seed,
                budgets=study.budgets,
            )
            if run.run_id in runs:
                first = where[run.run_id]
                place = (f"methods[{index}] twice" if first == index
                         else f"methods[{first}] and methods[{index}]")
                raise UserError(
                    f"{place} define the same run ({run.label}, lr {point.lr:g}, seed {seed}): "
                    "remove the repeated value or entry")
            runs[run.run_id] = run
            where[run.run_id] = index
    return list(runs.values())
