"""Vendor-neutral access to a PKCS#11 HSM for SM2 / SM3 / SM4.

Modules, one job each:

* :mod:`hsm.profiles`   vendor mechanism numbers as data (``hsm/profiles/*.toml``)
* :mod:`hsm.mechanisms` vendor numbers into python-pkcs11's enums
* :mod:`hsm.pin`        PIN files (mode policy) and a PIN type that never prints
* :mod:`hsm.p11raw`     the few PKCS#11 calls python-pkcs11 lacks (ctypes)
* :mod:`hsm.token`      one login, a pool of worker sessions, recovery
* :mod:`hsm.sm`         the SM crypto core (SM2 without private keys, SM3, SM4, codec)
* :mod:`hsm.sm2`        SM2 signing and verification in the token over the core
* :mod:`hsm.keys`       keys by purpose/version, lifecycle state kept in the token
* :mod:`hsm.datakeys`   SM4 data keys wrapped under the active KEK
* :mod:`hsm.x509`       PKCS#10 requests and certificate matching
* :mod:`hsm.inittoken`  C_InitToken + C_InitPIN
* :mod:`hsm.cli`        the ``yibao-hsm`` command
"""
