#!/bin/sh
# Runs in dom0 after the update's packages and files are in place, with
# NETINSTALL_UPDATE=<id> in its environment; a non-zero exit fails the update.
set -eu
mkdir -p /var/lib/netinstall
echo "${NETINSTALL_UPDATE:-example-hotfix-1} post-apply ran" > /var/lib/netinstall/hotfix-example.ran
