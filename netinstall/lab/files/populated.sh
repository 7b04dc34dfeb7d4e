#!/bin/sh
# The lab's filesystem-populated script: $1 is the installed root's mount point.
set -eu
date -u +%Y-%m-%dT%H:%M:%SZ > "$1/root/netinstall-lab-populated"
echo "netinstall-lab-marker: filesystem-populated $1"
