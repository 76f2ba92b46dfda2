"""Master URLs are parsed strictly, so a typo stops a role at start-up instead of being retried for ever."""

from __future__ import annotations

import pytest

from common.masterclient import MasterAddress, master_address, parse_master_url


@pytest.mark.parametrize("url,address", [
    ("http://127.0.0.1:8000", MasterAddress("http", "127.0.0.1", 8000)),
    ("http://hub.example:9000/RPC2", MasterAddress("http", "hub.example", 9000)),
    ("http://[::1]:8001", MasterAddress("http", "::1", 8001)),
    ("http://master", MasterAddress("http", "master", 8000)),
    ("https://master.example", MasterAddress("https", "master.example", 443)),
])
def test_good_urls(url, address):
    assert master_address(url) == address
    assert parse_master_url(url) == (address.host, address.port)


def test_the_base_url_drops_the_path_and_brackets_ipv6():
    assert master_address("http://[::1]:8001/RPC2").base_url == "http://[::1]:8001"
    assert master_address("https://m").base_url == "https://m:443"


@pytest.mark.parametrize("url,words", [
    ("not-a-url", "must look like http://HOST:PORT"),
    ("127.0.0.1:8000", "must look like"),
    ("localhost:8000", "must look like"),
    ("ftp://x", "must look like"),
    ("http://", "must look like"),
    ("http://bad host:8000", "must look like"),
    ("http://under_score!:8000", "must look like"),
    ("http://h:0", "bad port"),
    ("http://h:70000", "bad port"),
    ("http://h:port", "bad port"),
])
def test_bad_urls_are_refused_with_one_line(url, words):
    with pytest.raises(ValueError, match=words) as e:
        master_address(url)
    assert "\n" not in str(e.value)
