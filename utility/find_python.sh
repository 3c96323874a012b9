#!/bin/sh
# Prints the path of a Python that is 3.8 or newer and can create a virtual environment: PYTHON if
# given, else python3 if it is new enough, else the first of python3.8 ... python3.13 that works.
# With none, prints one line saying what was found and the command that installs one on this
# Ubuntu or Debian release, and exits 1.
#
#   sh utility/find_python.sh [PYTHON]
#
# POSIX sh and shell builtins only, because it runs before any usable Python is known. MLMARK_SYSROOT
# (default: /) is the root below which etc/os-release is read, so tests can point it at a fixture.

MIN_MAJOR=3
MIN_MINOR=8
# Prints X.Y, then fails where ensurepip is missing: Debian and Ubuntu ship it in pythonX.Y-venv,
# without which `python -m venv` stops half-way.
PROBE='import sys; print("%d.%d" % sys.version_info[:2]); import ensurepip'

found=""

# Sets $version to X.Y and succeeds when $1 runs, is new enough and has ensurepip.
usable() {
    version=$("$1" -c "$PROBE" 2>/dev/null)
    status=$?
    case $version in
        [0-9]*.[0-9]*) ;;
        *) return 1 ;;  # not installed, or a pyenv shim of a version not selected
    esac
    major=${version%%.*}
    minor=${version#*.}
    if [ "$major" -lt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
        found="$found, $1 $version"
        return 1
    fi
    if [ "$status" -ne 0 ]; then
        found="$found, $1 $version without its venv module"
        return 1
    fi
    return 0
}

# The package that brings a new enough Python with venv on this release (its default where that is
# new enough: the distribution's own builds of everything else then fit it).
install_hint() {
    id=""
    version_id=""
    if [ -r "${MLMARK_SYSROOT:-}/etc/os-release" ]; then
        while IFS='=' read -r key value; do
            value=${value#\"}
            value=${value%\"}
            case $key in
                ID) id=$value ;;
                VERSION_ID) version_id=$value ;;
            esac
        done < "${MLMARK_SYSROOT:-}/etc/os-release"
    fi
    case "$id $version_id" in
        "ubuntu 18.04"|"ubuntu 20.04") want=python3.8 ;;  # JetPack 4.6, JetPack 5
        "ubuntu 22.04") want=python3.10 ;;  # JetPack 6
        "ubuntu 24.04") want=python3.12 ;;
        "debian 11") want=python3.9 ;;
        "debian 12") want=python3.11 ;;
        "debian 13") want=python3.13 ;;
        *) want="" ;;
    esac
    if [ -n "$want" ]; then
        echo "install it with: sudo apt install $want $want-venv $want-dev"
    else
        echo "install one, then run make again (or make PYTHON=/path/to/python3)"
    fi
}

if [ $# -gt 0 ]; then
    candidates=$1
else
    candidates="python3 python3.8 python3.9 python3.10 python3.11 python3.12 python3.13"
fi

for candidate in $candidates; do
    if usable "$candidate"; then
        command -v "$candidate"
        exit 0
    fi
done

found=${found#, }
first=${candidates%% *}
echo "MLMark needs Python 3.8 or newer with its venv module (found: ${found:-no $first}); $(install_hint)" >&2
exit 1
