"""Compliance components: the consent ledger and its gate (the audit trail: sidecar/audit)."""
