"""The text the scripts give numbers (common.lua `int`), in a real Redis: exact for every
number, whatever its memo holds. The memo keeps the text of the numbers formatted, in two
generations, so these tests format more numbers than it holds and ask again for ones it has
dropped. The probe runs as a script (EVALSHA), whose memo lasts one call; in the function
library it lasts across calls, and every script call of the suite goes through it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis

from shared.keys import Keys
from shared.lua_source import assemble

PROBE = """
--- @include "common"
local out = {}
for i = 4, #ARGV do
  local x = tonumber(ARGV[i])
  if ARGV[i] == 'nan' then x = 0 / 0 end
  out[#out + 1] = int(x)
end
return out
"""

# More numbers than the memo's two generations hold (2 x 512).
MANY = 1500


@pytest.fixture
def lua_int(redis_url: str) -> Iterator[Any]:
    client = SyncRedis.from_url(redis_url)
    script = client.register_script(assemble("probe", PROBE))
    yield lambda *xs: [
        t.decode() for t in script(keys=[Keys().pending], args=["", 1000, 1000, *xs])
    ]
    client.close()


def expected(x: float) -> str:
    """What `int` promises: a C integer for a whole number below 2^53, else rounded."""
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return f"{x:.0f}"


def test_whole_numbers_are_written_in_full_without_an_exponent(lua_int: Any) -> None:
    numbers = [0, 1, -1, 59_999, 1_796_588_316_776, 8_356_288_371_097_621, 2**53 - 1]
    assert lua_int(*map(str, numbers)) == [str(n) for n in numbers]


def test_other_numbers_are_rounded_as_before(lua_int: Any) -> None:
    # Each beside the whole number it rounds to or from: the memo keeps them apart.
    numbers = ["1.5", "1", "2.5", "2", "-0.4", "0.5e3", str(2.0**60), "123456.789", "123457"]
    assert lua_int(*numbers) == [expected(float(x)) for x in numbers]


def test_a_number_repeated_keeps_its_text(lua_int: Any) -> None:
    now = "1796588316776"
    assert lua_int(now, "7", now, "7", now) == [now, "7", now, "7", now]
    assert lua_int(now, "7") == [now, "7"]


def test_numbers_the_memo_has_dropped_are_formatted_again_exactly(lua_int: Any) -> None:
    # 1,500 distinct numbers pass through both generations; the first ones are gone from the
    # memo by the end, so asking again formats them afresh, and those still held come from it.
    numbers = [str(1_796_588_316_776 + 997 * i) for i in range(MANY)]
    again = [*numbers[:10], *numbers[-10:]]
    assert lua_int(*numbers, *again) == [*numbers, *again]
    assert lua_int(*[f"{i}.5" for i in range(MANY)]) == [f"{i + 0.5:.0f}" for i in range(MANY)]


def test_nan_is_formatted_and_leaves_the_memo_working(lua_int: Any) -> None:
    [nan, after] = lua_int("nan", "42")
    assert nan.endswith("nan")
    assert after == "42"
