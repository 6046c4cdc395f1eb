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
PSN_CERT_TYPE_INVALID = "人员证件类型[{value}]不合法"
CERT_NO_MISMATCH = "就诊凭证编号与证件号码不一致"
BEGNTIME_INVALID = "参数[begntime]格式错误，应为yyyy-MM-dd HH:mm:ss"

E_VOUCHER_INVALID = "电子凭证令牌无效或已过期"
CARD_SN_MISSING = "社会保障卡识别码[card_sn]不能为空"
CARD_SN_MISMATCH = "社会保障卡识别码与卡号不匹配"
VOUCHER_PERSON_MISMATCH = "就诊凭证与人员编号不一致"
AMOUNT_INVALID = "参数[{field}]金额格式错误"
NUMBER_INVALID = "参数[{field}]数值格式错误"
DATE_INVALID = "参数[{field}]日期格式错误"

# Messages (every transaction).
MSGID_DUPLICATE = "报文ID[{msgid}]重复，且报文内容与原报文不一致"
SYSTEM_BUSY = "系统繁忙，请稍后再试"  # the default err_msg of the injected business refusal

# Enrolment and benefits (2001, 2201, 2207, 2501).
PSN_NO_NOT_FOUND = "人员编号不存在或无参保信息"
INSUTYPE_NOT_ENROLLED = "该人员未参加险种[{insutype}]"
MED_TYPE_INVALID = "医疗类别[{value}]不合法"
TIME_ORDER_INVALID = "结束时间不能早于开始时间"
BENEFIT_SUSPENDED = "人员参保状态为暂停参保，暂停期间不能享受待遇"
BENEFIT_TERMINATED = "人员参保状态为终止参保，不能享受待遇"
BENEFIT_BEFORE_ENROLMENT = "就诊时间早于参保日期，不在待遇享受期内"
BENEFIT_AFTER_PAUSE = "就诊时间晚于暂停参保日期，不在待遇享受期内"
BENEFIT_OK = "待遇享受检查通过"
NOT_ENTITLED = "人员不享受待遇：{reason}"

# Offsite registrations (2501 / 2502 / 5302 / 5304).
OFFSITE_SAME_AREA = "备案就医地[{code}]与参保地相同，无需办理异地就医备案"
OFFSITE_AREA_INVALID = "就医地医保区划[{code}]不存在"
OFFSITE_OVERLAP = "该人员在备案期内已存在有效的异地就医备案[{serial}]"
OFFSITE_NOT_FOUND = "备案记录[{serial}]不存在"
OFFSITE_ALREADY_CANCELLED = "备案记录[{serial}]已撤销"

# Outpatient visits and settlements (2201 / 2204 / 2206 / 2207 / 2208 / 2601).
IPT_OTP_NO_DUPLICATE = "门诊号[{value}]已办理挂号"
VISIT_NOT_FOUND = "就诊信息[{mdtrt_id}]不存在"
VISIT_PERSON_MISMATCH = "就诊信息与人员编号不一致"
VISIT_SETTLED = "该就诊已结算，请先撤销结算"
FEE_DETAIL_EMPTY = "费用明细[feedetail]不能为空"
FEE_DETAIL_DUPLICATE = "费用明细流水号[{sn}]重复"
FEE_DETAIL_AMOUNT = "费用明细[{sn}]明细项目费用总额与数量乘以单价不符"
FEE_DETAIL_NONE = "该就诊未上传费用明细"
MEDFEE_MISMATCH = "医疗费总额[{given}]与已上传明细总额[{uploaded}]不一致"
CHRG_BCHNO_UNKNOWN = "收费批次号[{value}]不存在"
CONFIRMATION_REQUIRED = "本地区结算需二次确认，请提供[{field}]"
CONFIRMATION_WRONG = "二次确认验证码错误"
SETTLEMENT_NOT_FOUND = "结算信息[{setl_id}]不存在"
SETTLEMENT_MISMATCH = "结算信息与就诊信息或人员编号不一致"
SETTLEMENT_CANCELLED = "结算信息[{setl_id}]已撤销"
REVERSAL_NOT_FOUND = "原交易不存在或未成功，无需冲正"
REVERSAL_INFNO_MISMATCH = "原交易编号与原报文不一致"
REVERSAL_ALREADY = "原交易已冲正或已撤销"
REVERSAL_PERSON_MISMATCH = "冲正人员编号与原交易不一致"


class Refusal(Exception):
    """Raised by validation and handlers: answer ``infcode`` -1 with this ``err_msg``."""

    def __init__(self, err_msg: str) -> None:
        super().__init__(err_msg)
        self.err_msg = err_msg
