"""Known answers for the message-security tests.

SM3, SM4 and SM2 are the shared vectors file's (tests/vectors/sm.json, the standards' own),
named here as the scheme and simulator tests use them. The scheme-B case is ours: its expected
values were written out by hand from the published rule (derivations in the comments) and its
derived key computed with the OpenSSL command line, never with the code under test; the tests
recompute the key and encData with OpenSSL and gmssl again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.vectors import SM2_GMT, SM4_ECB
from tests.vectors import SM3 as _SM3

SM3 = [(v.message, v.digest.hex()) for v in _SM3]

# GB/T 32907 Appendix A, one block, ECB, no padding
SM4_KEY = SM4_ECB[0].key.hex()
SM4_PLAINTEXT = SM4_ECB[0].plaintext.hex()
SM4_CIPHERTEXT = SM4_ECB[0].ciphertext.hex()

# GM/T 0003.5 Annex A, sm2p256v1, default user ID
SM2_MESSAGE = SM2_GMT.message
SM2_USER_ID = SM2_GMT.user_id
SM2: dict[str, str] = {
    "d": f"{SM2_GMT.d:064X}",
    "xA": f"{SM2_GMT.x:064X}",
    "yA": f"{SM2_GMT.y:064X}",
    "Z": SM2_GMT.z.hex().upper(),
    "e": SM2_GMT.e.hex().upper(),
    "r": f"{SM2_GMT.r:064X}",
    "s": f"{SM2_GMT.s:064X}",
}

# ---------------------------------------------------------------------------------- scheme B
B_APP_ID = "43AF047BBA47FC8A1AE8EFB2DEMO0001"
B_APP_SECRET = "S3cr3tAppSecret-DEMO-0123456789ab"
B_TIMESTAMP = "1764120600000"  # 2025-11-26 01:30:00 UTC in ms, 13 digits
B_VERSION = "2.0.1"

# Data key. Seed = appId[:16] = "43AF047BBA47FC8A" (ASCII) = 34334146303437424241343746433841.
#   printf %s 'S3cr3tAppSecret-DEMO-0123456789ab' \
#     | openssl enc -sm4-ecb -K 34334146303437424241343746433841 -nosalt | xxd -p | tr a-f A-F
#   -> A0224E9A48A4C799ADDCC34526C5F915 9945DB20... (48 bytes: 33 bytes of secret + 15 pad)
# The first 16 hex characters, as ASCII bytes, are the data key.
B_DATA_KEY = b"A0224E9A48A4C799"

# The business data, in the (unsorted) order a caller builds it.
B_DATA: dict[str, Any] = {
    "payOrdId": "ORD20261126093000001",
    "psnName": "张三",
    "feeSumamt": Decimal("128.50"),
    "ownPayAmt": Decimal("0.00"),
    "acctUsedFlag": True,
    "setlCnt": 2,
    "memo": "",
    "refundReason": None,
    "payList": [
        {"payType": "01", "amt": Decimal("100.00"), "note": None},
        {"payType": "02", "amt": Decimal("28.50")},
    ],
    "extData": {"hint": "", "tags": []},
}

# What encData encrypts: compact JSON, keys in the given order, non-ASCII as UTF-8, Decimals
# exactly as written, empty values kept (they are data; only the string to sign drops them).
B_PLAINTEXT = (
    '{"payOrdId":"ORD20261126093000001","psnName":"张三","feeSumamt":128.50,"ownPayAmt":0.00,'
    '"acctUsedFlag":true,"setlCnt":2,"memo":"","refundReason":null,'
    '"payList":[{"payType":"01","amt":100.00,"note":null},{"payType":"02","amt":28.50}],'
    '"extData":{"hint":"","tags":[]}}'
).encode()

# The string to sign, derived by hand:
# * signed fields: appId, encType, signType, timestamp, version and data (encData, signData and
#   extra never take part), sorted: appId < data < encType < signType < timestamp < version;
# * data: "memo" ("") and "refundReason" (None) dropped; "extData" loses "hint" ("") and "tags"
#   ([]) and, now {}, is dropped itself; in payList the first element loses "note" (None);
#   keys sorted at every level (acctUsedFlag < feeSumamt < ownPayAmt < payList < payOrdId
#   ('L' 0x4C < 'O' 0x4F) < psnName < setlCnt; amt < payType); numbers and booleans become
#   JSON strings with Decimals keeping their scale ("128.50", "0.00", "true", "2");
# * "&key=" + appSecret appended.
B_STRING_TO_SIGN = (
    "appId=43AF047BBA47FC8A1AE8EFB2DEMO0001"
    '&data={"acctUsedFlag":"true","feeSumamt":"128.50","ownPayAmt":"0.00",'
    '"payList":[{"amt":"100.00","payType":"01"},{"amt":"28.50","payType":"02"}],'
    '"payOrdId":"ORD20261126093000001","psnName":"张三","setlCnt":"2"}'
    "&encType=SM4&signType=SM2&timestamp=1764120600000&version=2.0.1"
    "&key=S3cr3tAppSecret-DEMO-0123456789ab"
)
