"""The binary batch body: round trips and garbage."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import batch
from common.errors import DecodeError


@given(st.lists(st.binary(max_size=3000), max_size=20), st.dictionaries(st.text(max_size=5), st.integers(), max_size=5))
def test_round_trip(blobs, extra):
    meta = {k: v for k, v in extra.items() if k != "sizes"}
    out_meta, out_blobs = batch.unpack(batch.pack(meta, blobs))
    assert [bytes(b) for b in out_blobs] == blobs
    assert {k: v for k, v in out_meta.items() if k != "sizes"} == meta


@given(st.binary(max_size=300))
def test_garbage_raises_decode_error_only(data):
    try:
        batch.unpack(data)
    except DecodeError:
        pass


@pytest.mark.parametrize("body", [
    b"", b"FHB1", b"XXXX\x00\x00\x00\x02{}", b"FHB1\x00\x00\x00\x02{}", b"FHB1\xff\xff\xff\xff{}",
    b'FHB1\x00\x00\x00\x0c{"sizes":[5]}abc', b'FHB1\x00\x00\x00\x0d{"sizes":[-1]}', b"FHB1\x00\x00\x00\x02[]",
])
def test_malformed_bodies(body):
    with pytest.raises(DecodeError):
        batch.unpack(body)
