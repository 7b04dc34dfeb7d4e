#!/bin/sh
# The lab's installation-complete script: $1 is 0 when the install succeeded.
echo "netinstall-lab-marker: installation-complete $1"
