# The two commands of the README. Each sets up (or reuses) .venv, then runs.
#   make demo   the main job: the closed-loop demo on the shipped default model
#   make test   the test suite (what CI runs)
#   make mutation  mutmut over the safety-critical modules (slow, not in CI; ARGS="safety")
VENV ?= $(CURDIR)/.venv
# pytest-xdist workers for `make test` (auto: one per CPU, at most 4; 0: no workers)
TEST_WORKERS ?= auto
export VLA_ROS_VENV := $(VENV)

.PHONY: setup demo test lint mutation clean
setup:
	@scripts/bootstrap.sh

demo: setup
	@$(VENV)/bin/vla-ros demo $(ARGS)

test: setup
	@$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

mutation: setup
	@nice -n 10 $(VENV)/bin/python scripts/mutation.py $(ARGS)

lint: setup
	@$(VENV)/bin/python -m ruff check .

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache out
