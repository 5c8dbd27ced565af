"""Hypervisor backends, one folder each: how a backend reaches its host and maps the VM plan onto its provider."""
