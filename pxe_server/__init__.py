"""The provisioning server: registry, boot configs, TFTP, HTTP, dnsmasq (SPEC §9).

Not built yet: the server arrives with the provisioning-server issue.
"""
