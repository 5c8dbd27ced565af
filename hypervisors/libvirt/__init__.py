"""The libvirt backend (pulumi-libvirt 0.5.4, which bridges terraform-provider-libvirt v0.8.1)."""
