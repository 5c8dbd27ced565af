"""Real servers on 127.0.0.1 for tests/test_doctor.py.

- `SshServer`: an asyncssh server (random port, own event loop in a thread)
  that authenticates one client key and answers each exec'd command from a
  table per username ((rc, stdout, stderr[, seconds to hang first])) (the guest's user and the hypervisor's), recording every
  command it was sent.
- `KubeApi`: an HTTP server that serves JSON to the official `kubernetes`
  client by path, recording every method and path.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import asyncssh


class SshServer:
    def __init__(self, client_public_key: str, host_key: asyncssh.SSHKey):
        self.responses: dict[str, dict[str, tuple[int, str, str]]] = {}
        self.received: list[tuple[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        authorized = asyncssh.import_authorized_keys(client_public_key)

        async def start() -> Any:
            return await asyncssh.create_server(
                asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host_key],
                authorized_client_keys=authorized, process_factory=self._handle)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        user = process.get_extra_info("username")
        command = process.command or ""
        self.received.append((user, command))
        rc, out, err, *delay = self.responses.get(user, {}).get(command, (127, "", f"bash: {command.split()[0] if command else ''}: command not found\n"))
        if delay:  # a command that hangs (a wedged nvidia-smi)
            await asyncio.sleep(delay[0])
        process.stdout.write(out)
        process.stderr.write(err)
        process.exit(rc)

    def close(self) -> None:
        """Stop listening, end every connection and handler task (a hanging command's too) and wait for them,
        then stop and close the loop: nothing is left pending ("Task was destroyed but it is pending!")."""
        async def shut_down() -> None:
            self._server.close()
            await self._server.wait_closed()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if not self._loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(shut_down(), self._loop).result(10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
                self._loop.close()

    def pending_tasks(self) -> int:
        """Tasks left on the server's loop (0 once closed)."""
        return 0 if self._loop.is_closed() else len(asyncio.all_tasks(self._loop))


class KubeApi:
    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorization: set[str | None] = set()
        self.queries: list[tuple[str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                # Like the API server in front of Prometheus: `%3A` in the service name is decoded, an encoded `/` is not.
                path = urlsplit(self.path).path.replace("%3A", ":")
                api.requests.append(("GET", path))
                api.authorization.add(self.headers.get("Authorization"))
                api.queries.append((path, urlsplit(self.path).query))
                if path not in api.routes:
                    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                              "message": f"the server could not find the requested resource ({path})"}
                    return self._reply(404, json.dumps(status).encode())
                body = api.routes[path]
                if isinstance(body, str):
                    return self._reply(200, body.encode(), "text/plain")
                return self._reply(200, json.dumps(body).encode())

            def _refuse(self) -> None:
                api.requests.append((self.command, urlsplit(self.path).path))
                self._reply(405, b"{}")

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def kubeconfig(self, token: str) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        })

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
