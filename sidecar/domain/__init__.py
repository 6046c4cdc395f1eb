"""The domain's basics, pure functions with no I/O and no gRPC: identifiers and Beijing time.

Public API:

- :mod:`.validation` - ``check_resident_id``, ``check_division_code``, ``check_person_name``,
  ``check_request_id``, ``check_iso_date``, ``resident_id_check_char``, ``PROVINCE_PREFIXES``:
  problems described without echoing the (personal) value.
- :mod:`.beijing` - ``BEIJING``, ``beijing_now``, ``beijing_today``: the contract's dates are
  Beijing dates, of an injected clock's instant, never the host's time zone.

Any layer may import these; they import nothing else of the sidecar.
"""

__all__ = ["beijing", "validation"]
