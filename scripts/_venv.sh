# Shared by scripts/run and scripts/test: a project virtualenv with imgwatch installed.
ensure_venv() {
    local spec=$1 python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "imgwatch needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    # The install is editable: only another pyproject.toml, extras or Python needs pip again. A stamp
    # per extras records what was installed; a new venv starts without stamps.
    local stamp=".venv/.installed${spec#.}" wanted
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c '' 2>/dev/null; then
        rm -rf .venv
        "$python" -m venv .venv
    fi
    wanted="$(.venv/bin/python -V) $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        rm -f "$stamp"
        # The first run downloads PyTorch (~5 GB).
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
        echo "$wanted" > "$stamp"
    fi
}
