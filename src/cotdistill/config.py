"""The YAML config: one pydantic section per stage, every key documented, unknown keys rejected.

Keys follow METHODS.md (``mind.beta``, ``train.lr``, ...). Load with :func:`load_config`; every
validation error becomes one line ``FILE: dotted.key: message``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cotdistill.data.prompts import DEFAULT_INSTRUCTION
from cotdistill.errors import CotdistillError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


# --------------------------------------------------------------------------- run


class RunConfig(Section):
    name: str = Field("run", description="Run name; the run folder is `output_dir/name`.")
    output_dir: str = Field("runs", description="Parent folder of run folders.")
    seed: int = Field(0, description="Global seed (data sampling, training, evaluation).")


# --------------------------------------------------------------------------- data


class PerspectiveSpec(Section):
    """A user-defined (or replaced) perspective for synthesis prompts (METHODS.md §1.2)."""

    id: str = Field(description="Stable id, used in cache keys and as a path label.")
    display_name: str | None = Field(None, description="Name shown in the prompt; defaults to the id.")
    definition: str = Field("", description="What the perspective means (documentation, data card).")
    style_line: str = Field(description="The instruction inserted into the teacher prompt.")


class ImportSpec(Section):
    """A public rationale set to import into the store instead of (or besides) live synthesis."""

    format: Literal["mcc-kd", "eit", "sbs", "mentor-kd", "store"] = Field(description="Importer to use.")
    path: str | None = Field(None, description="File or folder; default: the set's folder in the data dir.")
    options: dict[str, Any] = Field(default_factory=dict, description="Importer-specific options.")


class DataConfig(Section):
    question_pool: list[str] = Field(
        default_factory=lambda: ["svamp:train"],
        description="Benchmarks (`name[:split]` or `jsonl:PATH`) whose questions are sent to teachers.",
    )
    max_questions: int | None = Field(None, ge=1, description="Cap on pool size (seeded sample).")
    perspectives: list[str | PerspectiveSpec] = Field(
        default_factory=lambda: [
            "formal_symbolic", "intuitive", "decomposition", "planning",
            "analogy", "socratic", "contrastive", "counterfactual",
        ],
        description="Perspective ids (built-in) or full specs (custom/replacement).",
    )
    standard_path: Literal["plain", "none"] = Field(
        "plain", description="Also synthesize one standard 'step by step' path per question (single-path baselines)."
    )
    answer_suffix: str = Field("The answer is: {a}", description="Shared answer line appended to every path (§0.1).")
    student_instruction: str = Field(
        DEFAULT_INSTRUCTION,
        description="Appended to the question in the student's user turn (§0). Empty for COMPACT fidelity runs.",
    )
    answer_span_scope: Literal["value", "line"] = Field("value", description="Answer span: value tokens or whole line.")
    imports: list[ImportSpec] = Field(default_factory=list, description="Public rationale sets to import.")
    decontaminate: bool = Field(True, description="Refuse training questions that appear in any eval set.")


# --------------------------------------------------------------------------- teachers / synthesis


class TeacherConfig(Section):
    name: str = Field(description="Stable teacher id (part of every record key).")
    backend: Literal["openai", "transformers", "vllm"] = Field("openai", description="Teacher backend.")
    model: str = Field(description="Model name (API) or HF id / local folder / .gguf / alias (local backends).")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    base_urls: list[str] | None = Field(
        None, min_length=1,
        description="Several replicas of the same model (e.g. one vLLM server per GPU) instead of base_url: each "
        "request goes to the replica with the fewest requests in flight.",
    )
    api_key_env: str | None = Field(None, description="Name of the env var holding the API key (never the key).")
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once per endpoint (openai backend).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(5, ge=0, description="Retries on 429/5xx/timeouts/malformed replies.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call (local backends).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (§1.3).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling (§1.3).")
    max_new_tokens: int = Field(2048, ge=1, description="Generation budget per rationale.")
    seed: int = Field(0, description="Sampling seed (part of the record key).")
    samples_per_perspective: int = Field(1, ge=1, description="Rationales per (question, perspective).")
    perspectives: list[str] | None = Field(None, description="Subset of data.perspectives for this teacher.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Local backends only.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM only.")
    reasoning: Literal["keep", "drop", "merge"] = Field(
        "keep",
        description="A reasoning model's chain of thought (the server's `reasoning_content`, or `<think>` blocks in "
        "the text): keep = store it in the record's `reasoning` field, apart from the answer text (curation decides "
        "what a path's rationale is: curate.reasoning); drop = do not store it; merge = store reasoning + answer as "
        "one text.",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields sent with every request (openai backend), e.g. {top_k: 20} or "
        "{chat_template_kwargs: {enable_thinking: true}}; part of the record key when set.",
    )

    @model_validator(mode="after")
    def _one_endpoint_key(self) -> TeacherConfig:
        if self.base_url and self.base_urls:
            raise ValueError("base_urls: give base_url or base_urls, not both")
        return self


class SynthesisConfig(Section):
    prompt_version: str = Field("v1", description="Teacher prompt template version (part of the record key).")
    system_prompt: str = Field(
        "You are an expert problem solver who writes clear, correct solutions.", description="Teacher system turn."
    )
    retry_failed: bool = Field(True, description="Re-send requests that failed in an earlier run.")
    dual_cot: bool = Field(
        False,
        description="EDIT's dual CoTs: after the main round, ask each teacher for the most likely wrong twin of "
        "every correct standard path (CCP) and a hinted correct twin of every wrong one (AHP); stored as "
        "`rejected` / `chosen` paths linked to their twin (needs data.standard_path: plain; curate.keep_rejected).",
    )
    dual_cot_prompt_version: str = Field("edit-v1", description="Version of the CCP/AHP templates (teachers/prompts.py).")


# --------------------------------------------------------------------------- curate


class FilterConfig(Section):
    judge: Literal["rule", "none"] = Field("rule", description="Correctness judge (rule = the eval checker).")
    max_regenerations: int = Field(3, ge=0, description="Resample a failed path with a new seed up to N times.")
    min_correct_paths: int = Field(
        1, ge=1,
        description="Keep a question with at least this many correct paths of its multi-path set (perspective/"
        "teacher roles), or of its standard paths when the store has no multi-path roles.",
    )
    require_standard: bool | None = Field(
        None,
        description="Keep a question only if it has a correct standard path (what Std-CoT, SbS and MoDE's dev "
        "target train on). Default (null): required when the store holds any standard path, so every method of a "
        "comparison trains on the same questions. With synthesis.dual_cot, set false to keep the questions the "
        "teacher got wrong (their AHP pairs train EDIT; Std-CoT/SbS skip them).",
    )


class DifficultyConfig(Section):
    criterion: Literal["none", "student_greedy_fail", "math_level", "given"] = Field(
        "none", description="How 'hard' is decided (§1.6)."
    )
    min_level: int = Field(4, description="math_level: MATH level counted as hard.")
    target_size: int | None = Field(
        None, ge=1, description="Keep all hard, add seeded easy ones up to this size (criterion none: a seeded cap)."
    )
    hard_ids_file: str | None = Field(
        None,
        description="given: file with one hard question id a line; student_greedy_fail: the base student's eval "
        "JSONL (`id`, `correct`) on the training questions (hard = not correct).",
    )


class InjectConfig(Section):
    """Controlled incompatibility (curate/inject.py): known-bad paths with a correct answer line, for testing
    whether a method's weighting learns to distrust them (the compatibility probe)."""

    fraction: float = Field(0.5, gt=0, le=1, description="Share of the kept questions that get injected paths.")
    kinds: list[Literal["off_topic", "shuffled", "truncated"]] = Field(
        default_factory=lambda: ["off_topic", "shuffled", "truncated"],
        description="One path of each kind per chosen question: another question's rationale, this question's "
        "path with shuffled steps, this question's path cut to its first steps.",
    )
    truncate_fraction: float = Field(0.3, gt=0, lt=1, description="`truncated`: share of the steps kept.")
    seed: int = Field(0, description="Which questions, which sources, which orders.")


class CurateConfig(Section):
    filter: FilterConfig = Field(default_factory=FilterConfig)
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    dedup_threshold: float = Field(
        0.9, gt=0, le=1, description="Drop a path this similar (word-3-gram Jaccard) to a kept path of its question."
    )
    max_paths_per_question: int | None = Field(
        None, ge=1,
        description="Cap on paths per question, per role group: the multi-path set (perspective/teacher roles, "
        "drawn round-robin over teachers) and the standard paths are each capped at this.",
    )
    max_standard_paths: int | None = Field(
        None, ge=1, description="Cap on the standard paths per question (default: max_paths_per_question)."
    )
    teachers: list[str] | None = Field(None, description="Only these teachers' records (default: all).")
    perspectives: list[str] | None = Field(None, description="Only these perspectives (default: all).")
    keep_rejected: bool = Field(
        False, description="Also keep wrong-answer rationales per question as `rejected_paths` (EDIT's dual CoTs)."
    )
    eval_guard: list[str] = Field(
        default_factory=lambda: ["gsm8k", "svamp", "math500"],
        description="Benchmarks whose test questions may never enter training (normalised text).",
    )
    eval_guard_action: Literal["refuse", "drop"] = Field(
        "refuse", description="On a training question found in an eval_guard benchmark: refuse (error) or drop it."
    )
    label_by: Literal["auto", "perspective", "teacher", "teacher_perspective"] = Field(
        "auto",
        description="Path label for weighting signals; auto = perspective (one teacher), teacher (one perspective), "
        "else teacher/perspective.",
    )
    dev_fraction: float = Field(0.0, ge=0, lt=1, description="Held-out fraction of curated questions (dev loss).")
    inject: InjectConfig | None = Field(
        None, description="Add known-incompatible paths (labelled injected-<kind>) to a fraction of questions; off "
        "by default (null). For the teacher-compatibility probe (configs/probe_compat_cpu.yaml).",
    )
    reasoning: Literal["both", "content", "reasoning"] = Field(
        "both",
        description="A path's rationale when its record has a separate reasoning trace (teachers[].reasoning: keep): "
        "both = the reasoning, a blank line, then the answer text; content = the answer text only; reasoning = the "
        "trace only. Records without a trace always use their text.",
    )


# --------------------------------------------------------------------------- train


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    bias: Literal["none", "all", "lora_only"] = "none"
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


#: Hugging Face ``TrainingArguments`` / TRL names accepted for ``train.*`` keys, so an HF user's config reads as is
TRAIN_ALIASES: dict[str, str] = {
    "learning_rate": "lr",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "questions_per_step",  # one "example" is a question with its K paths
    "lr_scheduler_type": "scheduler",
    "max_length": "max_seq_len",  # TRL's SFTConfig
}


def canonical_train_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with HF alias keys renamed to cotdistill's (:data:`TRAIN_ALIASES`); both spellings given is an error."""
    out = dict(values)
    for alias, name in TRAIN_ALIASES.items():
        if alias in out:
            if name in out:
                raise ValueError(f"{alias}: same key as {name} (its Hugging Face name); give one of them")
            out[name] = out.pop(alias)
    return out


class TrainConfig(Section):
    """Training keys; the Hugging Face names of :data:`TRAIN_ALIASES` are accepted too (``learning_rate`` = ``lr``)."""

    model: str = Field("smollm2-135m-instruct", description="Student: HF id, local folder, .gguf or alias.")
    finetune: Literal["lora", "full"] = Field("lora", description="LoRA adapter or full fine-tuning.")
    init_adapter: str | None = Field(None, description="Continue training this LoRA adapter folder (EDIT after Std-CoT).")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(1e-5, gt=0, description="Learning rate (§5.1; try 1e-4 for LoRA if training barely moves).")
    weight_decay: float = Field(0.01, ge=0)
    scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = "constant"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    epochs: float = Field(5, gt=0)
    max_steps: int = Field(-1, description="If > 0, overrides epochs.")
    max_seq_len: int = Field(2560, ge=16)
    questions_per_step: int = Field(1, ge=1, description="Questions per micro-step (each with its K paths).")
    grad_accum: int = Field(4, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    paths_micro_batch: int = Field(8, ge=1, description="Paths per forward chunk (memory-safe exact gradient).")
    share_prompt: bool = Field(
        True,
        description="Pack the paths of a question that share its prompt into one sequence [prompt, path_1, ..., "
        "path_K] (4-D mask, restarted positions): the prompt is computed once instead of K times; same logits "
        "(LoRA dropout draws differ). Models without 4-D-mask support fall back to one row per path.",
    )
    padding_side: Literal["right"] = Field("right", description="Training pads right (§0.7).")
    bf16: bool = Field(True, description="bf16 autocast where supported.")
    gradient_checkpointing: bool = Field(True)
    attn_implementation: str = Field("sdpa")
    seed: int = Field(0)
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Further transformers.TrainingArguments (e.g. {optim: adamw_torch_fused, warmup_steps: 100, "
        "dataloader_num_workers: 2}); checked by `cotdistill validate`. Arguments that train.* keys set are refused "
        "here (set the train key), as are output_dir, remove_unused_columns and prediction_loss_only.",
    )
    push_to_hub: bool = Field(False, description="Upload student/ to the Hugging Face Hub when training finishes.")
    hub_model_id: str | None = Field(None, description="Hub repo for push_to_hub, `user/name` (default: run.name).")
    hub_private: bool = Field(True, description="Create the Hub repo as private (an existing repo keeps its setting).")

    @model_validator(mode="before")
    @classmethod
    def _hf_names(cls, data: Any) -> Any:
        return canonical_train_keys(data) if isinstance(data, dict) else data


class MethodTrainOverride(Section):
    """Per-method override of any `train.*` key (METHODS.md: `<method>.train.<key>`)."""

    model_config = ConfigDict(extra="allow")


class StdCotConfig(Section):
    paths: Literal["standard", "all"] = Field(
        "standard",
        description="`standard`: one standard path per question (the papers' Std-CoT baseline, METHODS.md §4.1); "
        "`all`: every correct path as its own example (uniform multi-path SFT, an explicit variant).",
    )
    train: dict[str, Any] = Field(default_factory=dict, description="Overrides of train.* for this method.")


class SbsConfig(Section):
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the label task (§4.2).")
    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    label_source: Literal["gold", "teacher"] = "gold"
    eval_task: Literal["explain", "label"] = "explain"
    train: dict[str, Any] = Field(default_factory=dict)


class MccKdConfig(Section):
    paths: Literal["auto", "standard", "multi"] = Field(
        "auto",
        description="Its diverse rationales: `standard` = a teacher's sampled standard paths (MCC-KD's own data), "
        "`multi` = the perspective/teacher paths (METHODS.md §4.3 port), `auto` = standard where a question has "
        ">= 2 of them, else multi.",
    )
    alpha: float = Field(0.1, ge=0, description="Weight of the symmetric-KL consistency (§4.3).")
    temperature: float = Field(1.0, gt=0)
    max_rationales: int = Field(8, ge=2)
    diversity_filter: bool = False
    diversity_ngram: int = Field(3, ge=1)
    pairs_per_question: int = Field(4, ge=1)
    train: dict[str, Any] = Field(default_factory=dict)


class EncoderConfig(Section):
    name: str = Field("all-MiniLM-L6-v2", description="Sentence encoder (packaged MiniLM offline, or any HF id).")
    trainable: bool = False
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(512, ge=8)


class MetaNetConfig(Section):
    d_model: int = Field(256, ge=8)
    n_attn_heads: int = Field(4, ge=1)
    n_score_heads: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    perspective_embedding: bool = True
    use_self_attention: bool = True
    score_activation: Literal["none", "softplus"] = "none"


class MindConfig(Section):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    metanet: MetaNetConfig = Field(default_factory=MetaNetConfig)
    weighting: Literal["metanet", "uniform", "instantaneous"] = "metanet"
    tau_meta: float = Field(1.0, gt=0)
    meta_kl_direction: Literal["pred_to_target", "target_to_pred"] = "pred_to_target"
    warmup_epochs: int = Field(2, ge=0)
    meta_lr_warmup: float = Field(1e-4, gt=0)
    meta_lr_joint: float = Field(1e-5, gt=0)
    meta_warmup_accum: int = Field(4, ge=1)
    meta_joint_accum: int = Field(16, ge=1)
    meta_weight_decay: float = Field(0.01, ge=0)
    loss_ema: bool = False
    loss_ema_decay: float = Field(0.9, ge=0, lt=1)
    beta: float = Field(0.5, ge=0, le=1)
    tau_student: float = Field(0.5, gt=0)
    select_on: Literal["prob", "score"] = "prob"
    lambda_cons: float = Field(0.1, ge=0)
    cons_divergence: Literal["js", "sym_kl", "kl"] = "js"
    cons_temperature: float = Field(1.0, gt=0)
    cons_topk: int = Field(0, ge=0)
    train: dict[str, Any] = Field(default_factory=dict)


class CompactConfig(Section):
    beta_mi: float = 1.0
    beta_consensus: float = 1.0
    beta_difficulty: float = 0.5
    temperature: float = Field(1.0, gt=0)
    zscore_eps: float = Field(1e-4, gt=0)
    weighting: Literal["adaptive", "uniform", "best_single"] = "adaptive"
    best_teacher: str | None = Field(None, description="weighting=best_single: the teacher kept.")
    mcc_mode: Literal["answer_span", "position_aligned"] = "answer_span"
    lambda_mcc: float = Field(0.1, ge=0)
    mcc_min_pair_weight: float = 1e-4
    think_keywords: list[str] = Field(
        default_factory=lambda: [
            "Therefore", "Thus", "Hence", "So", "Consequently", "Wait", "But", "However", "Although", "First",
            "Second", "Finally", "Specifically", "In summary", "Basically", "Let", "Assuming", "Suppose", "Hmm",
            "Okay", "Note",
        ]
    )
    think_weight: float = 1.0
    non_think_weight: float = 0.1
    mi_variant: Literal["logit", "logprob"] = "logit"
    mi_scope: Literal["all", "completion"] = Field(
        "all",
        description="Positions S_MI sums over: `all` = every real token (prompt + completion), `completion` = the "
        "completion. Unlike the authors' code, padding is never summed: its states depend on the other paths' "
        "lengths and are not computed under train.share_prompt, so α would change with packing.",
    )
    mi_length_norm: bool = False
    gqa_repeat: Literal["feature", "head"] = "feature"
    gold_leading_space: bool = False
    train: dict[str, Any] = Field(default_factory=dict)


class ModeConfig(Section):
    expert_unit: Literal["perspective", "teacher"] = "perspective"
    weight_bound: float = Field(3.0, gt=0)
    l1: float = Field(0.05, ge=0)
    budget: int = Field(40, ge=1)
    seed: int = 42
    n_dev_examples: int = Field(32, ge=1)
    compose_on: Literal["train_dev"] = "train_dev"
    train: dict[str, Any] = Field(default_factory=dict)


class EditConfig(Section):
    init_from: Literal["std_cot", "none"] = "std_cot"
    pairing: Literal["twin", "similarity"] = Field(
        "twin",
        description="Dual CoTs: `twin` = the pairs synthesis built with the CCP/AHP prompts (rejected path linked "
        "to its correct twin); `similarity` = fallback for sets without them: each wrong sample is paired with "
        "the most similar correct path of its question (not the paper's minimal flip; say so when you use it).",
    )
    w_chosen_key: float = 1.0
    w_chosen_other: float = 0.0
    w_rejected_key: float = -0.025
    nll_threshold: float = 20.0
    train: dict[str, Any] = Field(default_factory=dict)


METHOD_NAMES = ("std_cot", "sbs", "mcc_kd", "mind", "compact", "mode", "edit")


# --------------------------------------------------------------------------- eval / analysis / report


class RationaleNllConfig(Section):
    """Held-out rationale NLL (evaluate/rationale_nll.py): the student's teacher-forced NLL of clean teacher
    rationales of evaluation questions no method trains on (curation guards ``questions`` of the set)."""

    set: str = Field(description="SOURCE:QUESTIONS, e.g. `eit:svamp` (EIT rationales of the SVAMP test questions).")
    options: dict[str, Any] = Field(default_factory=dict, description="Importer options of SOURCE (as data.imports).")
    max_per_question: int = Field(3, ge=1, description="Rationales per question (round-robin over teachers).")
    batch_size: int = Field(8, ge=1, description="Sequences per forward.")
    max_seq_len: int = Field(1024, ge=16, description="Token budget per sequence (rationales are cut in the middle).")


class EvalConfig(Section):
    benchmarks: list[str] = Field(default_factory=lambda: ["gsm8k", "svamp"], description="Benchmarks to score.")
    limit: int | None = Field(None, ge=1, description="First N questions per benchmark (seeded order).")
    backend: Literal["hf", "openai", "vllm"] = "hf"
    base_url: str | None = Field(None, description="openai backend endpoint.")
    api_key_env: str | None = None
    decoding: Literal["greedy"] = "greedy"
    max_new_tokens: int = Field(2048, ge=1)
    batch_size: int = Field(8, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    svamp_subset: str = Field("test300", description="SVAMP eval split (see data registry docs).")
    gpqa_shuffle_seed: int = 0
    math_verify_timeout_s: float = Field(5.0, gt=0)
    n_seeds: int = Field(1, ge=1, description="Training seeds averaged in comparison tables.")
    bootstrap_samples: int = Field(1000, ge=100)
    rationale_nll: RationaleNllConfig | None = Field(
        None, description="Also score held-out rationale NLL for the base and each student (null: off)."
    )


class DpmmConfig(Section):
    n_components: int = Field(30, ge=1)
    weight_concentration_prior: float = Field(0.1, gt=0)
    covariance_type: Literal["full", "tied", "diag", "spherical"] = "diag"
    max_iter: int = Field(1000, ge=1)
    random_state: int = 0


class TsneConfig(Section):
    perplexity: float = Field(30.0, gt=0)
    init: Literal["pca", "random"] = "pca"
    seed: int = 0


class AnalysisConfig(Section):
    enabled: bool = True
    n_questions: int = Field(300, ge=2)
    features: Literal["hidden_mean", "sbert"] = "hidden_mean"
    sbert_model: str = "all-MiniLM-L6-v2"
    pca_dim: int = Field(50, ge=2)
    dpmm: DpmmConfig = Field(default_factory=DpmmConfig)
    effective_weight_threshold: float = Field(0.01, gt=0, lt=1)
    tsne: TsneConfig = Field(default_factory=TsneConfig)
    ood_benchmarks: list[str] = Field(default_factory=lambda: ["csqa", "strategyqa"])


class CompareVariant(Section):
    """A comparison row that is one method with some keys changed (e.g. Std-CoT on every path)."""

    method: Literal["std_cot", "sbs", "mcc_kd", "mind", "compact", "mode", "edit"] = Field(
        description="The method this row trains.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Dotted config keys changed for this row, e.g. {std_cot.paths: all}.")


class CompareConfig(Section):
    """`cotdistill compare`: methods × seeds trained on the same curated data, scored by the same evaluator."""

    methods: list[str] = Field(
        default_factory=lambda: ["std_cot", "sbs", "mcc_kd", "mind", "compact"],
        description="Rows of the table: method names, or names of `compare.variants`.",
    )
    variants: dict[str, CompareVariant] = Field(
        default_factory=dict, description="Named rows that are a method with changed keys (name -> spec)."
    )
    seeds: list[int] = Field(default_factory=lambda: [0], description="Training seeds per method (train.seed).")
    reference: str | None = Field(
        "std_cot", description="Row every method is also compared with, paired (besides the base student)."
    )
    also_vs: list[str] = Field(
        default_factory=list,
        description="More rows every method is also compared with, paired (e.g. `std_cot_all`: uniform SFT on "
        "every path); each target is its own Holm family.",
    )
    tune: bool = Field(
        False,
        description="This comparison chooses settings (a budget search): it may only score dev splits "
        "(svamp:dev, gsm8k:dev), never a test question.",
    )

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        for name in self.methods:
            if name not in METHOD_NAMES and name not in self.variants:
                raise ValueError(f"methods: {name!r} is neither a method ({', '.join(METHOD_NAMES)}) nor a "
                                 "name in compare.variants")
        for name in self.variants:
            if name in METHOD_NAMES:
                raise ValueError(f"variants: {name!r} is a method name; give the variant its own name")
        if self.reference is not None and self.reference not in self.methods:
            if "reference" in self.model_fields_set:
                raise ValueError(f"reference: {self.reference!r} is not in compare.methods")
            self.__dict__["reference"] = None  # the default (std_cot) when the table has no Std-CoT row
        for name in self.also_vs:
            if name not in self.methods:
                raise ValueError(f"also_vs: {name!r} is not in compare.methods")
        return self

    def method_of(self, row: str) -> str:
        """The method a table row trains (its own name, or its variant's method)."""
        return self.variants[row].method if row in self.variants else row


class ReportConfig(Section):
    enabled: bool = True
    title: str | None = None


# --------------------------------------------------------------------------- root


class Config(Section):
    """The whole run: every stage reads its own section."""

    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    method: Literal["std_cot", "sbs", "mcc_kd", "mind", "compact", "mode", "edit"] = "std_cot"
    std_cot: StdCotConfig = Field(default_factory=StdCotConfig)
    sbs: SbsConfig = Field(default_factory=SbsConfig)
    mcc_kd: MccKdConfig = Field(default_factory=MccKdConfig)
    mind: MindConfig = Field(default_factory=MindConfig)
    compact: CompactConfig = Field(default_factory=CompactConfig)
    mode: ModeConfig = Field(default_factory=ModeConfig)
    edit: EditConfig = Field(default_factory=EditConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        names = [t.name for t in self.teachers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"teachers: duplicate teacher name(s) {sorted(dup)}")
        for row in self.compare.variants:
            try:
                self.for_row(row)  # a variant key that does not exist or does not validate fails here
            except CotdistillError as e:
                raise ValueError(str(e).removeprefix("config: ")) from None
        for method in METHOD_NAMES:
            overrides = canonical_train_keys(getattr(self, method).train)
            unknown = set(overrides) - set(TrainConfig.model_fields)
            if unknown:
                raise ValueError(f"{method}.train: unknown key(s) {sorted(unknown)}")
        return self

    def for_row(self, row: str) -> Config:
        """This config for one row of ``compare.methods``: ``method`` set to the row's method and a variant's
        ``set`` keys applied (validated)."""
        spec = self.compare.variants.get(row)
        raw = self.model_dump(mode="json")
        raw["method"] = spec.method if spec else row
        # a cell is one method: its own compare section would name rows it does not have (and recurse)
        raw["compare"] = {"methods": [raw["method"]], "seeds": raw["compare"]["seeds"], "reference": None}
        for dotted, value in (spec.set if spec else {}).items():
            set_dotted(raw, dotted, value)
        try:
            return Config.model_validate(raw)
        except ValidationError as e:
            raise CotdistillError(_format_errors("config", e, prefix=f"compare.variants.{row}.set")) from None

    def effective_train(self, method: str | None = None) -> TrainConfig:
        """`train` with the chosen method's `<method>.train.*` overrides applied (validated)."""
        method = method or self.method
        overrides = canonical_train_keys(getattr(self, method).train)
        merged = self.train.model_dump() | overrides
        if "trainer_args" in overrides:  # merged key by key, like the train.* keys themselves
            merged["trainer_args"] = self.train.trainer_args | dict(overrides["trainer_args"] or {})
        try:
            return TrainConfig.model_validate(merged)
        except ValidationError as e:
            raise CotdistillError(_format_errors("config", e, prefix=f"{method}.train")) from None

    def run_dir(self) -> Path:
        """The run folder, `run.output_dir/run.name`."""
        return Path(self.run.output_dir) / self.run.name


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``dotted = "a.b.c"``, creating missing mappings; under ``train`` either
    spelling of a key (``lr`` / ``learning_rate``) replaces the other."""
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if parents and parents[-1] == "train":
        leaf = TRAIN_ALIASES.get(leaf, leaf)
        for alias in [a for a, name in TRAIN_ALIASES.items() if name == leaf]:
            node.pop(alias, None)
    node[leaf] = value


def _format_errors(source: str, err: ValidationError, prefix: str = "") -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in ((prefix,) if prefix else ()) + tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads `1e-4` as a number; PyYAML (YAML 1.1) would keep it a string, so HF-style values (learning_rate:
# 2e-5) passed through train.trainer_args would reach TrainingArguments as text
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "method=mind"]`` (the CLI's ``--set``) as ``{dotted key: value}``; values are YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise CotdistillError(f"--set: expected KEY=VALUE with a dotted key (e.g. train.lr=1e-4), got {item!r}")
        try:
            out[key] = yaml.load(value, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as e:
            raise CotdistillError(f"--set {key}: value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return out


def _check_benchmarks(cfg: Config, source: str) -> None:
    """Every benchmark name in the config is a registry name, an alias or ``jsonl:PATH`` (typos fail here)."""
    from cotdistill.data.registry import canonical_name, list_benchmarks

    for dotted, specs in (("data.question_pool", cfg.data.question_pool), ("eval.benchmarks", cfg.eval.benchmarks),
                          ("curate.eval_guard", cfg.curate.eval_guard),
                          ("analysis.ood_benchmarks", cfg.analysis.ood_benchmarks)):
        for i, spec in enumerate(specs):
            try:
                canonical_name(spec)
            except CotdistillError:
                raise CotdistillError(f"{source}: {dotted}[{i}]: unknown benchmark {spec!r}; known: "
                                      f"{', '.join(list_benchmarks())}, jsonl:PATH") from None


def _check_consistency(cfg: Config, source: str) -> None:
    """Cross-key checks that pydantic's per-field validation cannot see (more in :mod:`cotdistill.checks`)."""
    from cotdistill.checks import check_config

    cur = cfg.curate
    if cur.max_paths_per_question is not None and cur.max_paths_per_question < cur.filter.min_correct_paths:
        raise CotdistillError(
            f"{source}: curate.max_paths_per_question: smaller than curate.filter.min_correct_paths "
            f"({cur.max_paths_per_question} < {cur.filter.min_correct_paths}): every question would be dropped"
        )
    _check_benchmarks(cfg, source)
    check_config(cfg, source)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config. Errors are one line: ``FILE: dotted.key: message``.

    ``overrides`` maps dotted keys to values (``{"train.lr": 1e-4}``) applied before validation.
    Also refused: an empty file, non-UTF-8 bytes, a key given twice, unknown benchmark names and
    contradictory keys (see :func:`_check_consistency`).
    """
    path = Path(path)
    if not path.is_file():
        raise CotdistillError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CotdistillError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                              "save the config as UTF-8") from None
    from cotdistill.checks import MAX_YAML_NODES, check_raw_yaml, yaml_expanded_size

    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and yaml_expanded_size(node) > MAX_YAML_NODES:
                raise CotdistillError(f"{path}: YAML aliases expand to more than {MAX_YAML_NODES:,} values "
                                      "(an alias bomb?); write the config out without nested aliases")
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except RecursionError:  # PyYAML composes recursively: thousands of nested brackets exhaust the stack
        raise CotdistillError(f"{path}: YAML nested too deeply to be a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise CotdistillError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if raw is None and not (overrides or {}):
        raise CotdistillError(f"{path}: config is empty (expected a mapping of sections, e.g. `train:`)")
    raw = raw or {}
    if not isinstance(raw, dict):
        raise CotdistillError(f"{path}: top level must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    check_raw_yaml(raw, str(path))
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise CotdistillError(_format_errors(str(path), e)) from None
    _check_consistency(cfg, str(path))
    return cfg


def dump_config(config: Config) -> str:
    """The resolved config as YAML: only env-var names, never keys, and URL credentials masked."""
    from cotdistill.utils.redact import redact

    return yaml.safe_dump(redact(config.model_dump(mode="json")), sort_keys=False, allow_unicode=True)
