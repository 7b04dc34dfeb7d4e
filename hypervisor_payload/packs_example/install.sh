#!/bin/sh
# Runs inside the installed dom0 root (chroot) after the pack's files are in place.
set -eu
mkdir -p /var/lib/netinstall/packs
echo "${NETINSTALL_PACK:-example} installed" > /var/lib/netinstall/packs/example.installed
