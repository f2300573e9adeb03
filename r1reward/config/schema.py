"""Typed configuration: one dataclass per role. Defaults run the tiny CPU setup end to end."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    # A local directory in Hugging Face format or a hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct).
    path: str = "runs/tiny-model"
    # fp32 on the CPU: the sampler's and the learner's log-probs then differ only by kernels.
    dtype: str = "float32"
    freeze_vision: bool = True
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    train_path: str = "runs/data/train.parquet"
    schema: str = "r1reward-rl"
    image_root: str | None = None
    # Prefix rewrites applied to every image path before image_root, e.g. the released R1-Reward-RL paths:
    # {"/mmu_mllm_hdd/yfzhang/data/": "/data/images/"}; the longest matching prefix wins.
    image_path_map: dict[str, str] = field(default_factory=dict)
    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 64
    max_prompt_tokens: int = 2048
    # strict: stop at the first bad row with its file, row and reason; else skip and count it.
    strict: bool = False
    # Seeds the per-epoch shuffle of the examples (RL and SFT) and the position swap.
    seed: int = 0


@dataclass
class RolloutConfig:
    num_workers: int = 1
    tensor_parallel_size: int = 1
    n_samples_per_prompt: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut (vLLM's convention)
    max_new_tokens: int = 64
    dtype: str = "float32"
    enforce_eager: bool = True
    # On the CPU this is host RAM for the KV cache; on GPU leave it 0 and use gpu_memory_utilization.
    kv_cache_memory_bytes: int = 256 * 1024 * 1024
    gpu_memory_utilization: float = 0.5
    max_model_len: int = 4096
    seed: int = 0


@dataclass
class RewardConfig:
    # rule: no model (default on CPU); vllm: a judge model on its own actor; openai: an endpoint.
    judge: str = "rule"
    judge_model: str | None = None
    judge_url: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    # Set from timeouts.judge_request_s at load (the one place for timeouts); kept here for the judges.
    judge_timeout_s: float = 30.0
    judge_retries: int = 3
    w_consistency: float = 0.5
    w_format: float = 0.5
    # released: the released judge's rules (it may reason, then answers 0/1); concise: a one-character reply.
    judge_prompt: str = "released"
    # Output tokens per judge call; None takes the prompt's own (released 1024, concise 8).
    judge_max_tokens: int | None = None
    # A generation the judge gives no verdict (a failed call, a reply without 0/1) scores consistency 0.
    # The run stops when more than this share of the generations sent to the judge got none over the
    # last judge_failure_window steps (checked every step, before it trains); 1 never stops.
    max_judge_failure_rate: float = 0.1
    judge_failure_window: int = 10


@dataclass
class AlgoConfig:
    # stable_reinforce = Pre-CLIP + PPO clip; ppo = plain Reinforce++ ratio.
    policy_loss: str = "stable_reinforce"
    advantage_estimator: str = "reinforce++"
    delta_min: float = 1e-3
    delta_max: float = 1e3
    eps_clip: float = 0.2
    # paper: zero |A_std| > sigma; released: the released code's band around the raw mean; none.
    advantage_filter: str = "paper"
    filter_sigma: float = 3.0
    kl_coef: float = 0.0
    kl_estimator: str = "k1"
    reward_clip: float = 10.0
    gamma: float = 1.0
    # Decoupled StableReinforce (r1reward/algo/correction.py): the sampler's log-probs are the behaviour
    # policy, the learner's recomputed ones the proximal policy of the ratio. none | tis | mask_token |
    # mask_sequence; the cap bounds the importance weight pi_prox / pi_behav (tis) or masks above it.
    rollout_correction: str = "none"
    rollout_correction_cap: float = 2.0
    # Where the ratio's old log-probs come from. learner: a forward of the learner over the batch before the
    # update (it also measures the sampler/learner gap, logged as logprob_gap/* and mismatch/*). sampler: the
    # rollout's own log-probs, which belong to the same weights (the worker syncs after every step); this
    # skips that forward and, without KL, the whole experience call. Right only while the two agree: check
    # logprob_gap/max of a learner run first (1.6e-5 nats in float32 here); the gap metrics then read 0.
    # auto (resolved at start-up): sampler where that gap was measured, float32 on both sides in the
    # synchronous loop without rollout correction; learner otherwise (samples generated ahead need the
    # learner's log-probs as their proximal policy, and other dtypes have no measured gap).
    old_logprobs: str = "auto"


@dataclass
class LearnerConfig:
    num_ranks: int = 2
    zero_stage: int = 2
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_ratio: float = 0.03
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    micro_batch_size: int = 2
    # Optimizer steps per rollout batch = rollout_batch_size * n / train_batch_size.
    train_batch_size: int = 8
    epochs_per_rollout: int = 1
    backend: str = "auto"  # auto: nccl when CUDA is visible, else gloo
    # The LM head and softmax only over the completion's positions (false: over the whole sequence, as
    # before; the log-probs of the completion are the same either way).
    completion_logits_only: bool = True


@dataclass
class ResourcesConfig:
    # GPUs per rollout worker (x tensor_parallel_size) and per learner rank; 0 on a CPU machine.
    gpus_per_rollout_worker: float = 0.0
    gpus_per_learner_rank: float = 0.0
    cpus_per_rollout_worker: float = 1.0
    cpus_per_learner_rank: float = 1.0
    colocate: bool = False
    # Hold each rollout worker and learner rank to cores of its own (a local Ray only), as separate
    # devices would keep them apart: r1reward/placement/cores.py says which cores each gets.
    pin_cores: bool = False
    placement_strategy: str = "PACK"
    # A Ray address to join; empty starts (or reuses) a local Ray.
    ray_address: str = ""


@dataclass
class TrainerConfig:
    output_dir: str = "runs/tiny-cpu"
    num_steps: int = 4
    # > 0: num_steps = floor(usable rows * num_epochs / rollout_batch_size), set once the data is read.
    num_epochs: float = 0.0
    rollout_batch_size: int = 8
    save_every: int = 2
    # A fresh run refuses an output_dir holding another run's checkpoints or metrics; resume continues
    # that run from its latest checkpoint, overwrite deletes its checkpoints, metrics and TensorBoard
    # events first.
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    # Bounded staleness eta: the rollout workers generate up to eta batches ahead while the learners
    # train; a sample more than eta policy versions behind the learner is dropped. 0: synchronous.
    max_staleness: int = 0
    # > 0: after each save, delete all but the newest N checkpoints; 0 keeps all.
    keep_checkpoints: int = 0
    # After a dead or late actor, start again from the last checkpoint up to this many times (0: end the run).
    max_restarts: int = 0


@dataclass
class TimeoutsConfig:
    """How long any wait may last before the run fails with one line naming what it waited for."""

    # A remote call from the driver (generate, score, log-probs, train, save): the longest phase of a step.
    remote_call_s: float = 3600.0
    # Actor start-up: loading a model into vLLM or DeepSpeed (a 7B checkpoint from a network disk).
    startup_s: float = 1800.0
    # torch.distributed / DeepSpeed: the rendezvous and every collective between learner ranks.
    collective_s: float = 1800.0
    # One weight sync, on both sides: the learner's broadcast and each rollout worker's receive.
    weight_sync_s: float = 600.0
    # One judge request (reward.judge openai or vllm); a failed request costs at most this, then retries.
    judge_request_s: float = 30.0


@dataclass
class SFTConfig:
    """Cold-start SFT on the learner ranks (the paper's stage 1): loss on the response tokens only."""

    # Canonical JSONL/parquet with a `target` column, e.g. make-synthetic-data's sft.jsonl.
    data_path: str = "runs/data/sft.jsonl"
    output_dir: str = "runs/tiny-sft"
    num_epochs: int = 1
    lr: float = 3e-3
    train_batch_size: int = 0  # examples per optimizer step; 0 takes learner.train_batch_size
    save_every: int = 0  # optimizer steps between checkpoints; 0 saves at the end only
    resume: bool = False  # resume and overwrite: as trainer.resume and trainer.overwrite
    overwrite: bool = False


@dataclass
class AnnotateConfig:
    """The pipeline's optional first stage, `r1reward annotate` (docs/annotate.md): a teacher labels `data`
    and writes the SFT and RL sets, which SFT and RL then read instead of sft.data_path and data.train_path."""

    data: str | None = None  # the pairs to annotate; none: no annotation (SFT and RL read the sets they are given)
    schema: str = "canonical"
    image_root: str | None = None
    teacher_url: str = ""  # an OpenAI-compatible endpoint's base URL (the one ending in /v1)
    teacher_model: str = ""
    api_key_env: str = ""  # the environment variable holding the API key; empty: no key
    tries: int = 3
    concurrency: int = 4


@dataclass
class BenchmarkConfig:
    data: str | None = None  # the benchmark file; none: not evaluated (listed as skipped)
    image_root: str | None = None  # None: the data file's folder
    schema: str | None = None  # None: the benchmark's released format


@dataclass
class BenchmarksConfig:
    """The pipeline's evaluation on real data (pipeline.source=data), one field per benchmark of r1reward eval."""

    vl_rewardbench: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    multimodal_rewardbench: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    mm_rlhf_rewardbench: BenchmarkConfig = field(default_factory=BenchmarkConfig)


@dataclass
class PipelineConfig:
    """`r1reward pipeline` (docs/pipeline.md): [annotate] -> cold-start SFT -> [hard examples] -> RL ->
    evaluation, each stage recorded so that a rerun skips what is done and resumes what was interrupted."""

    output_dir: str = "runs/pipeline"
    seeds: list[int] = field(default_factory=lambda: [0])  # each seed: its own runs (data.seed, trainer.seed)
    # synthetic: per seed a tiny model and synthetic data, scored on a held-out set (the demo); data:
    # model.path, the configured sets, and the benchmarks below.
    source: str = "synthetic"
    # model-samples: RL trains on the pairs the SFT model does not solve in all select_k samples; none: on
    # the whole RL set (the paper's RL set is already the pairs its teacher found hard).
    hard_examples: str = "model-samples"
    select_k: int = 4
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)
    # Benchmark rows that cannot be evaluated (missing images) are skipped and counted, not fatal.
    skip_missing_images: bool = False
    # pipeline.source=synthetic only, from here on.
    model_size: str = "tiny"
    # Caption steps that stand in for the base VLM's pretraining (a random tower reads no images).
    warmup_steps: int = 400
    num_train: int = 192
    num_heldout: int = 48
    # > 0: the cold-start teacher prefers Response 1 (see data.synthetic.make_synthetic_data).
    teacher_bias: float = 0.0
    eval_temperature: float = 0.0  # greedy held-out answers per stage


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
