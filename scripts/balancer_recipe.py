"""Runs the balancer recipe of docs/operations.md section 7 and prints what each step showed.

    python scripts/balancer_recipe.py

Needs HAProxy (Debian: apt-get install haproxy) and the ray extra. On this host only:
one Ray cluster, two servers (`--max-sessions 1 --ray-address ...`) sharing the colorblob
deployment, and HAProxy with docs/balancer/haproxy.cfg in front, all on 127.0.0.1. Then:

1. /readyz through the proxy;
2. two WebRTC offers through the proxy land on different servers (least connections, and the
   second server's 503 at capacity is retried on the other), and both sessions get tracks;
3. a third offer gets the 503 `at_capacity` error: every server is full;
4. session calls that carry X-Livetrack-Server reach the server that holds the session;
5. the health channel (a WebSocket) works through the proxy and shows the plugin on Ray;
6. a server that stops leaves the proxy's rotation (its /readyz check fails) and offers go
   to the other.

Exit status 0 when every step held.

Ray advertises the host's own address even when told 127.0.0.1; to keep every packet on
loopback (as the tests do), run it in a network namespace with only `lo`, as root:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python scripts/balancer_recipe.py'
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets
from bench_scaleout import _env, ray_cluster, wait_ready
from client import EncodedTrack, StreamClient, encode_vp8, pattern
from loopback import free_port

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "docs" / "balancer" / "haproxy.cfg"


def step(text: str) -> None:
    print(f"- {text}", flush=True)


def start_server(plugins: Path, address: str, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [sys.executable, "-m", "app", f"--port={port}", f"--plugins-dir={plugins}", "--max-sessions=1"]
    command += ["--ice-address=127.0.0.1", "--gpu-policy=cpu", f"--ray-address={address}", "--log-level=WARNING"]
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return url, process


async def offer(proxy: str, packets: list[bytes]) -> tuple[StreamClient, str]:
    stream = StreamClient(proxy, "colorblob", EncodedTrack(packets, 15.0))
    response = await stream.start()
    return stream, response.headers["x-livetrack-server"]


async def scenario(proxy: str, ws_proxy: str, servers: dict[str, subprocess.Popen[bytes]]) -> None:
    packets = encode_vp8(pattern(320, 240), 15.0, 60)
    async with httpx.AsyncClient(timeout=30) as http:
        ready = await http.get(f"{proxy}/readyz")
        assert ready.status_code == 200, ready.text
        step(f"GET /readyz through the proxy: {ready.status_code} {ready.text.strip()}")

        first, served_first = await offer(proxy, packets)
        second, served_second = await offer(proxy, packets)
        assert {served_first, served_second} == {"a", "b"}, (served_first, served_second)
        step(f"two offers through the proxy: answered by server {served_first} and server {served_second}")
        for stream in (first, second):
            await stream.wait_for(lambda s=stream: len(s.of_type("tracks")) >= 10, 30, "tracks")  # type: ignore[misc]
        boxes = [s.of_type("tracks")[-1]["tracks"][0]["box"] for s in (first, second)]
        step(f"both sessions get tracks over WebRTC (last boxes {boxes[0]} and {boxes[1]})")

        third = StreamClient(proxy, "colorblob", EncodedTrack(packets, 15.0))
        try:
            await third.start()
            raise AssertionError("a third offer was accepted with every server full")
        except httpx.HTTPStatusError as exc:
            body = exc.response.json()
            assert exc.response.status_code == 503, exc.response.text
            step(f"a third offer, every server full: {exc.response.status_code} {json.dumps(body)}")
        finally:
            await third.close()

        for stream, name in ((first, served_first), (second, served_second)):
            response = await http.get(f"{proxy}/v1/sessions/{stream.session_id}", headers={"X-Livetrack-Server": name})
            assert response.status_code == 200, response.text
            summary = response.json()
            step(
                f"GET /v1/sessions/{stream.session_id} with X-Livetrack-Server: {name}: 200, "
                f"state {summary['state']}, frames_processed {summary['frames_processed']}"
            )

        async with websockets.connect(f"{ws_proxy}/v1/ws/health") as socket:
            snapshot = json.loads(await asyncio.wait_for(socket.recv(), 10))
            [plugin] = snapshot["payload"]["plugins"]
            assert snapshot["type"] == "snapshot" and plugin["backend"] == "ray", snapshot
            step(
                f"health channel through the proxy: {snapshot['type']}, {plugin['name']} {plugin['state']} "
                f"backend {plugin['backend']} replicas {plugin['replicas']}"
            )
        for stream in (first, second):
            await stream.close()

        servers["a"].send_signal(signal.SIGTERM)
        servers["a"].wait(60)
        served = []
        for _ in range(4):
            response = await http.get(f"{proxy}/v1/plugins")
            served.append(response.headers.get("x-livetrack-server"))
            assert response.status_code == 200, response.text
        assert served == ["b"] * 4, served
        step(f"server a stopped: four requests through the proxy answered by {served}")


def main() -> int:
    if shutil.which("haproxy") is None:
        raise SystemExit("haproxy is not installed (Debian: apt-get install haproxy)")
    with tempfile.TemporaryDirectory(prefix="balancer-") as temp:
        folder = Path(temp)
        plugins = folder / "plugins"
        plugins.mkdir()
        shutil.copytree(REPO / "plugins" / "colorblob", plugins / "colorblob")
        with ray_cluster() as address:
            step(f"Ray cluster at {address}")
            url_a, server_a = start_server(plugins, address, folder / "a.log")
            url_b, server_b = start_server(plugins, address, folder / "b.log")
            step(f"servers a ({url_a}) and b ({url_b}), --max-sessions 1, sharing livetrack-colorblob")
            proxy_port = free_port()
            env = dict(os.environ)
            env.update(
                LT_PROXY_BIND=f"127.0.0.1:{proxy_port}",
                LT_SERVER_A=url_a.removeprefix("http://"),
                LT_SERVER_B=url_b.removeprefix("http://"),
            )
            proxy_log = folder / "haproxy.log"
            with proxy_log.open("wb") as out:
                haproxy = subprocess.Popen(["haproxy", "-f", str(CONFIG), "-db"], env=env, stdout=out, stderr=out)
            try:
                proxy = f"http://127.0.0.1:{proxy_port}"
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{proxy}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.3)
                step(f"HAProxy {CONFIG.relative_to(REPO)} on {proxy}")
                asyncio.run(scenario(proxy, f"ws://127.0.0.1:{proxy_port}", {"a": server_a, "b": server_b}))
            finally:
                haproxy.terminate()
                haproxy.wait(10)
                for process in (server_a, server_b):
                    if process.poll() is None:
                        process.terminate()
                        process.wait(60)
                # HAProxy's own account of the offers: status, and the retries field (the last of the
                # five connection counters) shows a 503 at capacity sent on to the other server.
                step("HAProxy's log of the offers:")
                for line in proxy_log.read_text(errors="replace").splitlines():
                    if "/v1/webrtc/offer" in line:
                        print(f"    {line}")
    print("every step held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
