"""`gantry agent serve` settings (TOML file, every key a flag), TCP refusals, token files,
and reading a log's tail."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from gantry.api.auth import TokenFileError, hash_token, load_token_hashes, new_token
from gantry.api.server import ServeError, ServerSettings, check_tcp_settings
from gantry.cli.agent import SettingsError, load_settings
from gantry.cli.main import build_parser


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["agent", "serve", *argv])


def test_flags_win_over_the_file_and_the_file_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('root = "/srv/gantry"\nsocket = "/run/x.sock"\nlog_level = "debug"\n')
    settings = load_settings(parse("--config", str(config), "--socket", "/run/y.sock"))
    assert settings["root"] == Path("/srv/gantry")
    assert settings["socket"] == Path("/run/y.sock")
    assert settings["log_level"] == "debug"
    assert settings["cgroup_parent"] == "/gantry"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('colour = "red"\n', "unknown key 'colour'"),
        ("root = 3\n", "root must be a string"),
        ("root = \n", "not valid TOML"),
        ('log_level = "loud"\n', "log_level"),
    ],
)
def test_bad_config_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(parse("--config", str(config)))


def test_every_config_key_is_also_a_flag() -> None:
    from gantry.cli.agent import PATH_KEYS, STRING_KEYS

    args = parse()
    for key in PATH_KEYS + STRING_KEYS:
        assert hasattr(args, key), key


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"listen": "127.0.0.1:8443"}, "TLS"),
        (
            {"listen": "127.0.0.1:8443", "tls_cert": Path("c"), "tls_key": Path("k")},
            "no unauthenticated mode",
        ),
        (
            {
                "listen": "127.0.0.1:99999",
                "tls_cert": Path("c"),
                "tls_key": Path("k"),
                "tokens": Path("t"),
            },
            "HOST:PORT",
        ),
        ({"tokens": Path("t")}, "only meaningful with --listen"),
    ],
)
def test_tcp_without_tls_or_client_auth_is_refused(fields: dict[str, object], message: str) -> None:
    settings = ServerSettings(root=Path("/r"), socket=Path("/s"), **fields)  # type: ignore[arg-type]
    with pytest.raises(ServeError, match=message):
        check_tcp_settings(settings)


def test_tcp_with_tls_and_tokens_or_certificates_is_accepted() -> None:
    for auth in ({"tokens": Path("t")}, {"client_ca": Path("ca")}):
        settings = ServerSettings(
            root=Path("/r"),
            socket=Path("/s"),
            listen="[::1]:8443",
            tls_cert=Path("c"),
            tls_key=Path("k"),
            **auth,
        )  # type: ignore[arg-type]
        check_tcp_settings(settings)


def test_token_file_holds_hashes_only(tmp_path: Path) -> None:
    token, line = new_token()
    assert line == hash_token(token) and token not in line
    path = tmp_path / "tokens"
    path.write_text(f"# ops team\n{line}\n\n")
    assert load_token_hashes(path) == (line,)
    path.write_text(f"{token}\n")
    with pytest.raises(TokenFileError, match=":1: not a token hash"):
        load_token_hashes(path)
    path.write_text("# nothing\n")
    with pytest.raises(TokenFileError, match="no token hash"):
        load_token_hashes(path)
