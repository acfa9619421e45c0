"""Link security for inter-satellite frames, in the spirit of CCSDS SDLS: authenticated encryption
per link session, keys from X25519 agreement, anti-replay sequence numbers.

Each satellite has an X25519 identity. Two satellites derive the session key of their link with
X25519 and HKDF-SHA256 (salt: the link's session id; info: both names in order), one key per
direction. A frame is sealed with AES-256-GCM: the nonce is the 4-byte session id and an 8-byte
sequence number. The header travels in clear and is authenticated as associated data: the link
(from, to, session, sequence) and the message it carries (its origin, final destination,
message id and port, a `MessageBinding`), so that relays can read where a frame goes and nobody
can move a frame to another link, session, destination or port without the tag failing.

Frame header (`HEADER_BYTES` = 86 bytes, big-endian)::

    link from (16, name, NUL-padded) | link to (16) | session id (u32) | sequence (u64)
    | origin (16) | final destination (16) | message id (u64) | port (u16)

then the AES-GCM ciphertext of the payload with its 16-byte tag.
A receiver refuses a frame that does not authenticate (tampered, wrong key) and one whose
sequence number it has seen already or that is older than its anti-replay window (replayed),
and counts both. The window (64 sequence numbers behind the highest seen, a bitmap, as in IPsec
and SDLS) lets frames sealed in one order arrive in another, as they do when messages meet on a
link from different paths. Everything is
`cryptography`'s; nothing is home-made.

Errors: `FrameRejected` (a ValueError) with `reason` "tampered" or "replayed"; ValueError for
a `MessageBinding` whose names, id or port do not fit the header.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orbitos.runtime.replay_window import REPLAY_WINDOW, ReplayWindow

_HEADER = struct.Struct(">16s16sIQ16s16sQH")  # link from, to, session, sequence; origin, destination, id, port
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16


class FrameRejected(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MessageBinding:
    """What a frame says about the message it carries, authenticated with it: the satellite it
    was sent from, the one it is for, the message id the sending network gave it, the port."""

    origin: str
    destination: str
    message_id: int
    port: int

    def __post_init__(self) -> None:
        for field, name in (("origin", self.origin), ("destination", self.destination)):
            if not isinstance(name, str) or not name or len(name.encode()) > 16:
                raise ValueError(f"{field} {name!r} must be a satellite name of 1-16 bytes")
        if not isinstance(self.message_id, int) or not 0 <= self.message_id < 1 << 64:
            raise ValueError(f"message id {self.message_id!r} must be an integer in [0, 2**64)")
        if not isinstance(self.port, int) or not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port!r} must be an integer in [0, 65535]")


@dataclass(frozen=True)
class OpenedFrame:
    """An authentic, fresh frame: its link sequence number, its message binding, its payload."""

    sequence: int
    binding: MessageBinding
    payload: bytes


def _name(field: bytes) -> str:
    """A NUL-padded name field. Raises FrameRejected("tampered") when it is not UTF-8."""
    try:
        return field.rstrip(b"\0").decode()
    except UnicodeDecodeError:
        raise FrameRejected("tampered", "frame header holds a name that is not UTF-8") from None


@dataclass(frozen=True)
class SealedFrame:
    header: bytes
    ciphertext: bytes

    @property
    def size_bytes(self) -> int:
        return len(self.header) + len(self.ciphertext)


class SatelliteIdentity:
    """A satellite's X25519 key pair."""

    def __init__(self, name: str, private_key: X25519PrivateKey | None = None) -> None:
        if not name or len(name.encode()) > 16:
            raise ValueError(f"satellite name {name!r} must be 1-16 bytes for the frame header")
        self.name = name
        self._private = private_key or X25519PrivateKey.generate()

    @property
    def public_key(self) -> X25519PublicKey:
        return self._private.public_key()

    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def shared_secret(self, peer: X25519PublicKey) -> bytes:
        return self._private.exchange(peer)


class LinkSession:
    """One direction of one link session: sender side seals, receiver side opens."""

    def __init__(self, source: str, target: str, session_id: int, key: bytes) -> None:
        self.source = source
        self.target = target
        self.session_id = session_id
        self._aead = AESGCM(key)
        self._next_sequence = 0
        self._window = ReplayWindow(size=REPLAY_WINDOW)
        self._lock = threading.Lock()

    def seal(self, payload: bytes, binding: MessageBinding) -> SealedFrame:
        """The payload sealed with the next sequence number of this direction, its header
        binding the link and the message (a `MessageBinding`, checked when it was made). Seal a
        frame when it leaves: the receiver's replay window expects frames in about the order
        they were sealed."""
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
        header = _HEADER.pack(self.source.encode(), self.target.encode(), self.session_id, sequence,
                              binding.origin.encode(), binding.destination.encode(), binding.message_id,
                              binding.port)
        nonce = struct.pack(">IQ", self.session_id, sequence)
        return SealedFrame(header, self._aead.encrypt(nonce, payload, header))

    def open(self, frame: SealedFrame) -> OpenedFrame:
        """The payload and binding of an authentic, fresh frame of this link direction. Raises
        FrameRejected "tampered" (malformed, another link or session, fails authentication)
        or "replayed" (seen already, or older than the replay window)."""
        if not isinstance(frame, SealedFrame) or not isinstance(frame.header, bytes) \
                or not isinstance(frame.ciphertext, bytes):
            raise FrameRejected("tampered", f"not a sealed frame: {type(frame).__name__}")
        try:
            (link_from, link_to, session_id, sequence, origin, destination, message_id,
             port) = _HEADER.unpack(frame.header)
        except struct.error:
            raise FrameRejected("tampered", f"frame header is malformed ({len(frame.header)} bytes, "
                                            f"{HEADER_BYTES} expected)") from None
        if session_id != self.session_id:
            raise FrameRejected("tampered", f"frame of session {session_id} on session {self.session_id}")
        if (_name(link_from), _name(link_to)) != (self.source, self.target):
            raise FrameRejected("tampered", f"frame of link {_name(link_from)}->{_name(link_to)} on "
                                            f"{self.source}->{self.target}")
        nonce = struct.pack(">IQ", session_id, sequence)
        try:
            payload = self._aead.decrypt(nonce, frame.ciphertext, frame.header)
        except InvalidTag:
            raise FrameRejected("tampered", f"frame {sequence} on {self.source}->{self.target} "
                                            "does not authenticate") from None
        try:
            binding = MessageBinding(_name(origin), _name(destination), message_id, port)
        except ValueError as exc:  # authentic yet malformed: only a faulty sender seals this
            raise FrameRejected("tampered", f"frame {sequence} on {self.source}->{self.target}: {exc}") from None
        with self._lock:
            if self._window.verdict(sequence) is not None:
                raise FrameRejected("replayed", f"frame {sequence} on {self.source}->{self.target} "
                                                f"already seen or older than the replay window "
                                                f"(highest {self._window.highest})")
            self._window.accept(sequence)
        return OpenedFrame(sequence, binding, payload)


def session_keys(own: SatelliteIdentity, peer_name: str, peer_public: X25519PublicKey,
                 session_id: int) -> tuple[bytes, bytes]:
    """(key for own -> peer, key for peer -> own) of a link session, computed from this side's
    private key and the peer's public key alone; the peer computes the same two keys."""
    secret = own.shared_secret(peer_public)
    low, high = sorted((own.name, peer_name))
    keys = HKDF(algorithm=hashes.SHA256(), length=64, salt=struct.pack(">I", session_id),
                info=f"orbitos-isl/{low}|{high}".encode()).derive(secret)
    low_to_high, high_to_low = keys[:32], keys[32:]
    return (low_to_high, high_to_low) if own.name == low else (high_to_low, low_to_high)


def establish(a: SatelliteIdentity, b: SatelliteIdentity, session_id: int) -> tuple[LinkSession, LinkSession]:
    """The two ends of the a->b direction of a link session: (a's sealing end, b's opening end),
    each keyed by its own side's agreement."""
    a_to_b, _ = session_keys(a, b.name, b.public_key, session_id)
    _, b_receives = session_keys(b, a.name, a.public_key, session_id)
    return LinkSession(a.name, b.name, session_id, a_to_b), LinkSession(a.name, b.name, session_id, b_receives)
