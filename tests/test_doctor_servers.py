"""The doctor tests' SSH server ends cleanly: no handler task left pending when it closes (issue 23)."""

from __future__ import annotations

import asyncio
import gc
import warnings

import asyncssh

from tests.support.doctor_servers import SshServer


def test_closing_the_ssh_server_ends_a_hanging_command(capfd):
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    server = SshServer(client_key.export_public_key().decode(), host_key)
    server.responses = {"ubuntu": {"hang": (0, "", "", 3600)}}

    async def hang() -> None:
        async with asyncssh.connect("127.0.0.1", server.port, username="ubuntu", client_keys=[client_key],
                                    known_hosts=None) as conn:
            try:
                await asyncio.wait_for(conn.run("hang"), 1)
            except asyncio.TimeoutError:
                pass
            loop_tasks = server.pending_tasks()
            assert loop_tasks > 0  # the handler is still sleeping on the server's loop
            server.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asyncio.run(hang())
    assert server.pending_tasks() == 0
    gc.collect()
    assert "Task was destroyed but it is pending" not in capfd.readouterr().err
