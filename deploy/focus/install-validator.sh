#!/usr/bin/env bash
# Installs the FinOps Foundation's focus-validator (FOCUS 1.2 rules bundled) into its own venv and prints its
# executable. It needs Python >= 3.12 (the project runs on 3.11), so it gets a separate venv. Idempotent: a second
# run installs nothing.
#   GPULEDGER_FOCUS_VALIDATOR_HOME  the venv (default ~/.cache/gpuledger/focus-validator)
#   GPULEDGER_FOCUS_PYTHON          the Python >= 3.12 to build it from (default: pyenv's 3.12.1, else python3.12 on PATH)
set -euo pipefail
VERSION=2.2.1
# focus-validator 2.2.1 pins numpy < 2 but leaves pyarrow open, and pyarrow >= 22 refuses numpy 1.x at import.
PYARROW='pyarrow>=18,<22'
VENV=${GPULEDGER_FOCUS_VALIDATOR_HOME:-$HOME/.cache/gpuledger/focus-validator}
EXE=$VENV/bin/focus-validator
RUN=$VENV/bin/focus-validator-run  # what this script prints: the validator, runnable from any folder

healthy() {
    [ -x "$EXE" ] && [ -x "$RUN" ] && "$VENV/bin/python" -c "
import sys, importlib.metadata as m, pyarrow, polars, focus_validator.main
sys.exit(m.version('focus-validator') != '$VERSION')" 2>/dev/null
}

if ! healthy; then
    PY=${GPULEDGER_FOCUS_PYTHON:-}
    [ -z "$PY" ] && [ -x /root/.pyenv/versions/3.12.1/bin/python ] && PY=/root/.pyenv/versions/3.12.1/bin/python
    [ -z "$PY" ] && PY=$(command -v python3.12 || command -v python3.13 || true)
    if [ -z "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
        echo "focus-validator $VERSION needs Python >= 3.12; none found (set GPULEDGER_FOCUS_PYTHON)" >&2
        exit 1
    fi
    echo "installing focus-validator $VERSION with $("$PY" --version) into $VENV (once)" >&2
    [ -x "$VENV/bin/pip" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "focus-validator==$VERSION" "$PYARROW" >&2
    # focus-validator 2.2.1 opens focus_validator/rules/currency_codes.csv relative to the working directory, so the
    # wrapper runs it from its site-packages, with the file arguments made absolute first.
    site=$("$VENV/bin/python" -c 'import os, focus_validator; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))')
    cat >"$RUN" <<WRAPPER
#!/usr/bin/env bash
set -euo pipefail
args=()
while [ \$# -gt 0 ]; do
    case "\$1" in
        --data-file|--output-destination|--rule-set-path) args+=("\$1" "\$(realpath -m -- "\$2")"); shift 2 ;;
        *) args+=("\$1"); shift ;;
    esac
done
cd "$site" && exec "$EXE" "\${args[@]}"
WRAPPER
    chmod +x "$RUN"
    healthy || { echo "focus-validator $VERSION installed in $VENV but does not import; see the errors above" >&2; exit 1; }
fi
echo "$RUN"
