# Everything runs inside the project's venv (.venv, made by scripts/setup_env.sh), with the ROS 2
# environment that .venv/bin/activate exports (scripts/env.sh).
#   make setup     create/refresh .venv (idempotent; a no-op when nothing changed); ORT=gpu: onnxruntime-gpu
#   make install   incremental build + install of the package (messages + Python) into .venv
#   make test      setup + install, then pytest test/ against the installed package
#   make demo | bench | bench-stream | bench-detectors | train | export | eval   [ARGS="..."]
SHELL := /bin/bash
.SHELLFLAGS := -e -o pipefail -c

VENV  := .venv
STAMP := $(VENV)/.setup.stamp
RUN   := . $(VENV)/bin/activate &&
ARGS ?=
PYTEST_ARGS ?=
# Real data beside the checkout (../shared/datasets); override with DATASETS=/path/to/datasets.
DATASETS ?= $(or $(ANYTIME_DATASETS),$(abspath ../shared/datasets))
ROAD_SIGNS := $(DATASETS)/road_signs
MODEL ?= models/road_signs_anywidth
DEMO_ARGS ?= --source $(ROAD_SIGNS) --frames 40 --rate 10 --out demo_out

.PHONY: setup install test demo bench bench-stream bench-detectors train export eval clean distclean

# ONNX Runtime flavour: `make setup ORT=gpu` replaces onnxruntime by onnxruntime-gpu (CUDA,
# TensorRT), `make setup ORT=cpu` goes back; without ORT the venv keeps the flavour it has.
ifdef ORT
export ANYTIME_ORT := $(ORT)
.PHONY: $(STAMP)  # an explicit flavour always re-checks the environment (seconds when nothing changes)
endif

setup: $(STAMP)

# Re-run the setup only when its inputs change (setup_env.sh has its own finer stamps too).
$(STAMP): scripts/setup_env.sh scripts/env.sh $(wildcard requirements/*.txt requirements/*/*.txt) $(wildcard ../shared/ros2/README.md)
	scripts/setup_env.sh all
	touch $@

# Always run: the installed copy must reflect the source tree (cmake makes it incremental).
install: setup
	scripts/setup_env.sh install

# The pytest console script, not `python -m pytest`: the repo root must not come first on
# sys.path (its anytime_perception/ has no generated msg/ and would shadow the installed one).
# Options and warning filters: pytest.ini.
test: install
	$(RUN) pytest test/ $(PYTEST_ARGS)

demo: install
	$(RUN) anytime_demo $(DEMO_ARGS) $(ARGS)

bench: install
	$(RUN) python bench/bench_latency.py --data $(ROAD_SIGNS) --model $(MODEL) $(ARGS)

# Train -> export -> calibrate -> evaluate on any labelled set (COCO/YOLO/VOC):
#   make train DATA=path/to/set OUT=models/NAME ARGS="--epochs 100"
train: install
	$(RUN) anytime_train --data $(or $(DATA),$(ROAD_SIGNS)) --out $(or $(OUT),models/road_signs_retrained) $(ARGS)

# Accuracy against time (docs/results/streaming.md): the road_signs validation split as a rosbag2
# recording, replayed into the real node at 10/20/30 Hz with 0/1/2 busy cores, anytime vs static.
PEER ?= $(abspath ../shared/peers/yolo11n_road_signs_320.onnx)
# Ours against the YOLO11n peer: one evaluator (pycocotools), per-stage latency in one run (detector_vs_peer.md)
bench-detectors: install
	$(RUN) python bench/bench_detectors.py --model $(MODEL) --model $(PEER) $(ARGS)

STREAM_BAG := runs/stream/road_signs_val.mcap
bench-stream: install
	rm -rf $(STREAM_BAG:.mcap=) $(STREAM_BAG:.mcap=.coco.json)
	$(RUN) anytime_bag make --images $(ROAD_SIGNS) --split val --rate 20 --size native --out $(STREAM_BAG)
	$(RUN) python -m anytime_perception.eval.stream --bag $(STREAM_BAG) --model $(MODEL) \
	    --modes normal performance --ceiling-variants normal=0.9 --static $(MODEL)/static $(wildcard $(PEER)) \
	    --rates 10 20 30 --contention 0 1 2 --json docs/results/streaming.json \
	    --markdown docs/results/streaming_tables.md --plot docs/results/streaming.png $(ARGS)

export: install
	$(RUN) python -m anytime_perception.export $(ARGS)

eval: install
	$(RUN) python -m anytime_perception.eval --data $(ROAD_SIGNS) --model $(MODEL) $(ARGS)

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV)
