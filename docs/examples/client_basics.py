"""The HTTP client: requests, options, response dicts and errors.

Run it with ``python docs/examples/client_basics.py``: it starts a server on a free
port of 127.0.0.1, makes a few requests with aleph_tx's client, checks the answers,
closes the server and exits.
"""

import json
from http.cookiejar import CookieJar
from typing import Any

from twisted.internet import task

from aleph_tx import byte_streams as bs
from aleph_tx import deferred as dd
from aleph_tx import http
from aleph_tx.errors import ClientResponseError


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    """Echo what the client sent, as JSON; a few special paths."""
    if req["uri"] == "/missing":
        return {"status": 404, "body": "no such thing"}
    if req["uri"] == "/old":
        return {"status": 301, "headers": {"location": "/new"}}
    if req["uri"] == "/login":
        return {"status": 200, "headers": {"set-cookie": "session=s3cr3t; Path=/"}}
    body = await bs.collect_str(req["body"]) if req["body"] is not None else ""
    seen = {
        "method": req["request_method"],
        "uri": req["uri"],
        "query": req["query_string"],
        "headers": req["headers"],
        "body": body,
    }
    return {"status": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(seen)}


async def main(reactor: Any) -> None:
    server = http.start_server(handler, port=0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    try:
        # The response is a dict; the body is bytes unless as_ says otherwise.
        resp = await http.get(url + "/hello")
        assert resp["status"] == 200
        assert resp["headers"]["content-type"] == "application/json"
        assert json.loads(bs.to_str(resp["body"]))["uri"] == "/hello"

        # Query parameters, headers, a JSON body, and a JSON answer.
        resp = await http.post(
            url + "/things",
            query_params={"page": 2},
            headers={"x-request-id": "42"},
            json={"name": "aleph"},
            as_="json",
        )
        seen = resp["body"]
        assert seen["method"] == "post" and seen["query"] == "page=2"
        assert seen["headers"]["x-request-id"] == "42"
        assert json.loads(seen["body"]) == {"name": "aleph"}

        # Forms and basic auth.
        resp = await http.put(url + "/form", form_params={"a": "1 2"}, basic_auth=("me", "pw"), as_="json")
        assert resp["body"]["body"] == "a=1+2"
        assert resp["body"]["headers"]["authorization"].startswith("Basic ")

        # Status >= 400 fails with ClientResponseError; its response is read like any other.
        try:
            await http.get(url + "/missing", as_="text")
            raise AssertionError("expected a ClientResponseError")
        except ClientResponseError as e:
            assert e.response["status"] == 404
            assert e.response["body"] == "no such thing"
        resp = await http.get(url + "/missing", throw_exceptions=False)
        assert resp["status"] == 404

        # Redirects are followed (301/302/303 become GET); cookies need a jar.
        resp = await http.post(url + "/old", body=b"data", as_="json")
        assert resp["body"]["uri"] == "/new" and resp["body"]["method"] == "get"
        jar = CookieJar()
        await http.get(url + "/login", cookie_jar=jar)
        resp = await http.get(url + "/me", cookie_jar=jar, as_="json")
        assert resp["body"]["headers"]["cookie"] == "session=s3cr3t"
    finally:
        await server.close()
    print("client_basics: ok")


if __name__ == "__main__":
    task.react(lambda reactor: dd.to_deferred(dd.timeout(dd.to_deferred(main(reactor)), 30)))
