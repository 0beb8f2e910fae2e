# Set-up and the two everyday commands. Each target builds its own virtual environment on a fresh machine.
# torch and torchvision are pinned exactly through constraints.txt so no install can float them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
PROMPT ?= a yellow circle

.PHONY: demo test install install-test clean

$(VENV)/.installed: setup.cfg constraints.txt
	python3 -m venv $(VENV)
	$(PIP) "torch===2.13.0" "torchvision==0.28.0"
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test]"
	$(PIP) --no-deps guided-diffusion-sdk==1.0.0
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(VENV)/bin/artgen generate "$(PROMPT)" --preset offline --seed 1

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs
