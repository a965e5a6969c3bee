"""The shared upstream client: no cookie jar, URLs parsed once."""

from __future__ import annotations

import asyncio

import httpx

from routing.vendors import http


async def _cookie_server(seen: list[bytes]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            writer.write(
                b"HTTP/1.1 200 OK\r\nSet-Cookie: lb=vendor-a; Path=/\r\nContent-Length: 2\r\n"
                b"Content-Type: application/json\r\n\r\n{}"
            )
            await writer.drain()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def test_vendor_cookies_are_neither_kept_nor_sent():
    async def scenario() -> list[bytes]:
        seen: list[bytes] = []
        server = await _cookie_server(seen)
        port = server.sockets[0].getsockname()[1]
        try:
            pool = http.client()
            for _ in range(2):
                request = http.json_request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", {}, {})
                response = await pool.send(request)
                assert response.status_code == 200
            assert not list(pool.cookies.jar)
        finally:
            await http.close_loop_client()
            server.close()
            await server.wait_closed()
        return seen

    seen = asyncio.run(scenario())
    assert len(seen) == 2
    assert all(b"cookie" not in head.lower().replace(b"set-cookie", b"") for head in seen)


def test_urls_are_parsed_once_per_distinct_url():
    url = "http://127.0.0.1:9/v1/chat/completions?api-version=2024-10-21"
    first = http.parsed_url(url)
    assert first is http.parsed_url(url)
    assert first == httpx.URL(url)
    assert http.json_request("POST", url, {"a": 1}, {}).url == httpx.URL(url)
