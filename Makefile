# spine_nav: the two commands are `make demo` and `make test`. Both set up everything first.
# Set-up is incremental: stamps make a re-run fast when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := build/stamps
SYSTEM_PACKAGES := libusb-1.0-0 libgomp1 libegl1 libgl1 cmake g++ libopenigtlink-dev openigtlink-examples nodejs chromium chromium-driver iproute2 nftables
PYTEST_ARGS ?=

.PHONY: all setup test demo bench clean distclean
all: test

$(STAMPS)/system: Makefile
	@mkdir -p $(STAMPS)
	@# chromedriver/selenium talk over "localhost": a bare system (debootstrap chroot) may lack /etc/hosts
	@getent hosts localhost >/dev/null || { echo "[setup] adding localhost to /etc/hosts"; echo "127.0.0.1 localhost" >> /etc/hosts; }
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "[setup] installing system packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@touch $@

$(STAMPS)/venv: requirements.txt $(STAMPS)/system
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || { echo "[setup] creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[setup] installing Python dependencies (requirements.txt)"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(STAMPS)/interfaces: $(STAMPS)/venv $(wildcard spine_nav_interfaces/msg/*.msg spine_nav_interfaces/srv/*.srv) spine_nav_interfaces/CMakeLists.txt spine_nav_interfaces/package.xml scripts/build_interfaces.sh
	@echo "[setup] building spine_nav_interfaces (rosidl, cmake)"
	@rm -rf build/interfaces
	@scripts/build_interfaces.sh $(VENV) build/interfaces
	@touch $@

$(STAMPS)/package: $(STAMPS)/interfaces setup.py setup.cfg package.xml $(wildcard spine_nav/*/*.c spine_nav/*/*.h)
	@echo "[setup] installing spine_nav (editable)"
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# browser console front-end (issue #9): npm ci + esbuild bundle into spine_nav/console/static/
$(STAMPS)/web: $(STAMPS)/system web/package.json web/package-lock.json $(wildcard web/src/*.js)
	@echo "[setup] building the console front-end (npm ci, esbuild)"
	@# Debian 12's npm package; skipped when nodejs already brings npm (NodeSource builds conflict with it)
	@command -v npm >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null || exit 1; }
	@cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run --silent build
	@touch $@

setup: $(STAMPS)/package $(STAMPS)/web

test: setup
	@export ROS_DOMAIN_ID=$$(( ($$$$ % 200) + 20 )) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MPLBACKEND=Agg; \
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: setup
	@export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MPLBACKEND=Agg; \
	$(VENV)/bin/spine-nav demo --out demo_output --headless

clean:
	rm -rf build/interfaces $(STAMPS)/interfaces $(STAMPS)/package demo_output .pytest_cache

distclean:
	rm -rf build $(VENV) demo_output *.egg-info
