"""The end-to-end lab: a QEMU machine network-installed by our server in a namespace.

``netns`` (namespace, bridge, tap), ``qemu`` (machines), ``services`` (the server and
QEMU as child processes), ``console`` (milestones), ``demo`` (the orchestration);
``bmc`` and ``ipmi_bmc`` (the machine's BMC: Redfish or IPMI), ``shutdowns`` (why QEMU
ended), ``door`` (the server's web console from the host).
"""
