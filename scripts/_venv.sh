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
    # The install is editable, so only a changed pyproject.toml (or other extras) needs pip again:
    # the stamp records what was installed last. The first run downloads PyTorch (~5 GB).
    local stamp=.venv/.imgwatch-installed wanted
    wanted="$spec $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if ! grep -qxF "$wanted" "$stamp" 2>/dev/null; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
        echo "$wanted" >> "$stamp"
    fi
}
