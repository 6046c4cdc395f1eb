"""The error texts the simulated platform answers with (``err_msg`` of ``infcode`` -1).

They imitate the platform's Chinese messages. The sidecar may match the fixed ones (notably
:data:`SIGN_IN_INVALID`, which means "sign in again and retry"), so they are constants here and
their wording is part of the simulator's contract. Texts never echo personal data.
"""

from __future__ import annotations

# Transport and envelope.
MALFORMED_BODY = "请求报文格式错误，无法解析JSON"
FIELD_MISSING = "参数[{field}]不能为空"
FIELD_NOT_STRING = "参数[{field}]类型错误，应为字符串"
FIELD_TOO_LONG = "参数[{field}]长度超过{limit}"
FIELD_BAD_VALUE = "参数[{field}]取值错误"
INPUT_NOT_OBJECT = "参数[input]格式错误"
MSGID_INVALID = "msgid格式错误"
INF_TIME_INVALID = "参数[inf_time]格式错误，应为yyyy-MM-dd HH:mm:ss"
UNKNOWN_INFNO = "交易编号[{infno}]不存在"
UNKNOWN_INSTITUTION = "定点医药机构编号[{code}]不存在"
WRONG_AREA = "就医地医保区划[{code}]不属于本统筹区"

# Sign-in (9001 / 9002 and every business transaction).
SIGN_IN_INVALID = "签到信息已失效，请重新签到"
SIGN_IN_OPERATOR_MISMATCH = "签到操作员编号与报文操作员不一致"

# Person information (1101).
PERSON_NOT_FOUND = "未查询到该人员的参保信息"
NAME_MISMATCH = "人员姓名与证件号码不匹配"
CERT_NO_INVALID = "证件号码格式错误"
MDTRT_CERT_TYPE_INVALID = "就诊凭证类型[{value}]不合法"
MDTRT_CERT_TYPE_UNSUPPORTED = "就诊凭证类型[{value}]暂不支持"
PSN_CERT_TYPE_INVALID = "人员证件类型[{value}]不合法"
CERT_NO_MISMATCH = "就诊凭证编号与证件号码不一致"
BEGNTIME_INVALID = "参数[begntime]格式错误，应为yyyy-MM-dd HH:mm:ss"


class Refusal(Exception):
    """Raised by validation and handlers: answer ``infcode`` -1 with this ``err_msg``."""

    def __init__(self, err_msg: str) -> None:
        super().__init__(err_msg)
        self.err_msg = err_msg
