# Shell functions the accelerator scripts share (sourced, not run).

# ensure_venv VENV EXTRAS IMPORTS [REQUIREMENT...]: installs the project with its
# pip EXTRAS (and the other requirements) into the virtual environment VENV, unless
# its Python already imports IMPORTS (comma-separated modules).
ensure_venv() {
  local venv=$1 extras=$2 imports=$3
  shift 3
  if ! "$venv/bin/python" -c "import $imports" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".[$extras]" "$@"
  fi
}
