"""Strict parsing of what a deletion request names: record ids and classes are ASCII decimal integers (`int()`
also reads '²' and '٣'), nothing is listed twice, and every refusal is one line naming the entry and where it is."""

from __future__ import annotations

import signal
import sys

import pytest
from typer.testing import CliRunner

from hyperforget import cli
from hyperforget.base import records
from hyperforget.base.errors import ConfigError, DataError
from hyperforget.config.overlays import parse_params
from hyperforget.config.params import ForgetConfig


def read(tmp_path, text: str) -> records.RecordIds:
    path = tmp_path / "ids.txt"
    path.write_text(text, encoding="utf-8")
    return records.read_ids(path)


@pytest.mark.parametrize("token", ["²", "٣", "３", "5²"])
def test_an_id_in_other_than_ascii_digits_is_one_error_naming_it_and_its_line(tmp_path, token):
    with pytest.raises(DataError) as err:
        read(tmp_path, f"4\n# a comment\n{token}\n")
    message = str(err.value)
    assert "\n" not in message and f"line 3: {token!r} is neither a record id" in message
    assert "ASCII digits 0-9" in message


def test_a_file_listing_ids_twice_is_refused_with_the_count(tmp_path):
    with pytest.raises(DataError) as err:
        read(tmp_path, "5\n5\n7\n7\n7\n")
    assert str(err.value) == (f"{tmp_path / 'ids.txt'}: 3 duplicate ids (5 twice: lines 1, 2; 7 three times: "
                              "lines 3, 4, 5); list each record once")


def test_a_record_hash_listed_twice_is_refused(tmp_path):
    digest = "ab" * 32
    with pytest.raises(DataError, match=r": 1 duplicate id \(sha256:abababababab… twice: lines 1, 3\)"):
        read(tmp_path, f"sha256:{digest}\n4\nSHA256:{digest.upper()}\n")


def test_a_byte_order_mark_is_not_an_entry(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("\ufeff5\n9\n", encoding="utf-8")
    assert records.read_ids(path).indices == (5, 9)


@pytest.mark.parametrize(("value", "named"), [
    ("", "--classes '' is empty"),
    ("1,1", "--classes '1,1' names class 1 twice (items 1, 2)"),
    ("-1", "--classes '-1': item 1, '-1', is not a class number"),
    ("٣", "--classes '٣': item 1, '٣', is not a class number"),
    ("3,²", "--classes '3,²': item 2, '²', is not a class number"),
    ("3,,5", "--classes '3,,5': item 2 is empty"),
])
def test_a_bad_classes_option_is_one_config_error_naming_the_item(tmp_path, value, named):
    # checked before the params file is even read: the request never reaches the ledger
    result = CliRunner().invoke(cli.app, ["request", "submit", "--classes", value,
                                          "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError), result.output
    assert named in str(result.exception) and "\n" not in str(result.exception)


def test_the_command_prints_one_error_line_without_pydantic_internals(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hyperforget", "request", "submit", "--classes", "1,1",
                                      "--params", str(tmp_path / "params.yaml")])
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main() installs a SIGTERM handler
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out = capsys.readouterr()
    assert exit_.value.code == 1
    assert out.out.splitlines() == ["error: --classes '1,1' names class 1 twice (items 1, 2): name each class once"]
    assert "pydantic" not in out.out + out.err


@pytest.mark.parametrize(("classes", "message"), [
    ([], "forget.classes is empty"),
    ([4, 1, 4], "forget.classes names class 4 twice (items 1, 3): name each class once"),
    ([2, -1], "forget.classes item 2 is -1, a negative class"),
])
def test_forget_classes_errors_name_the_item_in_one_line(classes, message):
    with pytest.raises(ConfigError) as err:
        parse_params({"forget": {"classes": classes}})
    assert message in str(err.value)
    assert ForgetConfig.classes_problem(classes) in str(err.value)
    assert ForgetConfig.classes_problem([3, 5]) is None
