# The two commands a new user needs:  make demo   (install and scan the built-in lab)
#                                     make test   (install test needs and run the whole suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the integration tests drive: nmap (python-nmap path), iproute2 (namespaces),
# and the real daemons the credential probes are tested against (tests/daemons/).
TEST_DEBS := python3-venv postgresql nmap iproute2 dropbear-bin busybox-static lighttpd vsftpd mosquitto snmpd snmp \
             openssh-server openssl chromium stunnel4 sslscan ssh-audit libcoap3-bin \
             redis-server

.PHONY: demo test install test-install system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

demo: install
	$(BIN)/iotbaseline demo

system-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "system packages present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing:$$missing"; \
	  made=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
	  [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; [ $$rc = 0 ] || exit $$rc; \
	else echo "not root: cannot install$$missing; tests needing them will be skipped"; fi

# The example third-party plugin is installed for the tests only (tests/test_plugin_example.py
# scans with it); --no-deps: its one dependency, iotbaseline, is the checkout installed above.
test-install: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps -e examples/iotbaseline-example-plugin

test: system-deps test-install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest
