#!/usr/bin/env bash
# Create or refresh the project's environment in <repo>/.venv. Idempotent; seconds when done.
#   scripts/setup_env.sh           everything: venv + packages + CMake fixes + activate hook + install
#   scripts/setup_env.sh env       only the environment (no build)
#   scripts/setup_env.sh install   only the incremental cmake build + install of this package
# ROS 2 comes from PyPI ros-* wheels (no ROS distro here): see shared/docs/ros-on-pip.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"
BUILD="$ROOT/build"
PYTHON="${PYTHON:-python3}"
log() { echo "[setup_env] $*"; }

# ONNX Runtime flavour: ANYTIME_ORT=cpu|gpu (make setup ORT=gpu); default: the venv's current one,
# else cpu. onnxruntime and onnxruntime-gpu both provide the onnxruntime module: the other one is
# uninstalled before this one is installed, never both.
ort_flavour() {
    local ort="${ANYTIME_ORT:-$(cat "$V/.onnxruntime" 2>/dev/null || echo cpu)}"
    case "$ort" in cpu|gpu) echo "$ort" ;;
        *) echo "[setup_env] ORT=$ort: give cpu (onnxruntime) or gpu (onnxruntime-gpu)" >&2; exit 2 ;;
    esac
}

setup_venv() {
    local ort other
    ort="$(ort_flavour)"
    [ -x "$V/bin/python" ] || { log "creating $V"; "$PYTHON" -m venv "$V"; }
    other="$([ "$ort" = gpu ] && echo onnxruntime || echo onnxruntime-gpu)"
    if "$V/bin/python" -m pip show -q "$other" >/dev/null 2>&1; then
        log "ORT=$ort: uninstalling $other first (it cannot coexist with $(tail -1 "$ROOT/requirements/onnxruntime/$ort.txt"))"
        "$V/bin/python" -m pip uninstall -q -y "$other"
        # both ship the same onnxruntime/ files: the uninstall removed the kept one's too
        _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$V/bin/python" -m pip install -q --force-reinstall --no-deps \
            -r "$ROOT/requirements/onnxruntime/$ort.txt"
    fi

    # pip only when the requirement lists changed (stamp = hash of their contents).
    local reqs=("$ROOT"/requirements/*.txt "$ROOT/requirements/onnxruntime/$ort.txt") args=() hash
    local stamp="$V/.requirements.sha256"
    hash="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
        for r in "${reqs[@]}"; do args+=(-r "$r"); done
        log "pip install ${args[*]}"
        # The bootstrap flag stops ros_wheels_bootstrapper from re-executing pip.
        _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$V/bin/python" -m pip install -q "${args[@]}"
        echo "$hash" > "$stamp"
    fi
    echo "$ort" > "$V/.onnxruntime"
}

# The wheels' exported CMake files hard-code the build machine's Python and numpy include dirs
# (/opt/python/cp311-cp311/...); point them at the venv's. A no-op once done.
patch_cmake_files() {
    local files pyinc npinc
    files="$(grep -rl --include='*.cmake' '/opt/python/cp3' "$V/share" || true)"
    [ -n "$files" ] || return 0
    pyinc="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$V/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    npinc="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$V/bin/python" -c 'import numpy; print(numpy.get_include())')"
    log "patching $(echo "$files" | wc -l) CMake files: python include -> $pyinc, numpy include -> $npinc"
    echo "$files" | xargs sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$pyinc#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#$npinc#g"
    if grep -rl --include='*.cmake' '/opt/python/cp3' "$V/share"; then
        log "ERROR: unpatched /opt/python paths remain in the files above"; exit 1
    fi
}

# ROS 2 tools that PyPI lacks (launch, launch_ros, the ros2 CLI, launch_testing, rosidl_runtime_py)
# and two interface packages (composition_interfaces, vision_msgs), from the source snapshots in
# ../shared/ros2 (see its README): Python packages with pip, interface packages with the same
# plain CMake build as this package's messages. On a real ROS 2 install they come from the distro;
# without the folder this step says what it skips and the rest of the setup goes on.
SHARED_ROS2="${ANYTIME_SHARED_ROS2:-$ROOT/../shared/ros2}"
ROS2_PYTHON_PACKAGES=(rosidl_runtime_py launch/launch launch/launch_xml launch/launch_yaml launch/launch_testing
    launch/launch_pytest launch_ros/launch_ros launch_ros/ros2launch launch_ros/launch_testing_ros
    ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2run ros2cli/ros2node ros2cli/ros2param ros2cli/ros2topic
    ros2cli/ros2service ros2cli/ros2interface ros2cli/ros2lifecycle ros2cli/ros2action ros2cli/ros2component)
ROS2_INTERFACE_PACKAGES=(rcl_interfaces/composition_interfaces vision_msgs/vision_msgs)

install_shared_ros2() {
    if [ ! -d "$SHARED_ROS2" ]; then
        log "no $SHARED_ROS2: skipping ros2 launch/CLI, launch_testing and vision_msgs (a ROS 2 install provides them)"
        return 0
    fi
    local stamp="$V/.shared_ros2.sha256" hash p
    hash="$( (echo "${ROS2_PYTHON_PACKAGES[*]} ${ROS2_INTERFACE_PACKAGES[*]}"; \
              find "$SHARED_ROS2" -name package.xml -o -name setup.py -o -name CMakeLists.txt | sort | xargs cat) \
            | sha256sum | cut -d' ' -f1)"
    [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] && return 0
    log "installing ROS 2 tools from $SHARED_ROS2 (log: $BUILD/shared_ros2.log)"
    mkdir -p "$BUILD"
    local args=()
    for p in "${ROS2_PYTHON_PACKAGES[@]}"; do args+=("$SHARED_ROS2/$p"); done
    # pip builds outside the (possibly read-only) source folders
    _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$V/bin/python" -m pip install -q --no-deps --no-build-isolation "${args[@]}" \
        >"$BUILD/shared_ros2.log" 2>&1 || { cat "$BUILD/shared_ros2.log"; exit 1; }
    # shellcheck source=env.sh
    ANYTIME_VENV="$V" . "$ROOT/scripts/env.sh"
    for p in "${ROS2_INTERFACE_PACKAGES[@]}"; do
        local b="$BUILD/shared_ros2/$(basename "$p")"
        mkdir -p "$b"
        { cmake -S "$SHARED_ROS2/$p" -B "$b" -DCMAKE_INSTALL_PREFIX="$V" -DPython3_EXECUTABLE="$V/bin/python" \
              -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DCMAKE_INSTALL_MESSAGE=LAZY \
          && cmake --build "$b" -j "$(nproc)" && cmake --install "$b"; } >>"$BUILD/shared_ros2.log" 2>&1 \
            || { tail -50 "$BUILD/shared_ros2.log"; exit 1; }
    done
    echo "$hash" > "$stamp"
    log "ROS 2 tools installed: ros2 launch/param/topic/lifecycle, launch_testing, vision_msgs"
}

# Make `. .venv/bin/activate` set up the whole runtime environment (scripts/env.sh).
hook_activate() {
    local marker="# anytime_perception environment (added by scripts/setup_env.sh)"
    grep -qF "$marker" "$V/bin/activate" && return 0
    log "adding the environment hook to $V/bin/activate"
    printf '\n%s\nANYTIME_VENV="$VIRTUAL_ENV"\n. "%s/scripts/env.sh"\nunset ANYTIME_VENV\n' \
        "$marker" "$ROOT" >> "$V/bin/activate"
}

# Incremental cmake build + install into the venv: generated messages (anytime_perception.msg)
# and the package's Python sources into site-packages, launch/config/models into
# share/anytime_perception, executables into lib/anytime_perception (linked into .venv/bin).
install_package() {
    [ -x "$V/bin/python" ] || { log "no $V: run scripts/setup_env.sh (or make setup) first"; exit 1; }
    # shellcheck source=env.sh
    ANYTIME_VENV="$V" . "$ROOT/scripts/env.sh"   # PATH, AMENT_PREFIX_PATH, LD_LIBRARY_PATH
    # A build dir from another checkout location cannot be reused.
    if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD/CMakeCache.txt"; then
        rm -rf "$BUILD"
    fi
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        log "configuring $BUILD (log: $BUILD/configure.log)"
        mkdir -p "$BUILD"
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$V" -DPython3_EXECUTABLE="$V/bin/python" \
            -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DCMAKE_INSTALL_MESSAGE=LAZY \
            >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log"; exit 1; }
    fi
    cmake --build "$BUILD" -j "$(nproc)" >"$BUILD/build.log" 2>&1 || { cat "$BUILD/build.log"; exit 1; }
    # (The generator's empty __init__.py is installed and then replaced by ours on every run.)
    cmake --install "$BUILD" >"$BUILD/install.log" || { cat "$BUILD/install.log"; exit 1; }
    log "installed into $V ($(grep -c '^-- Installing' "$BUILD/install.log") files written; log: $BUILD/install.log)"

    # Remove installed modules whose source was deleted or renamed (install only adds files).
    local pkg src="$ROOT/anytime_perception" f
    pkg="$(echo "$V"/lib/python3*/site-packages/anytime_perception)"
    (cd "$pkg" && find . -mindepth 1 \( -path ./msg -o -path ./srv -o -name __pycache__ \) -prune -o \
        \( -type d -o -name '*.py' \) -print) | while read -r f; do
        f="${f#./}"
        if [ -e "$pkg/$f" ] && [ ! -e "$src/$f" ]; then log "removing stale $pkg/$f"; rm -rf "${pkg:?}/$f"; fi
    done

    # The launchers run with the venv's interpreter whether or not the venv is activated
    # (ros2 launch and ros2 run execute them directly).
    for f in "$V/lib/anytime_perception"/*; do
        sed -i "1s|^#!.*python3\$|#!$V/bin/python|" "$f"
        ln -sfn "$f" "$V/bin/$(basename "$f")"
    done
}

case "${1:-all}" in
    env) setup_venv; patch_cmake_files; hook_activate; install_shared_ros2 ;;
    install) install_package ;;
    all) setup_venv; patch_cmake_files; hook_activate; install_shared_ros2; install_package ;;
    *) echo "usage: $0 [all|env|install]" >&2; exit 2 ;;
esac
