"""The audit trail: one encrypted, hash-chained, signed record for every RPC and transaction.

See docs/audit.md for the record format, the chain, checkpoints, the spool and ``yibao-audit``.
"""
