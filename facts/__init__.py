"""Host facts (scripts/host-facts.sh): parsed, matched to hosts[], and checked against the VMs (host_facts.py)."""
