"""Training memory before a run: the estimate ``learnforget plan`` and ``estimate`` show.

The estimate follows the accounting of the paper's Appendix D (after Rajbhandari et al. and
Korthikanti et al.): the weights, their gradients and the optimizer states, plus the activations
that autograd keeps for the backward pass, for the micro-batch each process sees.

- **weights**: every parameter in the dtype it is held in for training (``precision.py``):
  float32 under ``fp32`` and, for full finetuning, under the mixed precisions (master weights);
  LoRA's frozen base in ``base.dtype`` under a mixed precision; bf16 under ``bf16-pure``
  (LoRA's adapters stay float32).
- **gradients**: one per trainable parameter, in its dtype (LoRA: the adapters only).
- **optimizer**: AdamW keeps two states per trainable parameter, Lion one.
- **activations**: per token and decoder layer, ``8·h + 2·h_kv + 4·i + heads`` values (h the
  width, h_kv the key/value width, i the MLP width: the inputs and outputs of the norms,
  projections, rotary embedding, attention and SwiGLU that autograd saves, counted on a Llama
  with saved-tensor hooks), plus per token ``3·h`` for the last norm and head input and
  ``LOGIT_COPIES·vocab`` float32 values for the logits, the loss's log-softmax and their
  gradients. In float32 under ``fp32``, in 2 bytes under bf16 autocast (norms and logits stay
  float32). With gradient checkpointing a layer keeps only its input (``h`` per token), and one
  layer's activations are rebuilt at a time in the backward pass.
- **snapshot**: with ``evaluation.spectrum`` on, a CPU copy of the base's 2-D weights (for ΔW).
- **runtime**: on a CPU, the resident memory of the interpreter and the libraries a run imports
  (measured by ``executors.footprint``, passed in); on CUDA none (``max_memory_allocated`` leaves
  out the context).

Under FSDP with full sharding over ``shards`` processes, weights, gradients and optimizer states
are divided among them, and each process sees ``batch_size / shards`` sequences.

The estimate is checked against the peak a run records (``peak_memory.py``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from learnforget.peak_memory import MB
from learnforget.precision import MIXED, training_dtype

LOGIT_COPIES = 4
"""float32 vocab-sized values per token alive in the loss's backward pass: the logits, the
log-softmax the loss saves, its gradient and the logits' gradient (the loss shifts the labels,
not the logits, so no sliced copy of them or of their gradient is made)."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only transformer's config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """The shape of a ``transformers`` config (Llama-family field names)."""
        heads = config.num_attention_heads
        return cls(hidden=config.hidden_size, intermediate=config.intermediate_size,
                   layers=config.num_hidden_layers, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   vocab=config.vocab_size)

    def lora_extra_per_token(self, targets: str | None) -> int:
        """Extra values per token and layer under LoRA: the backward pass of an adapted layer
        makes its input gradient twice (through the frozen weight and through the adapter)
        before adding them — one input width per adapted module —, and PEFT's adapter path
        makes its own output (scaled by α/r, then added to the frozen layer's) — one output
        width per adapted module. Checked against the recorded peak on ``builtin:micro``
        (``tests/test_memory.py``: both terms within 10%; 10% under with the first alone)."""
        kinds = {"attention": ("attention",), "mlp": ("mlp",)}.get(targets or "all",
                                                                   ("attention", "mlp"))
        kv_width = self.hidden // self.heads * self.kv_heads
        inputs = {"attention": 4 * self.hidden, "mlp": 2 * self.hidden + self.intermediate}
        outputs = {"attention": 2 * self.hidden + 2 * kv_width,
                   "mlp": 2 * self.intermediate + self.hidden}
        return sum(inputs[kind] + outputs[kind] for kind in kinds)

    def layer_values_per_token(self) -> int:
        """Activation values one decoder layer keeps per token for the backward pass."""
        kv_width = self.hidden // self.heads * self.kv_heads
        return 8 * self.hidden + 2 * kv_width + 4 * self.intermediate + self.heads


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs at its peak, by component."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    snapshot: int = 0
    runtime: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        """All components together."""
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.snapshot + self.runtime)

    def as_mb(self) -> dict[str, float]:
        """Every component and the total in MiB (for tables and JSON)."""
        parts = ("weights", "gradients", "optimizer", "activations", "snapshot", "runtime")
        out = {name: getattr(self, name) / MB for name in parts}
        out["total"] = self.total / MB
        return out


def activation_bytes(shape: ModelShape, tokens: int, precision: str,
                     checkpointing: bool = False, lora_targets: str | None = None,
                     lora: bool = False) -> int:
    """Activations kept for the backward pass of one micro-batch of ``tokens`` tokens (with
    ``lora``: the adapted layers' extra input gradients, ``lora_targets`` naming them)."""
    low = precision in MIXED or precision == "bf16-pure"
    size = 2 if low else 4
    norm_values = 4 * shape.hidden  # two RMS norms per layer, computed in float32
    layer = shape.layer_values_per_token()
    if lora:
        layer += shape.lora_extra_per_token(lora_targets)
    per_layer = (layer - norm_values) * size + norm_values * 4
    if checkpointing:  # layer inputs kept; one layer rebuilt at a time
        layers = shape.layers * shape.hidden * size + per_layer
    else:
        layers = shape.layers * per_layer
    head = 3 * shape.hidden * size + LOGIT_COPIES * shape.vocab * 4
    return tokens * (layers + head)


def estimate(shape: ModelShape, trainable: int, total: int, *, frozen_base: bool,
             precision: str, base_dtype: str, optimizer: str, batch_size: int, grad_accum: int,
             seq_len: int, checkpointing: bool = False, shards: int = 1,
             lora_targets: str | None = None,
             snapshot_params: int = 0, runtime: int = 0) -> MemoryEstimate:
    """The memory of one training process (see the module docstring for the model);
    ``frozen_base``: only adapters train (LoRA), not every parameter."""
    held = DTYPE_BYTES[training_dtype(precision, frozen_base, base_dtype)]
    trainable_size = 2 if precision == "bf16-pure" and not frozen_base else 4
    frozen = total - trainable
    weights = frozen * held + trainable * (trainable_size if frozen_base else held)
    gradients = trainable * trainable_size
    states = 1 if optimizer == "lion" else 2
    optimizer_bytes = states * trainable * trainable_size
    micro = max(batch_size // grad_accum // max(shards, 1), 1)
    activations = activation_bytes(shape, micro * seq_len, precision, checkpointing,
                                   lora_targets, frozen_base)
    notes = []
    if shards > 1:
        weights, gradients, optimizer_bytes = (
            -(-x // shards) for x in (weights, gradients, optimizer_bytes))
        notes.append(f"FSDP over {shards} processes: weights, gradients and optimizer states "
                     "sharded")
    return MemoryEstimate(weights, gradients, optimizer_bytes, activations,
                          snapshot=snapshot_params * 4, runtime=runtime, notes=tuple(notes))


def device_capacity(device: str) -> tuple[int, str]:
    """(bytes, description) of the memory a study's ``base.device`` trains in: the GPU's
    memory on CUDA, the machine's physical memory otherwise."""
    from learnforget.precision import uses_cuda

    if uses_cuda(device) and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
        props = torch.cuda.get_device_properties(index)
        return props.total_memory, f"{props.name} ({props.total_memory / 2**30:.1f} GiB)"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total, f"CPU memory ({total / 2**30:.1f} GiB)"


@dataclass(frozen=True)
class RunMemory:
    """The estimate of one planned run, with what it is compared against."""

    run_id: str
    label: str
    micro_batch: int
    estimate: MemoryEstimate
    capacity: int
    capacity_name: str

    @property
    def fits(self) -> bool:
        """Whether the estimate stays within the device's memory."""
        return self.estimate.total <= self.capacity


def _counts(run, config) -> tuple[int, int]:
    """(trainable, total) parameters of the run's method, on a meta-device model."""
    from transformers import AutoModelForCausalLM

    from learnforget.methods import apply_method, count_parameters

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    method = run.method.model_copy(update={"init": "default"})  # no SVD on meta
    return count_parameters(apply_method(model, method))


def adapted_group(method) -> str | None:
    """The study's module group a method's adapters sit on (``attention | mlp | all``): LoRA's
    ``targets``; a PEFT method's ``target_modules`` when it names a group, else ``all`` (its own
    module list, or PEFT's default, counted as every linear layer: an upper estimate)."""
    if method.kind != "peft":
        return method.targets
    targets = (method.peft or {}).get("target_modules")
    return targets if targets in ("attention", "mlp", "all") else "all"


def estimate_runs(runs: list, spectrum: bool = False, shards: int = 1,
                  runtime: int = 0) -> list[RunMemory]:
    """The memory estimate of every run (one meta-device model per distinct method) on the
    runs' device; ``runtime``: the bytes a run's process holds before it loads anything
    (``executors.footprint.runtime_bytes``: measured on a CPU, 0 on CUDA)."""
    from learnforget.planinfo import base_config
    from learnforget.precision import uses_cuda

    if not runs:
        return []
    config = base_config(runs[0].base)
    shape = ModelShape.from_config(config)
    capacity, name = device_capacity(runs[0].base.device)
    cuda = uses_cuda(runs[0].base.device)
    cache: dict[str, tuple[int, int]] = {}
    out = []
    for run in runs:
        key = run.method.model_copy(update={"lr": 0.0}).model_dump_json()
        if key not in cache:
            cache[key] = _counts(run, config)
        trainable, total = cache[key]
        t = run.training
        result = estimate(
            shape, trainable, total, frozen_base=not run.method.is_full, precision=t.precision,
            base_dtype=run.base.dtype, optimizer=run.optimizer.name, batch_size=t.batch_size,
            grad_accum=t.grad_accum, seq_len=t.seq_len,
            checkpointing=getattr(t, "gradient_checkpointing", False), shards=shards,
            lora_targets=adapted_group(run.method),
            snapshot_params=total if spectrum and not cuda else 0, runtime=runtime)
        micro = max(t.batch_size // t.grad_accum // max(shards, 1), 1)
        out.append(RunMemory(run.run_id, run.label, micro, result, capacity, name))
    return out


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending, by trial division up to √n (a batch of 10¹² has 169,
    found in about 10⁶ steps; enumerating 1 … n would not end)."""
    small, large = [], []
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            small.append(d)
            if d != n // d:
                large.append(n // d)
    return small + large[::-1]


def fit_options(run, memory: RunMemory, spectrum: bool = False, shards: int = 1) -> list[str]:
    """What would make a run that does not fit fit: each option with its estimate."""
    from learnforget.plan import MethodConfig
    from learnforget.precision import uses_cuda

    t = run.training
    trials: list[tuple[str, object]] = []
    for accum in divisors(t.batch_size):
        if accum > t.grad_accum:
            trials.append((f"training.grad_accum: {accum} (micro-batches of "
                           f"{t.batch_size // accum}, same batch_size)",
                           run.model_copy(update={"training": t.model_copy(
                               update={"grad_accum": accum})})))
    if not getattr(t, "gradient_checkpointing", False):
        trials.append(("training.gradient_checkpointing: true",
                       run.model_copy(update={"training": t.model_copy(
                           update={"gradient_checkpointing": True})})))
    if run.method.is_full:
        lora = MethodConfig(kind="lora", lr=run.method.lr, r=16, alpha=32, targets="all")
        trials.append(("a LoRA method (r: 16, targets: all)",
                       run.model_copy(update={"method": lora})))
    if t.precision == "fp32" and uses_cuda(run.base.device):
        trials.append(("training.precision: bf16-mixed",
                       run.model_copy(update={"training": t.model_copy(
                           update={"precision": "bf16-mixed"})})))
    options, accum_done = [], False
    for text, trial in trials:
        if accum_done and text.startswith("training.grad_accum"):
            continue
        result = estimate_runs([trial], spectrum, shards, memory.estimate.runtime)[0]
        if result.fits or not text.startswith("training.grad_accum"):
            options.append(f"{text}: {result.estimate.total / MB:,.0f} MiB"
                           + ("" if result.fits else " (still too much)"))
            accum_done = accum_done or (text.startswith("training.grad_accum") and result.fits)
    return options


def memory_warnings(runs: list, spectrum: bool = False, runtime: int = 0) -> list[str]:
    """A warning for each run whose estimated training memory exceeds its device's, with the
    options that would make it fit (``learnforget plan``; ``runtime`` as in ``estimate_runs``)."""
    warnings = []
    for run, m in zip(runs, estimate_runs(runs, spectrum, runtime=runtime), strict=True):
        if not m.fits:
            warnings.append(
                f"run {m.run_id} ({m.label}) needs about {m.estimate.total / MB:,.0f} MiB, more "
                f"than {m.capacity_name} holds (`learnforget estimate` shows the parts). "
                f"Options: {'; '.join(fit_options(run, m, spectrum))}")
    return warnings
