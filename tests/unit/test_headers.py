import pytest

from mailbot.headers import (
    extract_message_id,
    header_block,
    message_id_key,
    normalize_message_id,
    split_message_ids,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<Abc.1@Example.COM>", "Abc.1@example.com"),
        ("  <x@y>  ", "x@y"),
        ("<>", None),
        ("", None),
        (None, None),
        ("bare@Host.ORG", "bare@host.org"),
        ("<a\x00b@c>", "ab@c"),
        ("junk before <id@host> junk after", "id@host"),
    ],
)
def test_normalize_message_id(value, expected):
    assert normalize_message_id(value) == expected


def test_split_message_ids_keeps_order_and_drops_duplicates():
    refs = "<a@x> <b@y>\r\n <a@x> garbage <> <c@Z.org>"
    assert split_message_ids(refs) == ("a@x", "b@y", "c@z.org")
    assert split_message_ids(None) == ()


def test_extract_message_id_reads_only_the_header_block():
    raw = b"Subject: x\r\nMessage-Id:\r\n <folded@Example.org>\r\n\r\nMessage-ID: <body@x>\r\n"
    assert extract_message_id(raw) == "folded@example.org"
    assert extract_message_id(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n") is None
    assert extract_message_id(b"Message-ID: <>\r\n\r\n") is None
    assert extract_message_id(b"\xff\xfe garbage") is None


def test_header_block_is_capped():
    raw = b"X: " + b"a" * 600_000 + b"\r\n\r\nbody"
    assert len(header_block(raw)) == 256 * 1024


def test_absurd_message_id_gets_a_fixed_length_key():
    long_id = "x" * 2000 + "@example.org"
    assert len(message_id_key(long_id)) == 64
    assert message_id_key(long_id) != message_id_key(long_id + "x")
