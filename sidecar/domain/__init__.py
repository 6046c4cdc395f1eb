"""The domain's basics, pure functions with no I/O and no gRPC: identifiers, the data subject,
the contract's codes and Beijing time.

Public API:

- :mod:`.validation` - ``check_resident_id``, ``check_division_code``, ``check_person_name``,
  ``check_request_id``, ``check_iso_date``, ``resident_id_check_char``, ``PROVINCE_PREFIXES``:
  problems described without echoing the (personal) value.
- :mod:`.beijing` - ``BEIJING``, ``beijing_now``, ``beijing_today``: the contract's dates are
  Beijing dates, of an injected clock's instant, never the host's time zone.

- :mod:`.subjects` - ``Subject``, ``check_subject``: the validated data subject every RPC names.
- :mod:`.codes` - the contract's enums and the platform's dictionary codes, both ways.

Any layer may import these; they import only the contract's messages (``sidecar._proto``) and the
error model's ``FieldViolation``, so no cycle can run through them.
"""

__all__ = ["beijing", "codes", "subjects", "validation"]
