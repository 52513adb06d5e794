#!/usr/bin/env bash
# Runs one of pipelines/NAME.launch with gst-launch-1.0 -e -m, after replacing each ${KEY} in it
# with the value given as KEY=value; --print prints the line instead of running it.
#   scripts/launch.sh testsrc STREAM=demo
#   scripts/launch.sh file STREAM=demo FILE=demo.mkv
#   scripts/launch.sh camera STREAM=cam1 CAMERA=/dev/video0
#   scripts/launch.sh audio-video STREAM=av
# kvssink takes its plugin path, credentials, region and endpoint from the environment
# (GST_PLUGIN_PATH, AWS_*, CONTROL_PLANE_URI), as in the README.
set -euo pipefail
usage="usage: $0 [--print] NAME KEY=value... (NAME: $(cd "$(dirname "$0")/../pipelines" && ls ./*.launch | sed 's#^\./##; s#\.launch$##' | paste -sd' '))"
print=false
[ "${1:-}" = --print ] && { print=true; shift; }
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
name=$1
shift
file="$(dirname "$0")/../pipelines/$name.launch"
[ -f "$file" ] || { echo "no pipeline $name; $usage" >&2; exit 2; }
line=$(<"$file")
for kv in "$@"; do
  [[ $kv == [A-Z]*=* ]] || { echo "not KEY=value: $kv; $usage" >&2; exit 2; }
  key="\${${kv%%=*}}" value=${kv#*=}
  line=${line//"$key"/"$value"}
done
if [[ $line =~ \$\{[A-Z_]+\} ]]; then
  echo "$name.launch still needs ${BASH_REMATCH[0]}: give it as ${BASH_REMATCH[0]:2:-1}=value" >&2
  exit 2
fi
$print && { echo "$line"; exit; }
# gst-launch-1.0 wants the line as words (it quotes each argument that holds a space).
read -ra words <<<"$line"
exec gst-launch-1.0 -e -m "${words[@]}"
