#!/usr/bin/env bash
# Set up sparsecl on a fresh machine: the Fashion-MNIST Debian package (when root) and a virtualenv
# in .venv with the package and its test dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the Debian package dataset-fashion-mnist ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST not found; as root run: apt-get install dataset-fashion-mnist (or set SPARSECL_DATA)" >&2
  fi
fi

# Headless Chromium renders the HTML report in the tests (tests/test_report.py skips without it).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the Debian packages chromium and chromium-driver (report tests) ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "note: could not install chromium; the report's browser test will be skipped" >&2
  else
    echo "note: chromium not found; as root run: apt-get install chromium chromium-driver (report browser test)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The tested torch first (pyproject.toml only asks torch>=2.4, so the package installs beside any recent
# torch); pip takes the CPU wheel that lies on this kind of machine. Then the package and its test extras.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
