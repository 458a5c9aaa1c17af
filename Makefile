# erlpy: the user's entry points.
#   make run    serve a WSGI or ASGI app on 127.0.0.1:8080 (APP=module:callable), bin/erlpy
#   make demo   a tour of the call bridge
#   make test   every test suite: C core, Erlang (Common Test), Python, dialyzer
#   make bench  benchmarks (bench/), printed as ratios against baselines
#   make soak   minutes of mixed, verified HTTP load; fails on growth or a wrong answer
#   make bench-slow  slow clients each server holds (erlpy, gunicorn, uWSGI)
#   make bench-asgi  ASGI: erlpy against uvicorn and hypercorn (PLOT=docs/asgi_bench.png)
#   make bench-nodes worker nodes vs one GIL vs Python processes; --workers vs gunicorn, uWSGI
PYTHON ?= /usr/bin/python3
export PYTHON
REBAR ?= rebar3
FUZZ_SECONDS ?= 20
ERL_PATH := -pa _build/default/lib/erlpy/ebin

.PHONY: all setup build run demo test test-c test-ct test-pythons test-asan dialyzer bench bench-call bench-buffer bench-buffer-callgrind bench-wsgi bench-floor clean

all: build

setup:
	@scripts/setup

build: setup
	@$(REBAR) compile >/dev/null || $(REBAR) compile

# APP=module:callable serves your own WSGI or ASGI app (PORT, HOST too), with
# bin/erlpy (docs/cli.md); ARGS passes more options to it.
APP ?= demo_app:app
HOST ?= 127.0.0.1
PORT ?= 8080
run: build
	@bin/erlpy serve "$(APP)" --bind "$(HOST):$(PORT)" --python-path examples --access-log - $(ARGS)

demo: build
	@escript examples/demo.escript

test: build test-c test-ct test-pythons test-asan dialyzer
	@echo "make test: all suites passed"

test-c:
	@if [ -f test/c/Makefile ]; then $(MAKE) -s -C test/c test && $(MAKE) -s -C test/c fuzz FUZZ_SECONDS=$(FUZZ_SECONDS); fi

test-ct: build
	$(REBAR) ct --readable true

# The CT suites again against each other Python present: pyenv's 3.12+ builds
# with a shared libpython (EXTRA_PYTHONS= to skip, or a list of your own).
# c_src builds a NIF per Python; the default one is put back afterwards.
PYENV_ROOT_DIR := $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
EXTRA_PYTHONS ?= $(foreach p,$(wildcard $(PYENV_ROOT_DIR)/versions/3.1[2-9]*/bin/python3),$(if $(wildcard $(dir $(p))../lib/libpython3.*.so),$(p)))

test-pythons: build
	@status=0; for py in $(EXTRA_PYTHONS); do \
	  echo "make test: CT suites on $$py"; \
	  PYTHON=$$py $(REBAR) ct --readable true || status=1; \
	done; $(REBAR) compile >/dev/null; exit $$status

# The Erlang suites again, the NIF built with ASan+UBSan (scripts/test-asan).
test-asan: build
	@scripts/test-asan

dialyzer: build
	$(REBAR) dialyzer

bench: bench-call bench-buffer bench-wsgi

bench-call: build
	@mkdir -p bench/ebin
	@erlc -o bench/ebin bench/bench_lib.erl bench/bench_call.erl
	@erl -noshell $(ERL_PATH) -pa bench/ebin -s bench_call main

bench-buffer: build
	@mkdir -p bench/ebin
	@erlc -o bench/ebin bench/bench_lib.erl bench/bench_buffer.erl
	@erl -noshell $(ERL_PATH) -pa bench/ebin -s bench_buffer main

# Instructions per readline/readview/find against BytesIO and memmem
# (callgrind; steady on a busy machine): bench/callgrind/run.sh.
bench-buffer-callgrind:
	@bench/callgrind/run.sh

bench-floor: build
	@$(PYTHON) bench/bench_floor.py

bench-wsgi: build
	@$(PYTHON) bench/bench_wsgi.py $(if $(PLOT),--plot $(PLOT))

.PHONY: bench-asgi
bench-asgi: build
	@$(PYTHON) bench/bench_asgi.py $(if $(PLOT),--plot $(PLOT))

# A soak test and a slow-client benchmark, a few minutes each (bench/soak.py,
# bench/bench_slow.py); SOAK_SECONDS=N, ERLPY_CMD='...' (bench/bench_servers.py).
.PHONY: soak bench-slow bench-nodes

# Worker nodes (docs/nodes.md): calls, streams and memory (bench_nodes.erl,
# a distributed node), then serving with --workers (bench_nodes_wsgi.py).
bench-nodes: build
	@mkdir -p bench/ebin
	@erlc -o bench/ebin bench/bench_lib.erl bench/bench_nodes.erl
	@$(CC) -O2 $$($(PYTHON)-config --cflags --embed) bench/shared_python.c -o bench/ebin/shared_python $$($(PYTHON)-config --ldflags --embed)
	@erl -noshell -sname bench_nodes_$$$$ $(ERL_PATH) -pa bench/ebin -s bench_nodes main
	@$(PYTHON) bench/bench_nodes_wsgi.py
soak: build
	@$(PYTHON) bench/soak.py

bench-slow: build
	@$(PYTHON) bench/bench_slow.py

clean:
	$(REBAR) clean
	rm -rf _build priv/*.so bench/ebin
