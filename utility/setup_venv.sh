#!/bin/sh
# Creates or updates the virtual environment VENV with the project and its test tools installed, under
# the Python utility/find_python.sh picks (or PYTHON). Nothing is created when there is none.
#
#   sh utility/setup_venv.sh [--python PYTHON] [--dry-run] VENV
#
# On a Jetson whose JetPack OpenCV this Python can import, the environment sees the system's packages
# (--system-site-packages) and numpy stays on the major version JetPack's cv2 was built against, so
# that cv2 is the one used; everywhere else, including a Jetson whose cv2 is built for another Python
# (JetPack 4.6 ships it for 3.6), the environment is isolated and OpenCV comes from PyPI (the
# project's `opencv` extra). README.md, "Quick start on a Jetson", says why.
#
# --dry-run prints the decision and the commands without running them. MLMARK_SYSROOT (default: /)
# is the root below which etc/nv_tegra_release is looked for, so tests can point it at a fixture.
set -eu

case $0 in
    */*) here=${0%/*} ;;
    *) here=. ;;
esac
python=""
dry_run=""
venv=""
while [ $# -gt 0 ]; do
    case $1 in
        --python) python=${2:?--python needs a value}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -*) echo "setup_venv.sh: unknown option $1" >&2; exit 2 ;;
        *) venv=$1; shift ;;
    esac
done
if [ -z "$venv" ]; then
    echo "usage: sh utility/setup_venv.sh [--python PYTHON] [--dry-run] VENV" >&2
    exit 2
fi

VERSION_CODE='import sys; print("%d.%d" % sys.version_info[:2])'
# Succeeds, printing numpy's major version, where cv2 imports (with the numpy it was built against).
CV2_CODE='import cv2, numpy; print(numpy.__version__.split(".")[0])'

run() {
    echo "$*"
    if [ -z "$dry_run" ]; then
        "$@"
    fi
}

py=$(sh "$here/find_python.sh" ${python:+"$python"}) || exit 1
version=$("$py" -c "$VERSION_CODE")

site=""
pin=""
extras="test,opencv"
if [ -f "${MLMARK_SYSROOT:-}/etc/nv_tegra_release" ]; then
    numpy_major=$("$py" -c "$CV2_CODE" 2>/dev/null) || numpy_major=""
    case $numpy_major in
        [0-9]|[0-9][0-9])
            site="--system-site-packages"
            pin="numpy<$((numpy_major + 1))"
            extras="test"
            echo "Jetson: $venv sees JetPack's packages, so cv2 is JetPack's OpenCV ($py can import it; $pin keeps it working)"
            ;;
        *)
            echo "Jetson: $py cannot import JetPack's OpenCV, so $venv is isolated and OpenCV comes from PyPI"
            ;;
    esac
fi

# A venv made by another Python (an earlier python3 that was too old) is replaced, not patched.
clear=""
if [ -f "$venv/pyvenv.cfg" ]; then
    old=$("$venv/bin/python" -c "$VERSION_CODE" 2>/dev/null) || old=""
    if [ "$old" != "$version" ]; then
        echo "$venv has Python ${old:-that no longer runs}, not $version: recreating it"
        clear="--clear"
    fi
fi

run "$py" -m venv $clear $site "$venv"
run "$venv/bin/python" -m pip install -q --upgrade pip
run "$venv/bin/python" -m pip install -q -e ".[$extras]" $pin
if [ -n "$site" ]; then
    if [ -n "$dry_run" ]; then
        echo "(then, only if cv2 no longer imports in $venv: $venv/bin/python -m pip install -q -e '.[opencv]')"
    elif ! "$venv/bin/python" -c "import cv2" 2>/dev/null; then
        echo "JetPack's cv2 does not import in $venv after the install; installing OpenCV from PyPI into it instead"
        run "$venv/bin/python" -m pip install -q -e ".[opencv]"
    fi
fi
