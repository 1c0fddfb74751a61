"""A token gate in front of the app, for serving it beyond this machine.

``hwsearch app --address 0.0.0.0 --token T`` runs Streamlit on a free port of 127.0.0.1 and this
gate on the address asked for. The gate checks every request, page and websocket alike, before it
reaches Streamlit. It admits ``Authorization: Bearer T``, the cookie it sets, or ``?token=T``: that
one is answered with the cookie and a redirect that drops the token from the address bar. Anything
else gets a 401 with one line of text, and nothing of the app (no page, no script, no stream).
Tokens are compared in constant time. On loopback no gate is needed, and none runs.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from typing import Any

__all__ = ["COOKIE", "is_loopback", "serve_gate"]

COOKIE = "hwsearch_token"
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length"}


def is_loopback(address: str) -> bool:
    """Whether ``address`` (what ``--address`` was given) reaches this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _token_of(request: Any) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return str(auth.removeprefix("Bearer ").strip())
    return str(request.cookies.get(COOKIE) or request.query.get("token") or "")


def serve_gate(address: str, port: int, upstream_port: int, token: str) -> None:
    """Serve the gate on ``address:port`` in front of Streamlit on ``127.0.0.1:upstream_port``,
    until interrupted."""
    from aiohttp import ClientSession, WSMsgType, web

    upstream = f"http://127.0.0.1:{upstream_port}"

    async def handle(request: web.Request) -> web.StreamResponse:
        given = _token_of(request)
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return web.Response(status=401, text="hwsearch: this app needs its token (?token=..., or an "
                                                 "'Authorization: Bearer' header)\n")
        if request.query.get("token") and request.method == "GET":  # keep it in a cookie, off the address bar
            target = request.rel_url.without_query_params("token")
            response = web.HTTPFound(str(target))
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return response
        session: ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_HEADERS and k.lower() != "authorization"}
        url = upstream + str(request.rel_url)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, session, url.replace("http://", "ws://", 1), headers)
        async with session.request(request.method, url, headers=headers, data=await request.read(),
                                   allow_redirects=False) as up:
            body = await up.read()
            out = web.Response(status=up.status, body=body,
                               headers={k: v for k, v in up.headers.items() if k.lower() not in HOP_HEADERS})
            return out

    async def _websocket(request: web.Request, session: ClientSession, url: str, headers: dict) -> web.StreamResponse:
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        client = web.WebSocketResponse(protocols=protocols, max_msg_size=0)
        await client.prepare(request)
        forwarded = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
        async with session.ws_connect(url, headers=forwarded, protocols=protocols, max_msg_size=0) as server:
            async def pump(source: Any, sink: Any) -> None:
                async for msg in source:
                    if msg.type == WSMsgType.TEXT:
                        await sink.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await sink.send_bytes(msg.data)
                    else:
                        break
            done, pending = await asyncio.wait([asyncio.ensure_future(pump(client, server)),
                                                asyncio.ensure_future(pump(server, client))],
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        await client.close()
        return client

    async def start_session(app: web.Application) -> Any:
        app["session"] = ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    app = web.Application(client_max_size=1 << 30)
    app.cleanup_ctx.append(start_session)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host=address, port=port, print=None, handle_signals=True)
