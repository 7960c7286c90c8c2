# The workbook's commands. Each one builds the environment first if it is missing.
PROFILE ?= full
NOTEBOOKS ?=
LAB_PORT ?= 8888

.PHONY: setup run test lab model book clean
setup:             ## build .venv (a no-op when it is up to date)
	@bash scripts/ensure_env.sh
run: setup         ## the main job: every notebook headless (PROFILE=ci for the short run)
	@bash scripts/ensure_browser.sh || echo "(the runner names the lessons that need it)"
	.venv/bin/python -m helpers.runner --profile $(PROFILE) $(NOTEBOOKS)
test:              ## what CI runs: unit tests against real Ray, then the labs and every lesson under nbval
	@bash scripts/test.sh
lab: setup         ## JupyterLab on the notebooks, with the project's kernel, on 127.0.0.1
	@LAB_PORT=$(LAB_PORT) bash scripts/lab.sh
model: setup       ## build (or find, cached) the tiny local LLM the LLM lessons serve
	.venv/bin/python -m helpers.tiny_llm build
book: setup        ## the lessons as a website, from the run in build/runs/ (executes nothing) into build/book/
	.venv/bin/python -m helpers.book
clean:             ## remove executed notebooks and reports (not .venv)
	rm -rf build
