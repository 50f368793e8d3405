# The README's two commands:  `make book`  and  `make test`.
# Both create ./.venv if it is missing and install the pinned dependencies once;
# later runs skip the installation unless pyproject.toml changed.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.cifs_edu-installed
TORCHATTACKS := torchattacks==3.5.1
# processes that train the book's models ahead of the chapters (`python -m cifs_edu prepare`),
# pytest-xdist workers of `make test` (one test module or one chapter per worker at a time)
# and chapter kernels of `make book` (CIFS_BOOK_JOBS)
JOBS    ?= 2
XDIST   := -n $(JOBS) --dist loadscope

.PHONY: env models book test unit notebooks claims sync clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(PY) || { echo "[env] creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "[env] installing cifs_edu (editable) with the data, book and test extras, at the versions of constraints.txt"
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[data,book,test]"
	@# torchattacks pins requests~=2.25 in its metadata, which would break Sphinx: install it without deps.
	$(PY) -m pip install --disable-pip-version-check -q --no-deps $(TORCHATTACKS)
	@touch $(STAMP)
	@echo "[env] ready: $(VENV)"

# Train every model the chapters load (and their beta_atk sweeps), $(JOBS) processes at a time;
# a no-op when they are cached. The chapters would train them one by one otherwise.
models: env
	$(PY) -m cifs_edu prepare --jobs $(JOBS)

# Build the whole book, executing every chapter; warnings are errors. The build trains the
# chapters' models itself ($(JOBS) processes) and starts chapters while the last ones train.
# A chapter that fails does not stop the others: every page is written and the build exits non-zero.
book: env
	@CIFS_BOOK_JOBS=$(JOBS) $(VENV)/bin/jupyter-book build book/ -W -n --keep-going; rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "Book built: $(CURDIR)/_build/html/index.html"; \
	else echo "Book built WITH ERRORS (exit $$rc): $(CURDIR)/_build/html/index.html; see the warnings above"; fi; \
	exit $$rc

# Unit tests and every chapter under nbval (after training the chapters' models in parallel).
test: models
	$(PY) -m pytest $(XDIST) tests book --nbval --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider --durations=15

unit: env
	$(PY) -m pytest $(XDIST) tests -p no:cacheprovider

notebooks: models
	$(PY) -m pytest $(XDIST) book --nbval --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider --durations=15

# Every chapter's checks for several seeds (each seed trains its own models into the cache):
# prints the table claim x seed and fails if any check fails for any seed.
SEEDS   ?= 0 1 2 3 4
claims: env
	$(PY) scripts/claims.py --seeds $(SEEDS) --jobs $(JOBS)

# Re-pair every chapter's .ipynb with its MyST source (keeps cell ids).
sync: env
	$(VENV)/bin/jupytext --to ipynb --update book/[0-9]*.md

clean:
	rm -rf _build book/_build
