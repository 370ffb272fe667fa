"""The study file: one typed, validated description of a whole learn/forget study.

A study names a base model, a target domain and regime, a grid of finetuning methods, the
optimizer and schedule, and the training budgets at which checkpoints are measured. Every field
is documented in docs/study.md. Unknown fields and bad values are refused with a message that
names the field, the value and what is allowed (see ``load_study``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learnforget.errors import UserError
from learnforget.peft_grid import grid_count, grid_points, read_config_file

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|device_map=[\w.-]+)$")
"""The device strings a study (and ``--device``) accepts."""


class _Strict(BaseModel):
    """Base for every section: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True,
                              allow_inf_nan=False)  # nan/inf: "should be a finite number"


def _as_list(value: object) -> object:
    """Let a grid field be written as one value or as a list of values."""
    if value is None or isinstance(value, list):
        return value
    return [value]


class BaseModelSpec(_Strict):
    """Which model to finetune."""

    model: str = Field(
        description="builtin:tiny | builtin:micro | a Hugging Face hub id | a local model folder "
        "| a .gguf file"
    )
    revision: str | None = Field(None, description="hub branch, tag or commit (hub ids only)")
    gguf_file: str | None = Field(None, description="GGUF file name inside a hub repo or folder")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weight dtype the base is loaded in for evaluation (and, under "
        "a mixed training.precision, LoRA's frozen base); training.precision sets the rest")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | device_map=auto")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError("unknown device; use auto, cpu, cuda, cuda:N, mps or "
                             "device_map=auto")
        return value


class TargetSpec(_Strict):
    """What the finetuning should teach: a domain and a data regime."""

    domain: Literal["code", "math", "custom"] = Field(
        description="code | math (built-in data and tasks) | custom (your data, in 'data')")
    regime: Literal["ift", "cpt"] = Field(
        description="ift (instruction finetuning: prompt/response pairs) | cpt (continued "
        "pretraining: documents)")
    data: str | None = Field(
        None,
        description="your data: a local .jsonl/.json/.parquet file or folder, a named dataset "
        "(starcoder-python, open-web-math, magicoder-evol-instruct-110k, metamathqa) or a hub id. "
        "custom: trained on, 5% held out to measure learning; code / math: all of it trained "
        "on, learning measured with the domain's held-out data and benchmarks. Empty = the "
        "built-in data of the domain.",
    )
    max_examples: int | None = Field(None, gt=0, description="cap on documents / pairs used")
    text_field: str | None = Field(None, description="custom CPT data: the field with the text")
    prompt_field: str | None = Field(None, description="custom IFT data: the prompt's field")
    response_field: str | None = Field(None, description="custom IFT data: the response's field")

    @model_validator(mode="after")
    def _custom_needs_data(self) -> TargetSpec:
        if self.domain == "custom" and not self.data:
            raise ValueError("domain 'custom' needs 'data': a file, folder or dataset name")
        return self


class FullMethod(_Strict):
    """Full finetuning: every parameter trains (the paper's baseline)."""

    kind: Literal["full"] = Field(description="full: every parameter trains")
    lr: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(
        min_length=1, description="peak learning rate; a list sweeps it (one run each)")]
    weight_decay: Annotated[list[Annotated[float, Field(ge=0)]], Field(
        min_length=1, description="decoupled weight decay; a list sweeps it")] = [0.0]
    attention_dropout: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(
        min_length=1, description="dropout on attention probabilities; a list sweeps it")] = [0.0]
    train_embeddings: bool = Field(True, description="false freezes embeddings and LM head")
    optimizer: list[Literal["adamw", "lion"]] | None = Field(
        None, description="override the study's optimizer (a list compares optimizers)"
    )

    _lists = field_validator("lr", "weight_decay", "attention_dropout", "optimizer", mode="before")(
        classmethod(lambda cls, v: _as_list(v))
    )


LoraTargets = Literal["attention", "mlp", "all"]
LoraInit = Literal["default", "gaussian", "pissa", "olora", "loftq"]


class LoraMethod(_Strict):
    """LoRA through Hugging Face PEFT: ΔW = (α/r)·B·A on the chosen modules."""

    kind: Literal["lora"] = Field(description="lora: PEFT LoRA adapters on a frozen base")
    lr: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(
        min_length=1, description="peak learning rate; a list sweeps it (one run each)")]
    r: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(
        min_length=1, description="LoRA rank; a list sweeps it")] = [16]
    alpha: float | None = Field(None, gt=0, description="LoRA α; default 2·r (the paper's)")
    targets: Annotated[list[LoraTargets], Field(
        min_length=1, description="modules that get adapters: attention | mlp | all "
        "(all linear layers); a list compares them")] = ["all"]
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    use_rslora: bool = Field(False, description="scale by α/√r instead of α/r")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (PEFT use_dora)")
    init: LoraInit = Field("default", description="adapter initialisation (PEFT "
                           "init_lora_weights): default | gaussian | pissa | olora")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    optimizer: list[Literal["adamw", "lion"]] | None = Field(
        None, description="override the study's optimizer (a list compares optimizers)")

    _lists = field_validator("lr", "r", "targets", "optimizer", mode="before")(
        classmethod(lambda cls, v: _as_list(v))
    )

    @model_validator(mode="after")
    def _loftq_unsupported(self) -> LoraMethod:
        if self.init == "loftq":
            raise ValueError("init 'loftq' needs a quantised base and is not supported; use "
                             "default, gaussian, pissa or olora")
        return self


class PeftMethod(_Strict):
    """Any PEFT method (VeRA, IA³, LoHa, LoKr, OFT, BOFT, AdaLoRA, prompt tuning, …) from a PEFT
    configuration, validated by PEFT's own config class (see ``peft_grid``)."""

    kind: Literal["peft"] = Field(description="peft: any PEFT method from its configuration")
    lr: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(
        min_length=1, description="peak learning rate; a list sweeps it (one run each)")]
    config: dict[str, Any] | None = Field(
        None, description="a PEFT configuration: peft_type and that type's fields; a list "
        "sweeps a field (a list of lists in a list-valued field); target_modules also takes "
        "attention | mlp | all")
    config_file: str | None = Field(
        None, description="an adapter_config.json (or its folder) as PEFT writes them, instead "
        "of config")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    optimizer: list[Literal["adamw", "lion"]] | None = Field(
        None, description="override the study's optimizer (a list compares optimizers)")

    _lists = field_validator("lr", "optimizer", mode="before")(
        classmethod(lambda cls, v: _as_list(v)))

    @model_validator(mode="after")
    def _valid_config(self) -> PeftMethod:
        if (self.config is None) == (self.config_file is None):
            raise ValueError("give exactly one of config (a PEFT configuration) or config_file "
                             "(an adapter_config.json)")
        try:
            self.points()
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return self

    def peft_config(self) -> dict[str, Any]:
        """The PEFT configuration mapping, from ``config`` or read from ``config_file``."""
        if self.config is not None:
            return dict(self.config)
        return read_config_file(self.config_file or "")

    def points(self) -> list[dict[str, Any]]:
        """Every validated PEFT configuration this entry sweeps (``peft_grid.grid_points``)."""
        return grid_points(self.peft_config())


Method = Annotated[FullMethod | LoraMethod | PeftMethod, Field(discriminator="kind")]


class OptimizerSpec(_Strict):
    """The optimizer (decoupled weight decay in both)."""

    name: Literal["adamw", "lion"] = Field("adamw", description="adamw | lion")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = \
        Field((0.9, 0.95), description="(β1, β2), each 0 ≤ β < 1")
    eps: float = Field(1e-8, gt=0, description="AdamW's ε (Lion has none)")


class ScheduleSpec(_Strict):
    """Learning-rate schedule: warmup then cosine / constant / inverse square root."""

    name: Literal["cosine", "constant", "inverse_sqrt"] = Field(
        "cosine", description="shape after warmup: cosine | constant | inverse_sqrt")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps spent warming up")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine ends at this share of lr")


class TrainingSpec(_Strict):
    """Batching and reproducibility."""

    batch_size: int = Field(16, ge=1, description="sequences per optimizer step (global)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step; batch_size % it == 0")
    seq_len: int = Field(256, ge=8, description="tokens per sequence (CPT block / IFT max)")
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(
        [0], min_length=1, description="one run per seed; each 0 ≤ seed < 2³² (what torch, "
        "NumPy and the data order's generator all take)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    threads: int = Field(1, ge=1, description="torch threads per run process (CPU)")
    precision: Literal["auto", "fp32", "bf16-mixed", "fp16-mixed", "bf16-pure"] = Field(
        "auto", description="auto (bf16-mixed on a CUDA device with bf16, else fp32) | fp32 | "
        "bf16-mixed / fp16-mixed (fp32 master weights and optimizer states, bf16/fp16 autocast "
        "compute) | bf16-pure (weights in bf16: small updates are rounded away)")
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in the backward pass instead "
        "of keeping them: far less activation memory for about a third more compute; the same "
        "results")
    group_by_length: bool = Field(
        False, description="IFT: batch examples of similar length (shuffled groups of 50 "
        "batches, each sorted by length) so that batches pad little; another data order, so "
        "other numbers than without it")

    _lists = field_validator("seeds", mode="before")(classmethod(lambda cls, v: _as_list(v)))

    @model_validator(mode="after")
    def _accum_divides(self) -> TrainingSpec:
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        return self


class BudgetSpec(_Strict):
    """When checkpoints are taken. Exactly one of tokens, epochs or steps."""

    tokens: list[Annotated[int, Field(gt=0)]] | None = Field(
        None, description="checkpoints in training tokens seen")
    epochs: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, description="checkpoints in passes over the training data")
    steps: list[Annotated[int, Field(gt=0)]] | None = Field(
        None, description="checkpoints in optimizer steps")

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        given = [k for k in ("tokens", "epochs", "steps") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of tokens, epochs or steps (a list of checkpoints)")
        values = getattr(self, given[0])
        if sorted(values) != list(values) or len(set(values)) != len(values):
            raise ValueError(f"{given[0]} must be strictly increasing, got {values}")
        return self

    @property
    def unit(self) -> str:
        """Which unit the checkpoints are given in."""
        return next(k for k in ("tokens", "epochs", "steps") if getattr(self, k))

    @property
    def values(self) -> list[float]:
        """The checkpoint positions in ``unit``."""
        return list(getattr(self, self.unit))


class EvaluationSpec(_Strict):
    """What is measured at every checkpoint (and once on the base model)."""

    learning: list[str] | None = Field(None, description="tasks; default from target domain")
    forgetting: list[str] | None = Field(None, description="tasks; default source_bpb, cloze")
    limit: int | None = Field(None, gt=0, description="items per task (a fixed seeded subset)")
    final_only: list[str] = Field(
        [], description="tasks measured only on the base and at each run's last checkpoint "
        "(for costly tasks in time-boxed studies)"
    )
    batch_size: int = Field(16, ge=1, description="sequences per scoring forward pass")
    spectrum: bool = Field(True, description="ΔW spectrum and intruders at every checkpoint")
    diversity: bool = Field(False, description="sampled generations at the final checkpoint")
    diversity_prompts: int = Field(20, ge=1, description="prompts sampled for diversity")
    diversity_samples: int = Field(8, ge=2, description="samples per prompt")
    diversity_temperature: float = Field(1.0, gt=0, le=2, description="sampling temperature")
    diversity_max_new_tokens: int = Field(96, ge=8, description="tokens generated per sample")


class Study(_Strict):
    """A whole study: base × target × methods grid × seeds, measured at each budget."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80,
                      description="the study's name (letters, digits, _ . -); names OUT by default")
    base: BaseModelSpec = Field(description="the model to finetune (a string is its 'model')")
    target: TargetSpec = Field(description="the domain and regime to learn")
    methods: Annotated[list[Method], Field(
        min_length=1, description="the grid: each entry expands to one run per combination")]
    optimizer: OptimizerSpec = Field(OptimizerSpec(), description="the optimizer of every run")
    schedule: ScheduleSpec = Field(ScheduleSpec(), description="the learning-rate schedule")
    training: TrainingSpec = Field(TrainingSpec(), description="batching and seeds")
    budgets: BudgetSpec = Field(description="the checkpoints: exactly one of tokens, epochs, steps")
    evaluation: EvaluationSpec = Field(EvaluationSpec(), description="what is measured")
    workers: int = Field(1, ge=1, description="runs trained side by side on this machine")
    search: Literal["grid", "halving"] = Field(
        "grid", description="grid: every run trains to the last budget | halving: successive "
        "halving over each method's LR sweep, the checkpoints but the last its rungs")
    eta: int = Field(3, ge=2, description="halving: at each rung the best ⌈n/eta⌉ LRs of a "
                     "method go on (and any within noise of the best); unused under grid")

    @field_validator("base", mode="before")
    @classmethod
    def _base_shorthand(cls, value: object) -> object:
        return {"model": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _group_by_length_is_ift(self) -> Study:
        if self.training.group_by_length and self.target.regime == "cpt":
            raise ValueError(
                "training.group_by_length applies to instruction finetuning (target.regime "
                "ift): CPT packs its tokens into blocks of one length, so there is nothing to "
                "group; remove it")
        return self

    @model_validator(mode="after")
    def _grid_within_reach(self) -> Study:
        """The grid's run count, by arithmetic (never by enumerating it): a study past
        ``MAX_RUNS`` runs is refused before anything expands it."""
        runs = grid_size(self)
        if runs > MAX_RUNS:
            raise ValueError(
                f"the grid expands to {runs:,} runs (each methods entry: the product of its "
                f"list lengths, times {len(self.training.seeds):,} seeds), more than {MAX_RUNS:,}; "
                "sweep fewer values or seeds, or split the grid into several studies")
        return self

    @model_validator(mode="after")
    def _budgets_distinct_steps(self) -> Study:
        """CPT token budgets fall on whole steps of batch_size × seq_len packed tokens: two
        budgets in one step would silently become one checkpoint."""
        if self.budgets.unit != "tokens" or self.target.regime != "cpt":
            return self
        per_step = self.training.batch_size * self.training.seq_len
        seen: dict[int, int] = {}
        for tokens in self.budgets.values:
            step = max(1, math.ceil(tokens / per_step))
            if step in seen:
                raise ValueError(
                    f"budgets.tokens {seen[step]} and {int(tokens)} both fall on step {step} "
                    f"({per_step} tokens per step = batch_size × seq_len); drop one or space "
                    "them at least one step apart")
            seen[step] = int(tokens)
        return self


MAX_RUNS = 10_000  # a grid past this is refused: no run list that long is a study anyone reads


def grid_size(study: Study) -> int:
    """How many runs ``study`` expands to: per methods entry the product of its list-valued
    fields' lengths, summed, times the number of seeds (an upper bound where entries overlap,
    which ``plan`` refuses)."""
    per_seed = 0
    for method in study.methods:
        count = 1
        if isinstance(method, PeftMethod):
            count = grid_count(method.peft_config())
        for name, value in method.model_dump().items():
            if name == "config":
                continue
            if isinstance(value, list):
                count *= max(len(value), 1)
        per_seed += count
    return per_seed * len(study.training.seeds)


def _describe_error(error: dict) -> str:
    """One line per pydantic error: the field path, the value given, and what is allowed."""
    loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    loc = loc or "study"
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"  {loc}: unknown field (check the spelling; docs/study.md lists every field)"
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"  {loc}: {msg}{shown}"


def parse_study(data: object, source: str = "study") -> Study:
    """Validate an already-parsed YAML/JSON object into a ``Study`` or raise ``UserError``."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a study file must be a mapping of fields, got {type(data)}")
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        lines = [_describe_error(e) for e in exc.errors()]
        raise UserError(f"{source} is not a valid study:\n" + "\n".join(lines)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML lets the last win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: let the base class report it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on line {line} (first on line {first}): "
                    "keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    """The study file's text, or a ``UserError`` saying why it cannot be one."""
    if path.is_dir():
        raise UserError(f"{path} is a folder: give the study's .yaml file (e.g. "
                        "examples/micro.yaml)")
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is not a regular file (a device, FIFO or socket): give the "
                        "study's .yaml file")
    if not path.is_file():
        raise UserError(f"study file {path} does not exist (examples/ has some to start from)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read study file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (not UTF-8): give a study YAML file"
                        ) from None
    if "\x00" in text:
        raise UserError(f"{path} is a binary file, not a study YAML file")
    return text


def load_studies(path: str | Path) -> list[Study]:
    """Read and validate a study YAML file, which may hold several studies as YAML documents
    separated by ``---`` (the demo has one per target); every problem becomes a ``UserError``.
    A key given twice in one mapping is an error naming the key and its line."""
    path = Path(path)
    text = _read_text(path)
    try:
        documents = [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader)  # noqa: S506
                     if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(f"{exc.context or ''} {exc.problem or ''}".split())
        raise UserError(f"{path}{where} is not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise UserError(f"{path} nests lists or mappings thousands of levels deep: a study "
                        "file needs a few levels (docs/study.md)") from None
    if not documents:
        raise UserError(f"{path} is empty: a study file needs name, base, target, methods, "
                        "budgets (docs/study.md)")
    studies = []
    for index, data in enumerate(documents):
        source = str(path) if len(documents) == 1 else f"{path} (study {index + 1})"
        studies.append(parse_study(data, source=source))
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: the studies in one file need different names, got {names}")
    return studies


def load_study(path: str | Path) -> Study:
    """Read and validate a file holding exactly one study."""
    studies = load_studies(path)
    if len(studies) != 1:
        raise UserError(f"{path} holds {len(studies)} studies; this command takes one")
    return studies[0]
