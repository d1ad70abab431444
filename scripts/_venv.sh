# Shared by scripts/run and scripts/test: a project virtualenv with imgwatch installed.
ensure_venv() {
    local spec=$1 python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "imgwatch needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        "$python" -m venv .venv
    fi
    # Quick when everything is installed already; the first run downloads PyTorch (~5 GB).
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
}
