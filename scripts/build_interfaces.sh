#!/usr/bin/env bash
# Build and install the spine_nav_interfaces package (rosidl messages/services) into the venv,
# from the ros-jazzy-* wheels, with plain cmake (no colcon / ROS install needed).
# Usage: scripts/build_interfaces.sh VENV_DIR BUILD_DIR
set -euo pipefail
venv=$(cd "$1" && pwd)
build=$2
src=$(cd "$(dirname "$0")/../spine_nav_interfaces" && pwd)
py="$venv/bin/python"

# The wheels' CMake exports name the include paths of the machine they were built on
# (/opt/python/cp311-cp311/...). Point them at this venv's Python and numpy headers, in the venv only.
py_inc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_inc=$("$py" -c "import numpy; print(numpy.get_include())")
{ grep -rl "/opt/python/cp311-cp311" "$venv/share" --include="*.cmake" 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g" \
         -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" "$f"
done

mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$build/configure.log" 2>&1 \
  || { tail -40 "$build/configure.log"; echo "spine_nav_interfaces: cmake configure failed (log: $build/configure.log)"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$build/build.log" 2>&1 \
  || { tail -40 "$build/build.log"; echo "spine_nav_interfaces: build failed (log: $build/build.log)"; exit 1; }
cmake --install "$build" > "$build/install.log" 2>&1 \
  || { tail -20 "$build/install.log"; echo "spine_nav_interfaces: install failed"; exit 1; }
"$py" -c "from spine_nav_interfaces.msg import GuardStatus; from spine_nav_interfaces.srv import Register; print('spine_nav_interfaces built:', GuardStatus.__name__, Register.__name__)"
