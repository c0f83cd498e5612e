import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.lsn import format_lsn, lsn_diff, parse_lsn


@pytest.mark.parametrize(
    ("text", "position"),
    [("0/0", 0), ("0/3000148", 0x3000148), ("16/B374D848", (0x16 << 32) | 0xB374D848), ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1)],
)
def test_parse_and_format_round_trip(text, position):
    assert parse_lsn(text) == position
    assert format_lsn(position) == text


def test_parse_accepts_lower_case_and_spaces():
    assert parse_lsn(" 16/b374d848\n") == parse_lsn("16/B374D848")


@pytest.mark.parametrize("bad", ["", "16", "16/", "/1", "G/1", "1/123456789", "1-2", None])
def test_parse_rejects_what_is_not_an_lsn(bad):
    with pytest.raises(ValueError, match="not a PostgreSQL LSN"):
        parse_lsn(bad)


def test_diff_crosses_the_32_bit_boundary():
    assert lsn_diff("1/0", "0/FFFFFFFF") == 1
    assert lsn_diff("0/FFFFFFFF", "1/0") == -1


def test_format_rejects_out_of_range():
    with pytest.raises(ValueError):
        format_lsn(-1)
    with pytest.raises(ValueError):
        format_lsn(1 << 64)
