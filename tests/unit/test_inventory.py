"""Inventory files: reading CSV and JSON, validating every row, writing the export."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.inventory import (
    InventoryFileError,
    InventoryRecord,
    RawRow,
    parse_tags,
    read_inventory,
    validate_email,
    validate_rows,
    write_inventory,
)
from scanner.discovery import normalise_domain
from scanner.errors import TargetError

HEADER = "domain,customer,account_manager,account_manager_email,tags\n"


def _csv(tmp_path: Path, body: str, name: str = "inventory.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def _rows(*objects: dict[str, object]) -> list[RawRow]:
    return [RawRow(row=n, values=o) for n, o in enumerate(objects, start=1)]


def _errors(*objects: dict[str, object]) -> list[str]:
    return [e.reason for e in validate_rows(_rows(*objects)).errors]


# -- reading --------------------------------------------------------------------------------


def test_csv_rows_are_normalised(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "Example.COM.,Example Ltd,Anna Berg,Anna.Berg@Provider.Example,vip; mail-only;vip\n"
        "bücher.example,  Bücher   GmbH ,,,\n",
    )

    checked = validate_rows(read_inventory(path))

    assert checked.errors == []
    assert checked.records == [
        InventoryRecord(
            "example.com",
            "Example Ltd",
            "Anna Berg",
            "anna.berg@provider.example",
            ("mail-only", "vip"),
        ),
        InventoryRecord("xn--bcher-kva.example", "Bücher GmbH"),
    ]


def test_csv_header_is_forgiving_about_case_spaces_order_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffCustomer,Domain,Account Manager,account-manager-email\r\n"
        "Example Ltd,example.com,Anna,anna@provider.example\r\n".encode()
    )

    checked = validate_rows(read_inventory(path))

    assert checked.errors == []
    assert checked.records[0].account_manager_email == "anna@provider.example"


def test_csv_rows_and_lines_are_counted_as_people_see_them(tmp_path: Path) -> None:
    # Blank lines are skipped; a quoted cell may span lines.
    path = _csv(tmp_path, '\nok.example,A,,,\n"bad\ndomain",A,,,\n\n,A,,,\n')

    checked = validate_rows(read_inventory(path))

    assert [(e.row, e.line) for e in checked.errors] == [(2, 4), (3, 7)]
    assert str(checked.errors[1]) == "row 3 (line 7): domain is required"
    assert checked.rows == 3


def test_json_rows(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(
        json.dumps(
            [
                {"domain": "a.example", "customer": "A", "tags": ["x", "y"]},
                {"domain": "b.example", "customer": "B", "tags": "y;x", "account_manager": None},
                ["not", "an", "object"],
                {"domain": "c.example", "customer": 7},
                {"domain": "d.example", "customer": "D", "acount_manager": "typo"},
            ]
        )
    )

    checked = validate_rows(read_inventory(path))

    assert [r.tags for r in checked.records] == [("x", "y"), ("x", "y")]
    assert [(e.row, e.line, e.reason) for e in checked.errors] == [
        (3, None, "not an object"),
        (4, None, "customer must be a string, not int"),
        (5, None, "unknown field(s) acount_manager"),
    ]


def test_format_is_detected_from_the_content(tmp_path: Path) -> None:
    as_json = tmp_path / "inventory.txt"
    as_json.write_text('[{"domain": "a.example", "customer": "A"}]')
    as_csv = tmp_path / "inventory"
    as_csv.write_text(HEADER + "a.example,A,,,\n")

    assert len(read_inventory(as_json)) == len(read_inventory(as_csv)) == 1
    with pytest.raises(InventoryFileError, match="invalid JSON"):
        read_inventory(as_csv, "json")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty file"),
        ("header.csv", b"domain,owner\nexample.com,A\n", "missing column(s) customer"),
        ("unknown.csv", b"domain,customer,notes\n", "unknown column(s) 'notes'"),
        ("twice.csv", b"domain,customer,domain\n", "appears twice"),
        (
            "latin1.csv",
            HEADER.encode() + "bücher.example,Bücher,,,\n".encode("latin-1"),
            "not UTF-8",
        ),
        ("quote.csv", HEADER.encode() + b'"a.example,A,,,\n', "line 2"),
        ("broken.json", b'[{"domain": ', "invalid JSON at line 1"),
        ("object.json", b'{"domain": "a.example"}', "a list of objects"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InventoryFileError) as caught:
        read_inventory(path)
    assert message in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match="no such file"):
        read_inventory(tmp_path / "nope.csv")
    with pytest.raises(InventoryFileError, match="is a directory"):
        read_inventory(tmp_path)


# -- validating -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"customer": "A"}, "domain is required"),
        ({"domain": "  ", "customer": "A"}, "domain is required"),
        ({"domain": "a.example"}, "customer is required"),
        ({"domain": "192.0.2.1", "customer": "A"}, "is an IP address, not a domain"),
        ({"domain": "bad_.-example", "customer": "A"}, "domain: invalid host name"),
        ({"domain": "a" * 64 + ".example", "customer": "A"}, "invalid host name"),
        ({"domain": "a.example", "customer": "A" * 201}, "customer is longer than 200"),
        ({"domain": "a.example", "customer": "A\x07"}, "control characters"),
        ({"domain": "a.example", "customer": "A", "account_manager": "Anna"}, "give both"),
        (
            {"domain": "a.example", "customer": "A", "account_manager_email": "a@b.example"},
            "give both",
        ),
        (
            {
                "domain": "a.example",
                "customer": "A",
                "account_manager": "Anna",
                "account_manager_email": "anna@",
            },
            "account_manager_email: 'anna@' is not an e-mail address",
        ),
        ({"domain": "a.example", "customer": "A", "tags": "x" * 65}, "longer than 64"),
        ({"domain": "a.example", "customer": "A", "tags": ["a;b"]}, "must not contain ';'"),
        ({"domain": "a.example", "customer": "A", "tags": [1]}, "list of strings"),
    ],
)
def test_bad_rows_say_why(row: dict[str, object], reason: str) -> None:
    (error,) = _errors(row)
    assert reason in error


def test_more_cells_than_columns(tmp_path: Path) -> None:
    checked = validate_rows(read_inventory(_csv(tmp_path, "a.example,A,,,,extra\n")))
    assert [e.reason for e in checked.errors] == ["more cells than columns"]


def test_bad_rows_do_not_cost_the_good_ones() -> None:
    checked = validate_rows(
        _rows(
            {"domain": "a.example", "customer": "A"},
            {"domain": "not a domain", "customer": "A"},
            {"domain": "c.example", "customer": "C"},
        )
    )

    assert [r.domain for r in checked.records] == ["a.example", "c.example"]
    assert [(e.row, e.domain) for e in checked.errors] == [(2, "not a domain")]


def test_a_domain_listed_twice_keeps_the_first() -> None:
    errors = validate_rows(
        _rows(
            {"domain": "Example.com", "customer": "A"},
            {"domain": "example.com.", "customer": "B"},
        )
    ).errors
    assert [(e.row, e.reason) for e in errors] == [
        (2, "domain example.com already listed in row 1")
    ]


def test_account_managers_must_be_consistent() -> None:
    anna = {"account_manager": "Anna", "account_manager_email": "anna@provider.example"}
    bob = {"account_manager": "Bob", "account_manager_email": "bob@provider.example"}
    checked = validate_rows(
        _rows(
            {"domain": "a.example", "customer": "A", **anna},
            # the same customer without a manager: fine (says nothing)
            {"domain": "b.example", "customer": "A"},
            # another manager for the same customer: refused
            {"domain": "c.example", "customer": "A", **bob},
            # the same address under another name: refused
            {"domain": "d.example", "customer": "D", **anna, "account_manager": "Anna B."},
            {"domain": "e.example", "customer": "E", **bob},
        )
    )

    assert [r.domain for r in checked.records] == ["a.example", "b.example", "e.example"]
    assert [(e.row, e.reason) for e in checked.errors] == [
        (3, "customer 'A' has account manager anna@provider.example in row 1"),
        (4, "account manager anna@provider.example is named 'Anna' in row 1"),
    ]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Anna.Berg@Provider.Example", "anna.berg@provider.example"),
        ("ops+tls@bücher.example", "ops+tls@xn--bcher-kva.example"),
        ("o'brien@example.com", "o'brien@example.com"),
    ],
)
def test_valid_addresses(address: str, expected: str) -> None:
    assert validate_email(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "plain",
        "@example.com",
        "anna@",
        "anna@localhost",
        "an na@example.com",
        ".anna@example.com",
        "an..na@example.com",
        "anna@exa mple.com",
        "x" * 65 + "@example.com",
        "anna@-example.com",
    ],
)
def test_invalid_addresses(address: str) -> None:
    with pytest.raises(ValueError, match=r"e-mail|local part|dots|domain|host name|white space"):
        validate_email(address)


def test_tags() -> None:
    assert parse_tags(None) == ()
    assert parse_tags(" b ;a;; b ") == ("a", "b")
    assert parse_tags(["z", "a", "z"]) == ("a", "z")
    with pytest.raises(ValueError, match="more than 50"):
        parse_tags(";".join(f"t{i}" for i in range(51)))


# -- writing --------------------------------------------------------------------------------

RECORDS = [
    InventoryRecord("a.example", "A, Ltd", "Anna", "anna@provider.example", ("mail", "vip")),
    InventoryRecord("xn--bcher-kva.example", "Bücher GmbH"),
]


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_the_export_reads_back_as_the_same_records(tmp_path: Path, file_format: str) -> None:
    out = io.StringIO()
    assert write_inventory(RECORDS, out, file_format) == 2  # type: ignore[arg-type]
    path = tmp_path / f"export.{file_format}"
    path.write_text(out.getvalue(), encoding="utf-8")

    checked = validate_rows(read_inventory(path))

    assert checked.errors == []
    assert checked.records == RECORDS


def test_an_empty_export_is_valid() -> None:
    as_csv, as_json = io.StringIO(), io.StringIO()
    write_inventory([], as_csv, "csv")
    write_inventory([], as_json, "json")
    assert as_csv.getvalue() == HEADER
    assert json.loads(as_json.getvalue()) == []


# -- the fast path for plain names agrees with normalise_domain ------------------------------


def _via_rows(name: str) -> str | None:
    checked = validate_rows(_rows({"domain": name, "customer": "A"}))
    return checked.records[0].domain if checked.records else None


def _via_scanner(name: str) -> str | None:
    try:
        return normalise_domain(name)
    except TargetError:
        return None


@pytest.mark.parametrize(
    "name",
    [
        "Example.COM.",
        "ab--cd.example",
        "xn--bcher-kva.example",
        "xn--abc.example",
        "1.2.3.4",
        "123.example",
        "a-.example",
        "a_b.example",
        "a" * 63 + ".example",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4),
        "a..b",
        " a.example ",
        "[::1]",
    ],
)
def test_plain_names_normalise_like_the_scanner(name: str) -> None:
    assert _via_rows(name) == _via_scanner(name)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="aZ09-._xnü", min_size=1, max_size=24))
def test_any_name_normalises_like_the_scanner(name: str) -> None:
    assert _via_rows(name) == _via_scanner(name)
