"""Plausible synthetic Chinese personal and employer names.

The names are drawn from common surnames and given-name characters so that demos look real, but
every combination is random: any resemblance to a real person is a coincidence of common names.
"""

from __future__ import annotations

import random

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏"
    "魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵"
)
COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官")
MALE_GIVEN = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆帅旭宁龙林峰建国志文博晨昊然"
FEMALE_GIVEN = "芳娜敏静丽艳娟霞秀玲桂英梅琳燕萍红雪琴颖慧倩婷洁莉璐瑶怡欣悦雅晶蕾岚佳"

_FIRM_WORDS = (
    "华信", "博远", "瑞丰", "恒通", "新锐", "中科", "天成", "润泽", "联创", "鼎盛",
    "嘉禾", "宏图", "智达", "云帆", "东方", "长青", "卓越", "正泰", "汇通", "启明",
)  # fmt: skip
_FIRM_TRADES = (
    "科技", "信息技术", "网络科技", "电子", "贸易", "医药", "物流", "建设工程", "食品", "文化传媒",
)  # fmt: skip
_FIRM_FORMS = ("有限公司", "有限公司", "有限公司", "股份有限公司")
_PUBLIC_BODIES = ("财政局", "教育局", "卫生健康委员会", "人力资源和社会保障局", "统计局")


def person_name(rng: random.Random, *, male: bool) -> str:
    """A surname (occasionally a compound one) and a one- or two-character given name."""
    surname = rng.choice(COMPOUND_SURNAMES) if rng.random() < 0.02 else rng.choice(SURNAMES)
    pool = MALE_GIVEN if male else FEMALE_GIVEN
    length = 1 if rng.random() < 0.3 else 2
    return surname + "".join(rng.choice(pool) for _ in range(length))


def company_name(rng: random.Random, city: str) -> str:
    """A synthetic enterprise name such as ``深圳市华信科技有限公司``."""
    return city + rng.choice(_FIRM_WORDS) + rng.choice(_FIRM_TRADES) + rng.choice(_FIRM_FORMS)


def public_body_name(rng: random.Random, district: str) -> str:
    """A government department for civil servants, such as ``北京市朝阳区财政局``."""
    return district + rng.choice(_PUBLIC_BODIES)
