"""Configuration: TOML plus environment overrides, one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import config
from sidecar.config import ConfigError

MINIMAL = """
[institution]
code = "H11010500001"
name = "某某科技有限公司医保服务"
division = "110105"

[platform]
url = "https://127.0.0.1:9443"
ca_file = "/etc/yibao/platform-ca.pem"
client_cert_file = "/etc/yibao/client.pem"
client_key_file = "/etc/yibao/client.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return path


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, MINIMAL), environ={})
    assert settings.server.socket_path == Path("/run/yibao/sidecar.sock")
    assert settings.server.tcp_listen is None
    assert settings.server.max_message_bytes == 1 << 20
    assert settings.platform.transactions.person_info == "1101"
    assert settings.platform.http2 is True


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {
        "YIBAO_SIDECAR__SERVER__TCP_LISTEN": "127.0.0.1:50051",
        "YIBAO_SIDECAR__SERVER__TCP_PLAINTEXT_FOR_DEVELOPMENT": "true",
        "YIBAO_SIDECAR__SERVER__GRACE_PERIOD_SECONDS": "2.5",
        "YIBAO_SIDECAR__PLATFORM__TRANSACTIONS__PERSON_INFO": "1101A",
        "UNRELATED": "x",
    }
    settings = config.load(write(tmp_path, MINIMAL), environ=environ)
    assert settings.server.tcp_listen == "127.0.0.1:50051"
    assert settings.server.grace_period_seconds == 2.5
    assert settings.platform.transactions.person_info == "1101A"
    assert settings.platform.transactions.registration == "2501"


def test_a_regional_code_variant_is_configuration(tmp_path: Path) -> None:
    text = MINIMAL + '\n[platform.transactions]\nregistration = "2501A"\n'
    settings = config.load(write(tmp_path, text), environ={})
    assert settings.platform.transactions.registration == "2501A"
    assert settings.platform.transactions.settlement == "2207"


@pytest.mark.parametrize(
    ("extra", "environ", "expected"),
    [
        (
            "[server]\nmax_message_bytes = 'big'\n",
            {},
            "config: server.max_message_bytes (from {path}): Input should be a valid integer, "
            "unable to parse string as an integer",
        ),
        (
            "[server]\nmax_mesage_bytes = 1\n",
            {},
            "config: server.max_mesage_bytes (from {path}): unknown key "
            "(did you mean max_message_bytes?)",
        ),
        (
            "",
            {"YIBAO_SIDECAR__SERVER__TCP_LISTEN": "0.0.0.0:50051"},
            "config: server.tcp_listen (from environment YIBAO_SIDECAR__SERVER__TCP_LISTEN): "
            "Value error, host must be a loopback IP address: callers outside the pod need mTLS",
        ),
        (
            "",
            {"YIBAO_SIDECAR__PLATFORM__TRANSACTIONS__SIGN_IN": "90011"},
            "config: platform.transactions.sign_in (from environment "
            "YIBAO_SIDECAR__PLATFORM__TRANSACTIONS__SIGN_IN): Value error, must be 4 digits, "
            "optionally followed by one capital letter",
        ),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, extra: str, environ: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ=environ)
    assert str(caught.value) == expected.format(path=path)
    assert "\n" not in str(caught.value)


def test_a_misspelt_required_key_is_reported_as_unknown_not_missing(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('division = "110105"', 'divison = "110105"'))
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert str(caught.value) == (
        f"config: institution.divison (from {path}): unknown key (did you mean division?) "
        "(and 1 more)"
    )


def test_a_misspelt_section_suggests_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[sever]\nsocket_path = '/tmp/s.sock'\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert str(caught.value) == (f"config: sever (from {path}): unknown key (did you mean server?)")


def test_a_key_nothing_resembles_gets_no_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[server]\nzzz = 1\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert str(caught.value) == f"config: server.zzz (from {path}): unknown key"


def test_a_misspelt_env_key_and_section_name_the_variable_not_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={"YIBAO_SIDECAR__SERVER__SOKCET_PATH": "/tmp/s.sock"})
    assert str(caught.value) == (
        "config: server.sokcet_path (from environment YIBAO_SIDECAR__SERVER__SOKCET_PATH): "
        "unknown key (did you mean socket_path?)"
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={"YIBAO_SIDECAR__SERVR__SOCKET_PATH": "/tmp/s.sock"})
    assert str(caught.value) == (
        "config: servr (from environment YIBAO_SIDECAR__SERVR__SOCKET_PATH): "
        "unknown key (did you mean server?)"
    )
    assert str(path) not in str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "YIBAO_SIDECAR__SERVER__SOCKET_PATH",
        "YIBAO_SIDECAR__SERVER__MAX_MESSAGE_BYTES",
        "YIBAO_SIDECAR__PAGING__TOKEN_KEY_FILE",
    ],
)
def test_an_empty_env_override_is_one_clear_line(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, MINIMAL), environ={name: ""})
    dotted = name.removeprefix("YIBAO_SIDECAR__").lower().replace("__", ".")
    assert str(caught.value) == (
        f"config: {dotted} (from environment {name}): the variable is empty; "
        "unset it to keep the file's value or the default"
    )


def test_an_empty_env_override_of_a_text_key_is_a_value(tmp_path: Path) -> None:
    environ = {
        "YIBAO_SIDECAR__SERVER__TCP_LISTEN": "",  # optional listener: off
        "YIBAO_SIDECAR__PLATFORM__TRANSACTIONS__ACCOUNT_STATEMENT": "",  # no statement here
    }
    settings = config.load(write(tmp_path, MINIMAL), environ=environ)
    assert settings.server.tcp_listen is None
    assert settings.platform.transactions.account_statement == ""


@pytest.mark.parametrize(
    "name", ["YIBAO_SIDECAR__", "YIBAO_SIDECAR__SERVER__", "YIBAO_SIDECAR____X"]
)
def test_an_env_name_without_a_key_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config: environment {name}: not a key; the form"):
        config.load(write(tmp_path, MINIMAL), environ={name: "x"})


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('division = "110105"\n', ""))
    with pytest.raises(
        ConfigError, match=r"^config: institution.division \(from .*\): required key is missing$"
    ):
        config.load(path, environ={})


def test_inline_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[hsm]\nuser_pin = "246810"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    message = str(caught.value)
    assert "hsm.user_pin" in message and "hsm.user_pin_file" in message
    assert "246810" not in message


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(write(tmp_path, "[server\n"), environ={})


def test_error_count_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[server]\nmax_message_bytes = 1\nmax_concurrent_rpcs = 0\n")
    with pytest.raises(ConfigError, match=r"\(and 1 more\)$"):
        config.load(path, environ={})


def test_each_replica_names_its_msgid_slot(tmp_path: Path) -> None:
    environ = {
        "YIBAO_SIDECAR__PLATFORM__MSGID__SLOTS": "4",
        "YIBAO_SIDECAR__PLATFORM__MSGID__SLOT": "3",
    }
    settings = config.load(write(tmp_path, MINIMAL), environ=environ)
    assert (settings.platform.msgid.slot, settings.platform.msgid.slots) == (3, 4)
    environ["YIBAO_SIDECAR__PLATFORM__MSGID__SLOT"] = "4"
    with pytest.raises(ConfigError, match=r"^config: platform.msgid \(.*slot must be below slots"):
        config.load(write(tmp_path, MINIMAL), environ=environ)


@pytest.mark.parametrize(
    ("lease", "expected"),
    [
        (  # a renewal must land before the lease could lapse, with the safety margin to spare
            {"LEASE_SECONDS": "10", "RENEW_SECONDS": "6"},
            r"^config: platform.msgid \(from .*\): Value error, renew_seconds must be "
            r"below lease_seconds - lease_safety_seconds$",
        ),
        (  # clock skew plus the msgid's one-second resolution
            {"LEASE_SAFETY_SECONDS": "1"},
            r"^config: platform.msgid.lease_safety_seconds \(from environment "
            r"YIBAO_SIDECAR__PLATFORM__MSGID__LEASE_SAFETY_SECONDS\): Input should be greater "
            r"than or equal to 2$",
        ),
    ],
)
def test_leased_msgid_slots_leave_room_for_renewal_and_clock_skew(
    tmp_path: Path, lease: dict[str, str], expected: str
) -> None:
    """The slot lease (sidecar/platform/msgid_lease.py) takes [platform.msgid] as validated
    here: terms under which two replicas could hold one slot never reach it."""
    environ = {"YIBAO_SIDECAR__PLATFORM__MSGID__SLOT": "lease"}
    environ |= {f"YIBAO_SIDECAR__PLATFORM__MSGID__{key}": value for key, value in lease.items()}
    with pytest.raises(ConfigError, match=expected):
        config.load(write(tmp_path, MINIMAL), environ=environ)


def test_a_pin_must_be_a_sha256(tmp_path: Path) -> None:
    text = MINIMAL + 'pinned_server_keys = ["abc"]\n'
    with pytest.raises(ConfigError, match=r"platform.pinned_server_keys.*64 hex digits"):
        config.load(write(tmp_path, text), environ={})
