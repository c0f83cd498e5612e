# zerodowntime.migration — run as root on Debian 12 (the lab provisions services on this machine).
#   make demo   provision the lab and run the migration phases that exist, printing what happened
#   make test   install everything the tests need, then lint, sanity, unit, integration (with molecule)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := 0
# ansible-test needs the collection under ansible_collections/<namespace>/<name>, outside this
# git checkout (it lists files with git), so `make sanity` assembles a copy there.
# One copy per checkout, so two checkouts on a machine do not step on each other.
SANITY_ROOT := /tmp/zerodowntime-sanity-$(shell printf %s "$(CURDIR)" | cksum | cut -d" " -f1)
SANITY_COPY := $(SANITY_ROOT)/ansible_collections/zerodowntime/migration
ANSIBLE_TEST_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py

.PHONY: demo test system-deps venv lab lint ruff ansible-lint sanity unit integration molecule clean

demo: venv system-deps
	ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks ansible-playbook playbooks/demo.yml

# lint, sanity and unit two at a time (most of their time is one process: a core would idle), each
# line printed whole as it comes; then integration, with the molecule scenarios (tests/run_integration.sh)
test: venv system-deps
	$(MAKE) --no-print-directory -j2 --output-sync=line lint sanity unit
	$(MAKE) --no-print-directory integration
	@echo "make test: all suites passed"

# Debian packages the tooling needs; the roles install the services themselves (roles/lab_ssh,
# run by the integration tests' lab_ssh fixture, installs openssh-server). openssh-client: ansible's
# ssh connection, ssh-keygen and ssh-keyscan in tests/integration/test_lab_ssh.py.
# The update stamp: the roles' apt tasks skip their cache refresh for cache_valid_time after one,
# but apt judges the cache's age by /var/lib/apt/lists, which a refresh finding nothing new leaves
# old - so on this machine every converge of every role fetched the indexes again (5-20 s each).
# Debian does not write the stamp; the hook does after each successful refresh (as Ubuntu's
# 15update-stamp does), for apt-get and the apt module alike.
# The package cache: Debian's container images turn apt's binary cache off (docker-clean:
# Dir::Cache::pkgcache ""), so every apt task parsed the compressed package lists again, ~3 s of
# CPU a host; with the cache back (Debian's default, in a file read after docker-clean) ~1 s.
system-deps: .make/system-deps
.make/system-deps:
	printf '%s\n' 'APT::Update::Post-Invoke-Success {"mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp";};' \
		> /etc/apt/apt.conf.d/15zerodowntime-update-stamp
	printf '%s\n' 'Dir::Cache::pkgcache "pkgcache.bin";' 'Dir::Cache::srcpkgcache "srcpkgcache.bin";' \
		> /etc/apt/apt.conf.d/zz-zerodowntime-pkgcache
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		python3-venv git tar ca-certificates util-linux procps iproute2 openssh-client >/dev/null
	mkdir -p .make && touch $@

venv: .make/venv
.make/venv: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q ".[test]"
	mkdir -p .make && touch $@

lab: venv system-deps
	ansible-playbook playbooks/site.yml

lint: ruff ansible-lint

ruff: venv
	ruff check .
	ruff format --check .

ansible-lint: venv
	ansible-lint

sanity: venv
	mkdir -p $(dir $(ANSIBLE_TEST_PIP))
	cp .ci/get_pip_offline.py $(ANSIBLE_TEST_PIP)
	rm -rf $(SANITY_COPY) && mkdir -p $(SANITY_COPY)
	git ls-files -z --cached --others --exclude-standard | grep -zv '^\.ansible/' \
		| tar --null -T - -cf - | tar -xf - -C $(SANITY_COPY)
	cd $(SANITY_COPY) && ansible-test sanity --venv --python 3.11 --color no

unit: venv
	pytest tests/unit

# In parts: the lab's converge and the tests of every service, with beside them the molecule scenarios and then the
# tests that use no lab service (on into the lanes if need be); then two lanes at once on services they do not share, molecule monitoring after main (the script says which)
integration: venv system-deps
	tests/run_integration.sh

molecule: venv system-deps
	molecule test -s postgresql
	molecule test -s redis
	molecule test -s rabbitmq
	molecule test -s monitoring
	molecule test -s cluster_node
	molecule test -s mariadb

clean:
	rm -rf .make $(SANITY_ROOT) .pytest_cache .ruff_cache
