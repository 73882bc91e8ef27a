# Runtime environment of the project's venv (ROS 2 from PyPI wheels + this package).
# Sourced by .venv/bin/activate (hook added by scripts/setup_env.sh); can also be sourced on its
# own from bash: `. scripts/env.sh`. Safe to source repeatedly (no duplicate path entries).
# The venv is $ANYTIME_VENV if set (the activate hook sets it), else <repo>/.venv.

_ap_venv="${ANYTIME_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}"

# Prepend a directory to a colon-separated variable unless it is already there.
_ap_prepend() {  # VAR DIR
    case ":${!1:-}:" in
        *":$2:"*) ;;
        *) export "$1=$2${!1:+:${!1}}" ;;
    esac
}

_ap_prepend PATH "$_ap_venv/bin"
# ROS shared libraries: the venv's lib/ (also holds this package's generated message libraries)
# and the wheels' site-packages/ros_*.libs. This is what ros_wheels_bootstrapper would do by
# re-executing every python; setting it here (and marking the bootstrap done) avoids the re-exec.
for _ap_d in "$_ap_venv"/lib/python3*/site-packages/ros_*.libs; do
    [ -d "$_ap_d" ] && _ap_prepend LD_LIBRARY_PATH "$_ap_d"
done
_ap_prepend LD_LIBRARY_PATH "$_ap_venv/lib"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
# ament index (packages, message definitions, rclpy's type support lookup).
_ap_prepend AMENT_PREFIX_PATH "$_ap_venv"
# Do not put the current directory / script directory first on sys.path: the source tree's
# anytime_perception/ has no generated msg/ and would shadow the installed package.
export PYTHONSAFEPATH=1
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
# Transport settings must match in every process that exchanges images (see the profile).
# Both can be overridden by exporting them before sourcing.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_ap_venv/share/anytime_perception/config/fastdds_profile.xml}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"

unset _ap_venv _ap_d
unset -f _ap_prepend
