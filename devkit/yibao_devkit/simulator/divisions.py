"""A small embedded table of real administrative divisions (GB/T 2260).

Synthetic resident IDs start with a real county-level address code so that they pass every
validator the sidecar or an integrator's system may apply, and each person's insured area is the
real prefecture-level medical-insurance division above that county. Municipalities directly
under the central government use the province-level code (``110000``, ``310000`` ...), as their
medical-insurance divisions do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Division:
    """A county-level division and the medical-insurance division it is insured under."""

    code: str  # six-digit county-level code, the first six characters of a resident ID
    name: str
    city: str  # the prefecture-level city's name, used for synthetic employer names
    insured_area: str  # six-digit prefecture-level (or municipality) medical-insurance division


DIVISIONS: tuple[Division, ...] = (
    Division("110105", "北京市朝阳区", "北京市", "110000"),
    Division("110108", "北京市海淀区", "北京市", "110000"),
    Division("120101", "天津市和平区", "天津市", "120000"),
    Division("310115", "上海市浦东新区", "上海市", "310000"),
    Division("310104", "上海市徐汇区", "上海市", "310000"),
    Division("500103", "重庆市渝中区", "重庆市", "500000"),
    Division("440305", "深圳市南山区", "深圳市", "440300"),
    Division("440106", "广州市天河区", "广州市", "440100"),
    Division("330106", "杭州市西湖区", "杭州市", "330100"),
    Division("320106", "南京市鼓楼区", "南京市", "320100"),
    Division("320505", "苏州市虎丘区", "苏州市", "320500"),
    Division("370202", "青岛市市南区", "青岛市", "370200"),
    Division("420106", "武汉市武昌区", "武汉市", "420100"),
    Division("430104", "长沙市岳麓区", "长沙市", "430100"),
    Division("510107", "成都市武侯区", "成都市", "510100"),
    Division("610113", "西安市雁塔区", "西安市", "610100"),
    Division("210102", "沈阳市和平区", "沈阳市", "210100"),
)

BY_CODE: Mapping[str, Division] = MappingProxyType({d.code: d for d in DIVISIONS})
