# Self-documenting Makefile: `make` (or `make help`) lists the stages.
# Every stage is `python -m pipeline.<stage> --config $(CONFIG)`; CONFIG is a shipped name
# (pipeline/configs/<name>.yaml) or a path. Add settings with SET="train.epochs=2 images.workers=1".

CONFIG ?= demo
SET ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OVERRIDES := $(foreach s,$(SET),--set $(s))
STAGE = $(PY) -m pipeline.$(1) --config $(CONFIG) $(OVERRIDES)

.DEFAULT_GOAL := help
.PHONY: help install demo test panel images train predict evaluate gradcam interpret ablations ablations-table report \
        study-recovery study-recovery-table study-timescale replicate summary score fetch-data bench-panel bench-render bench-train \
        bench-stage bench-precision clean-demo demo-extensions demo-crypto

help: ## list the targets
	@echo "Stages (CONFIG=$(CONFIG); CONFIG=stooq_i20r20 for the shared real panel):"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch (a plain `torch` would pull a several-GB CUDA build).
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package (done automatically by every target)

demo: $(STAMP) ## the whole pipeline on the embedded synthetic market (CONFIG=demo)
	$(MAKE) --no-print-directory panel images train predict evaluate gradcam ablations report CONFIG=$(CONFIG) SET="$(SET)"

demo-extensions: $(STAMP) ## every extension on the demo's market, then the demo's report with their sections (about 25 min on 2 cores)
	$(MAKE) --no-print-directory panel images train predict evaluate CONFIG=demo SET="$(SET)"
	$(MAKE) --no-print-directory train predict evaluate CONFIG=demo_extensions SET="$(SET)"
	$(MAKE) --no-print-directory train predict evaluate CONFIG=demo_extensions SET="train.target=return $(SET)"
	$(MAKE) --no-print-directory interpret CONFIG=demo SET="$(SET)"
	$(MAKE) --no-print-directory demo-crypto SET="$(SET)"
	$(MAKE) --no-print-directory study-timescale CONFIG=demo_timescale SET="$(SET)"
	$(MAKE) --no-print-directory report CONFIG=demo SET="$(SET)"

demo-crypto: $(STAMP) ## a 24/7 synthetic market: its own CNN, the demo's applied unchanged and with a re-fitted head
	$(MAKE) --no-print-directory panel images train CONFIG=demo SET="$(SET)"
	$(MAKE) --no-print-directory panel images train predict evaluate report CONFIG=demo_crypto SET="$(SET)"
	$(MAKE) --no-print-directory panel images train predict evaluate report CONFIG=demo_crypto_direct SET="$(SET)"
	$(MAKE) --no-print-directory panel images train predict evaluate report CONFIG=demo_crypto_head SET="$(SET)"

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q $(PYTEST_ARGS)

panel: $(STAMP) ## source files -> canonical daily panel (Parquet by year)
	$(call STAGE,panel)

images: $(STAMP) ## panel -> chart images + labels (memory-mapped arrays, Parquet) + contact sheets
	$(call STAGE,images)

train: $(STAMP) ## images -> CNN ensemble (checkpoints, per-epoch logs)
	$(call STAGE,train)

predict: $(STAMP) ## models + images -> out-of-sample P(up) per image
	$(call STAGE,predict)

evaluate: $(STAMP) ## predictions + panel -> metrics, decile portfolios, benchmarks, tables, figures
	$(call STAGE,evaluate)

gradcam: $(STAMP) ## models + images -> Grad-CAM maps and the Figure-12 panel
	$(call STAGE,gradcam)

interpret: $(STAMP) ## models + images -> filters, saliency, occlusion, embeddings, class models, robustness
	$(call STAGE,interpret)

score: $(STAMP) ## a trained run -> P(up) (a regression: the predicted return) per stock at the panel's latest date (SCORE_ARGS="--date D --tickers A,B")
	$(PY) -m pipeline.score --config $(CONFIG) $(OVERRIDES) $(SCORE_ARGS)

ablations: $(STAMP) ## Table-18 variants: train, evaluate, tabulate
	$(call STAGE,ablations)

ablations-table: $(STAMP) ## Table 18 from the variants finished so far (runs nothing)
	$(call STAGE,ablations) --table-only

report: $(STAMP) ## all artifacts -> one HTML and one PDF report in reports/<name>/
	$(call STAGE,report)

STUDY_CONFIG = $(if $(filter demo,$(CONFIG)),recovery,$(CONFIG))

study-recovery: $(STAMP) ## signal-recovery study: recipes x training sizes vs the Bayes bound (CONFIG=recovery)
	$(PY) -m pipeline.studies.recovery --config $(STUDY_CONFIG) $(OVERRIDES)

study-recovery-table: $(STAMP) ## the recovery study's table and figures from the runs finished so far
	$(PY) -m pipeline.studies.recovery --config $(STUDY_CONFIG) $(OVERRIDES) --table-only

TIMESCALE_CONFIG = $(if $(filter demo,$(CONFIG)),demo_timescale,$(CONFIG))

study-timescale: $(STAMP) ## time-scale transfer: I5 on 20/60-day windows in 5 bars vs I20/I60 (CONFIG=demo_timescale)
	$(PY) -m pipeline.studies.timescale --config $(TIMESCALE_CONFIG) $(OVERRIDES)

replicate: $(STAMP) ## a real-data run on ../shared/data: panel..evaluate, report, summary (CONFIG=stooq_i20r20 by default)
	$(MAKE) --no-print-directory panel images train predict evaluate report summary CONFIG=$(if $(filter demo,$(CONFIG)),stooq_i20r20,$(CONFIG)) SET="$(SET)"

summary: $(STAMP) ## committed record of an evaluated run: reports/<config>.md and .metrics.json
	$(PY) -m pipeline.evaluate.summary --config $(CONFIG) $(OVERRIDES)

fetch-data: $(STAMP) ## download and unpack the free Stooq US daily bulk file into data/raw/ (FETCH_ARGS="--url U --sha256 H")
	$(PY) -m pipeline.fetch $(FETCH_ARGS)

bench-panel: $(STAMP) ## rows/s turning the shared 11.6M-row Stooq extract into the panel
	$(PY) -m benchmarks.bench_panel

bench-render: $(STAMP) ## images/s for I5/I20/I60 drawing, and the whole monthly I20 stage
	$(PY) -m benchmarks.bench_render

bench-train: $(STAMP) ## training/inference images/s, FLOPs per image, fraction of measured peak
	$(PY) -m benchmarks.bench_train

bench-stage: $(STAMP) ## the real train/predict stages beside the bench-train kernels: images/s, ratios, load
	$(PY) -m benchmarks.bench_stage $(BENCH_ARGS)

bench-precision: $(STAMP) ## fp32 vs bf16 best validation loss on the same splits (after make train)
	$(PY) -m benchmarks.bench_precision --config $(CONFIG) $(OVERRIDES) $(BENCH_ARGS)

clean-demo: ## delete the demo's artifacts
	rm -rf data/demo reports/demo
