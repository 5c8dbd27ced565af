"""Proxmox VE hosts through pulumi-proxmoxve 8.3.0 (bridges bpg/terraform-provider-proxmox v0.111.1)."""
