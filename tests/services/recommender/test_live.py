"""Server-Sent Events: a stream pushes new recommendations after the shopper clicks."""

import json
import queue
import threading
import time

import httpx
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def _events(url: str, out: "queue.Queue[dict]", stop: threading.Event) -> None:
    try:
        _read(url, out, stop)
    except httpx.HTTPError:
        if not stop.is_set():
            raise


def _read(url: str, out: "queue.Queue[dict]", stop: threading.Event) -> None:
    with httpx.stream("GET", url, timeout=httpx.Timeout(20.0)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "recommendations":
                out.put(json.loads(line[6:]))


def test_stream_pushes_fresh_recommendations_after_a_click(served, shop):
    base, live = served
    received: queue.Queue[dict] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=_events, args=(f"{base}/v1/users/hal/recommendations/stream?k=6", received, stop), daemon=True)
    reader.start()
    first = received.get(timeout=15)
    assert first["user_id"] == "hal" and len(first["items"]) == 6
    deadline = time.monotonic() + 10
    while not live.ready.is_set() and time.monotonic() < deadline:  # subscribed to Redis before we click
        time.sleep(0.02)
    assert live.ready.is_set()

    clicked = first["items"][0]["product_id"]
    shop.click("hal", clicked, "click")  # the profiles worker's handler: writes Redis and publishes the change
    second = received.get(timeout=10)
    ids = [i["product_id"] for i in second["items"]]
    assert clicked not in ids  # seen now, so left out
    assert any(i["reason"].startswith(("Similar to", "New in")) for i in second["items"])  # no pictures here: no "Looks like"
    stop.set()
