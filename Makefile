# The two commands the README promises. Both create .venv first (scripts/setup.sh, idempotent).
PY := .venv/bin/python

.PHONY: setup quickstart test
setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/rlcurr train recipes/quickstart.yaml trainer.overwrite=true

test: setup
	.venv/bin/pytest -q -p no:cacheprovider tests
