# Two commands on a fresh machine: `make run` and `make test`.
PY := .venv/bin/python

.PHONY: run test setup clean-venv

.venv/.installed: pyproject.toml
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch first: 2.13.0 is a local CPU wheel here; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: .venv/.installed

run: setup
	.venv/bin/rustle demo data/workspace

test: setup
	$(PY) -m pytest

clean-venv:
	rm -rf .venv
