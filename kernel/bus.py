"""The software bus: publish on a topic, subscribe with a bounded queue, receive with a timeout.

Topics are dotted names (`alerts.flood`, `hk.TB01`); a subscription may end in `*` to take a
whole family (`hk.*`). Messages are msgpack-able values up to `MAX_MESSAGE_BYTES` once packed;
each subscriber gets its own copy (decoded from the packed bytes, so no app can change what
another receives). A full queue drops the new message for that subscriber only and counts it
(`overflows`), as cFS pipes do. Delivery wakes the subscriber through the `notify` callback.

Errors: OSError EINVAL (bad topic, bad depth), EMSGSIZE (message too large or not packable).
"""
from __future__ import annotations

import errno
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable


from sim_hw.wire import encode, decode_body, FrameError

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_DEPTH = 10_000
TOPIC = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
PATTERN = re.compile(r"^([A-Za-z0-9_\-]+\.)*([A-Za-z0-9_\-]+|\*)$")


def check_topic(topic: Any, pattern: bool = False) -> str:
    """Raises OSError(EINVAL) for a topic (or, with pattern, a subscription) that is malformed."""
    rule = PATTERN if pattern else TOPIC
    if not isinstance(topic, str) or len(topic) > 128 or not rule.match(topic):
        kind = "subscription pattern" if pattern else "topic"
        raise OSError(errno.EINVAL, f"{kind} must be dotted names of letters, digits, '_' or '-'"
                                    f"{' (a final * allowed)' if pattern else ''}, at most 128 "
                                    f"characters; got {topic!r}")
    return topic


def topic_matches(pattern: str, topic: str) -> bool:
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


@dataclass
class Subscription:
    pattern: str
    depth: int
    notify: Callable[[], None]
    queue: deque = field(default_factory=deque)
    received: int = 0
    overflows: int = 0
    closed: bool = False


class SoftwareBus:
    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0
        self.delivered = 0
        self.overflows = 0

    def subscribe(self, pattern: str, depth: int, notify: Callable[[], None]) -> Subscription:
        check_topic(pattern, pattern=True)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise OSError(errno.EINVAL, f"queue depth must be an integer in 1..{MAX_DEPTH}, got {depth!r}")
        subscription = Subscription(pattern, depth, notify)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscription.closed = True
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def publish(self, topic: str, message: Any, sender: str) -> int:
        """Deliver to every matching subscription; returns how many got it."""
        check_topic(topic)
        try:
            packed = encode({"m": message}, MAX_MESSAGE_BYTES + 64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise OSError(errno.EMSGSIZE, f"message on {topic!r} cannot be sent: {exc}") from None
        stamp = self.now()
        woken = []
        with self._lock:
            self.published += 1
            for subscription in self._subscriptions:
                if not topic_matches(subscription.pattern, topic):
                    continue
                if len(subscription.queue) >= subscription.depth:
                    subscription.overflows += 1
                    self.overflows += 1
                    continue
                subscription.queue.append((topic, packed, stamp, sender))
                self.delivered += 1
                woken.append(subscription.notify)
        for notify in woken:
            notify()
        return len(woken)

    @staticmethod
    def take(subscription: Subscription) -> dict[str, Any] | None:
        """The oldest queued message as {topic, data, time_utc_s, sender}, or None."""
        if not subscription.queue:
            return None
        topic, packed, stamp, sender = subscription.queue.popleft()
        subscription.received += 1
        try:
            data = decode_body(packed[4:])["m"]
        except FrameError:  # cannot happen for what publish packed; kept total
            data = None
        return {"topic": topic, "data": data, "time_utc_s": stamp, "sender": sender}
