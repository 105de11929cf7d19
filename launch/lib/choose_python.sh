# Sourced by the launchers: sets PYTHON to an interpreter that has the engine's package.
# PYTHON given: used as it is. Else the repository's .venv/bin/python (made by `make install`), else
# python3 on PATH, whichever can import the engine (flan_t5x, or t5x for upstream T5X); else one
# error line saying what to do.
choose_python() {  # REPO_DIR MODULE
  local repo=$1 module=$2 candidate
  if [[ -n "${PYTHON:-}" ]]; then return 0; fi
  for candidate in "$repo/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" 2>/dev/null; then
      PYTHON=$candidate
      return 0
    fi
  done
  echo "error: no Python that can import $module: $repo/.venv/bin/python is missing or lacks it (run 'make install' in $repo), and so does python3 on PATH; set PYTHON=/path/to/python (a Python with $module installed)." >&2
  exit 2
}
