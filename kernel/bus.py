"""The software bus: publish on a topic, subscribe with a bounded queue, receive with a timeout.

Topics are dotted names (`alerts.flood`, `hk.TB01`); a subscription may end in `*` to take a
whole family (`hk.*`). Messages are msgpack-able values up to `MAX_MESSAGE_BYTES` once packed;
each subscriber gets its own copy (decoded from the packed bytes, so no app can change what
another receives). A subscription's queue is bounded twice: `depth` messages and `max_bytes`
packed bytes (`MAX_QUEUE_BYTES` by default), so 10,000 queued messages of 1 MiB cannot pile
up. A message that would pass either bound is dropped for that subscriber only and counted
(`overflows`), as cFS pipes do. Delivery wakes the subscriber through the `notify` callback.

Topics are checked on an exact copy (`str.__str__`): a str subclass whose `__eq__` or
`startswith` lies never reaches a capability check.

Errors: OSError EINVAL (bad topic, bad depth or byte bound), EMSGSIZE (message too large or not
packable).
"""
from __future__ import annotations

import errno
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable


from orbitos.sim_hw.wire import encode, decode_body, FrameError

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_DEPTH = 10_000
MAX_QUEUE_BYTES = 4 * 1024 * 1024  # packed bytes waiting in one subscription's queue
TOPIC = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
PATTERN = re.compile(r"^([A-Za-z0-9_\-]+\.)*([A-Za-z0-9_\-]+|\*)$")


def check_topic(topic: Any, pattern: bool = False) -> str:
    """The topic as an exact str (a copy of a str subclass). Raises OSError(EINVAL) for a topic
    (or, with pattern, a subscription) that is malformed or not a str."""
    rule = PATTERN if pattern else TOPIC
    topic = str.__str__(topic) if issubclass(type(topic), str) else None
    if topic is None or len(topic) > 128 or not rule.fullmatch(topic):
        kind = "subscription pattern" if pattern else "topic"
        raise OSError(errno.EINVAL, f"{kind} must be dotted names of letters, digits, '_' or '-'"
                                    f"{' (a final * allowed)' if pattern else ''}, at most 128 "
                                    f"characters; got {'a non-string' if topic is None else repr(topic[:140])}")
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
    max_bytes: int = MAX_QUEUE_BYTES
    queue: deque = field(default_factory=deque)
    queued_bytes: int = 0
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

    def subscribe(self, pattern: str, depth: int, notify: Callable[[], None],
                  max_bytes: int = MAX_QUEUE_BYTES) -> Subscription:
        """A new subscription. Raises OSError(EINVAL) for a bad pattern, a depth not in
        1..MAX_DEPTH, or a byte bound below one message of MAX_MESSAGE_BYTES."""
        pattern = check_topic(pattern, pattern=True)
        if type(depth) is not int or not 1 <= depth <= MAX_DEPTH:
            raise OSError(errno.EINVAL, f"queue depth must be an integer in 1..{MAX_DEPTH}")
        if type(max_bytes) is not int or max_bytes < MAX_MESSAGE_BYTES + 68:
            raise OSError(errno.EINVAL, f"queue byte bound must be an integer >= {MAX_MESSAGE_BYTES + 68}")
        subscription = Subscription(pattern, depth, notify, max_bytes)
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
        topic = check_topic(topic)
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
                if len(subscription.queue) >= subscription.depth or \
                        subscription.queued_bytes + len(packed) > subscription.max_bytes:
                    subscription.overflows += 1
                    self.overflows += 1
                    continue
                subscription.queue.append((topic, packed, stamp, sender))
                subscription.queued_bytes += len(packed)
                self.delivered += 1
                woken.append(subscription.notify)
        for notify in woken:
            notify()
        return len(woken)

    def take(self, subscription: Subscription) -> dict[str, Any] | None:
        """The oldest queued message as {topic, data, time_utc_s, sender}, or None."""
        with self._lock:
            if not subscription.queue:
                return None
            topic, packed, stamp, sender = subscription.queue.popleft()
            subscription.queued_bytes -= len(packed)
            subscription.received += 1
        try:
            data = decode_body(packed[4:])["m"]
        except FrameError:  # cannot happen for what publish packed; kept total
            data = None
        return {"topic": topic, "data": data, "time_utc_s": stamp, "sender": sender}
