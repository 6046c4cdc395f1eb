"""Known answers for the message-security tests, kept as data.

SM3, SM4 and SM2 come from /work/shared/reference/crypto-vectors.md (the standards' own
vectors). The scheme-B case is ours: its expected values were written out by hand from the
published rule (derivations in the comments) and its derived key computed with the OpenSSL
command line, never with the code under test; the tests recompute the key and encData with
OpenSSL and gmssl again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

SM3 = [
    # (message, digest) from GB/T 32905 Appendix A
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]

# GB/T 32907 Appendix A, one block, ECB, no padding
SM4_KEY = "0123456789abcdeffedcba9876543210"
SM4_PLAINTEXT = "0123456789abcdeffedcba9876543210"
SM4_CIPHERTEXT = "681edf34d206965e86b3e94f536e4246"

# GM/T 0003.5 Annex A, sm2p256v1, default user ID
SM2_MESSAGE = b"message digest"
SM2_USER_ID = b"1234567812345678"
SM2: dict[str, str] = {
    "d": "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8",
    "xA": "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020",
    "yA": "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13",
    "Z": "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3",
    "e": "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640",
    "r": "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3",
    "s": "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA",
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
