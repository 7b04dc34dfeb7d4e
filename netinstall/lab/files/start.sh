#!/bin/sh
# The lab's installation-start script: no argument; the target is not mounted yet.
echo "netinstall-lab-marker: installation-start ${1:-(no argument)}"
