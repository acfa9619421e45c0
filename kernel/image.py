"""Signed app images: a manifest and Python code, signed with Ed25519.

An app is a directory with `manifest.toml` and its `.py` files. `build_image(dir, key)` makes an
image: one msgpack document

    {"format": "orbitos-app-image", "version": 1, "manifest": {...}, "code": {"app.py": b"..."},
     "signer": KEY_ID, "signature": 64 bytes}

The signature covers the canonical bytes of ["orbitos-app-image/1", manifest as sorted JSON,
[[path, code], ...] sorted by path]: changing any byte of the manifest or the code breaks it.
`verify_image(data, keyring)` checks format, signer and signature before anything is loaded,
then that the manifest asks for no capability its signer may not grant: each keyring entry
carries `Grants` (devices, topics, files, ports patterns and flags; everything by default, so a
keyring of bare keys keeps working). Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo
public); a key's id is the first 16 hex digits of the SHA-256 of its raw public bytes; a key's
grants are a TOML file beside its `.pub` (`dev.pub` -> `dev.grants.toml`). Crypto is
`cryptography`'s, nothing home-made. A manifest's version is dotted integers ("1.4.2"),
compared as integers (`parse_version`) by the kernel's anti-rollback check at install.

Errors: `ImageError`, an OSError with EACCES (unsigned, unknown signer, bad signature, tampered,
a capability its signer may not grant) or EINVAL (malformed image, manifest or grants), whose
message says which.
"""
from __future__ import annotations

import errno
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from orbitos.sim_hw.spec_loading import ConfigError, bounded, build_spec, read_toml

IMAGE_FORMAT = "orbitos-app-image"
IMAGE_VERSION = 1
MAX_IMAGE_BYTES = 16 * 1024 * 1024
PriorityClass = Literal["essential", "high", "normal", "low"]
PRIORITY_ORDER = ("essential", "high", "normal", "low")
OPERATE_CAPABILITIES = ("observe", "read", "write", "deploy", "run", "kill")
_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,7}")


class ImageError(OSError):
    """An image the kernel will not run; errno EACCES (trust) or EINVAL (form)."""


@dataclass(frozen=True)
class Capabilities:
    """What an app may touch. Topic and path entries may end in '*' (a prefix)."""

    devices: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    isl_send: bool = False
    submit: bool = False
    spawn: bool = False
    kill: bool = False


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = bounded(1 << 30, ge=0, doc="device memory the app may allocate")
    cpu_seconds: float = bounded(3600.0, gt=0.0, doc="CPU time of one run")
    energy_wh_per_orbit: float = bounded(100.0, gt=0.0, doc="device energy per orbit period")
    storage_quota_bytes: int = bounded(64 << 20, ge=0, doc="bytes of files, inodes and directory entries")
    processes: int = bounded(8, ge=1, doc="processes of this app alive at once")
    threads: int = bounded(4, ge=0, doc="threads the app may start besides its main thread")
    unsynced_bytes_per_file: int = bounded(1 << 20, ge=0, doc="bytes written and not yet synced, per open file")
    log_events_per_s: float = bounded(10.0, gt=0.0, doc="events the app may log per second (burst: 10 s worth)")
    address_space_bytes: int = bounded(4 << 30, ge=0, doc="address space of a process-isolated app's "
                                       "OS process (RLIMIT_AS); 0: no limit")


@dataclass(frozen=True)
class WatchdogPolicy:
    window_s: float = bounded(0.0, ge=0.0, doc="0: not watched")
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    max_restarts: int = bounded(3, ge=0)


@dataclass(frozen=True)
class AppManifest:
    name: str
    version: str
    entry: str
    priority: PriorityClass = "normal"
    isolation: Literal["thread", "process"] = "thread"
    description: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    limits: Limits = field(default_factory=Limits)
    watchdog: WatchdogPolicy = field(default_factory=WatchdogPolicy)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name) or len(self.name) > 64:
            raise ValueError(f"name {self.name!r} must be 1-64 letters, digits, '-' or '_'")
        module, _, function = self.entry.partition(":")
        if not module or not function or not (module.replace(".", "_").isidentifier()
                                               and function.isidentifier()):
            raise ValueError(f"entry {self.entry!r} must be 'module:function'")
        parse_version(self.version)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class VerifiedImage:
    manifest: AppManifest
    code: dict[str, bytes]
    signer: str
    digest: str  # SHA-256 of the signed bytes


def parse_version(version: Any) -> tuple[int, ...]:
    """A manifest version as integers, for comparison: "1.10.0" -> (1, 10, 0), so 1.10 > 1.9.
    Trailing zeros do not count ("1.0" == "1.0.0"). Raises ValueError naming the version when it
    is not 1-8 dot-separated integers."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} must be dotted integers such as '1.4.2'")
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True)
class Grants:
    """What a signer may grant the apps it signs: a keyring entry's ceiling on manifests; and,
    for an operator key, the control capabilities it may use (`operate`, the "operate" role:
    observe, read, write, deploy, run, kill; none by default, so an image signer is no operator).

    Pattern entries work as in `Capabilities` ("*" alone: anything; "hk.*": that prefix); a file
    entry covers itself and everything below it; ports are "N", "N-M" or "*". `threads`: whether
    its apps may run as threads in the kernel's own interpreter (false: only `isolation =
    "process"`). `images = false`: a key that may not sign images (an operator key). The default
    grants every app capability, so keyrings of bare keys keep working."""

    devices: tuple[str, ...] = ("*",)
    publish: tuple[str, ...] = ("*",)
    subscribe: tuple[str, ...] = ("*",)
    files: tuple[str, ...] = ("*",)
    ports: tuple[str, ...] = ("*",)
    isl_send: bool = True
    submit: bool = True
    spawn: bool = True
    kill: bool = True
    threads: bool = True
    images: bool = True  # whether the key may sign app images at all (false for an operator key)
    operate: tuple[str, ...] = ()  # control capabilities as an operator key (runtime.control)

    def __post_init__(self) -> None:
        for entry in self.operate:
            if entry not in OPERATE_CAPABILITIES:
                raise ValueError(f"operate grant {entry!r} must be one of {', '.join(OPERATE_CAPABILITIES)}")
        for entry in self.ports:
            low, _, high = entry.partition("-")
            if entry != "*" and not (low.isdigit() and (not high or high.isdigit())):
                raise ValueError(f"port grant {entry!r} must be 'N', 'N-M' or '*'")

    def refusal(self, manifest: "AppManifest") -> str | None:
        """What of the manifest these grants do not cover ("devices 'gpu0'"), or None."""
        wanted = manifest.capabilities
        for kind in ("devices", "publish", "subscribe"):
            for pattern in getattr(wanted, kind):
                if not any(_pattern_covers(granted, pattern) for granted in getattr(self, kind)):
                    return f"{kind} {pattern!r}"
        for path in wanted.files:
            if not any(_path_covers(granted, path) for granted in self.files):
                return f"files {path!r}"
        for port in wanted.ports:
            if not any(_port_covers(granted, port) for granted in self.ports):
                return f"ports {port}"
        for flag in ("isl_send", "submit", "spawn", "kill"):
            if getattr(wanted, flag) and not getattr(self, flag):
                return f"{flag} = true"
        if manifest.isolation == "thread" and not self.threads:
            return 'isolation = "thread" (its apps must run with isolation = "process")'
        return None


def _pattern_covers(granted: str, requested: str) -> bool:
    if granted == "*" or granted == requested:
        return True
    return granted.endswith("*") and requested.startswith(granted[:-1])


def _file_prefix(pattern: str) -> str:
    return pattern.rstrip("*").rstrip("/") or "/"  # as the syscall layer reads a files entry


def _path_covers(granted: str, requested: str) -> bool:
    granted, requested = _file_prefix(granted), _file_prefix(requested)
    return granted == "/" or requested == granted or requested.startswith(granted + "/")


def _port_covers(granted: str, port: int) -> bool:
    if granted == "*":
        return True
    low, _, high = granted.partition("-")
    return int(low) <= port <= int(high or low)


ALL_GRANTS = Grants()
NO_APP_GRANTS = dict(devices=(), publish=(), subscribe=(), files=(), ports=(), isl_send=False, submit=False,
                     spawn=False, kill=False, threads=False, images=False)


def operator_grants(operate: tuple[str, ...], base: "Grants | None" = None) -> "Grants":
    """The grants of an operator key: `operate` capabilities, and no right to sign images
    unless `base` (the key's grants as an image signer) gives them. Raises ValueError naming an
    unknown capability."""
    if base is None:
        return Grants(operate=tuple(operate), **NO_APP_GRANTS)
    return replace(base, operate=tuple(operate))


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(private_path: str | Path) -> str:
    """Write a new Ed25519 private key (PEM) and its public key beside it (.pub); returns its id."""
    private_path = Path(private_path)
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    private_path.chmod(0o600)
    public = key.public_key()
    private_path.with_suffix(".pub").write_bytes(public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(public)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Raises ImageError(EINVAL) when the file is missing or not an Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageError(errno.EINVAL, f"{path}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImageError(errno.EINVAL, f"{path}: not an Ed25519 key")
    return key


class Keyring:
    """The public keys a kernel trusts, by key id, each with the capabilities it may grant
    (`grants`: key id -> Grants; a key without an entry grants everything)."""

    def __init__(self, keys: list[Ed25519PublicKey] | None = None,
                 grants: dict[str, Grants] | None = None) -> None:
        self.keys = {key_id(k): k for k in keys or []}
        self.grants = dict(grants or {})

    def grants_of(self, signer: str) -> Grants:
        return self.grants.get(signer, ALL_GRANTS)

    def operator(self, signer: str) -> tuple[Ed25519PublicKey, tuple[str, ...]] | None:
        """An operator key's public key and its control capabilities; None when `signer` is not
        in the keyring or its grants give it no `operate` capability."""
        key = self.keys.get(signer)
        operate = self.grants_of(signer).operate
        return (key, operate) if key is not None and operate else None

    @classmethod
    def from_files(cls, paths: list[str | Path]) -> "Keyring":
        """Load PEM public keys (.pub files, or directories of them), each with the grants of the
        `<stem>.grants.toml` beside it when there is one (everything otherwise).

        Raises ImageError(EINVAL) naming a file that is not an Ed25519 public key or not valid
        grants.
        """
        keys, grants = [], {}
        for path in paths:
            path = Path(path)
            for file in sorted(path.glob("*.pub")) if path.is_dir() else [path]:
                try:
                    key = serialization.load_pem_public_key(file.read_bytes())
                except (OSError, ValueError) as exc:
                    raise ImageError(errno.EINVAL, f"{file}: not a PEM public key ({exc})") from None
                if not isinstance(key, Ed25519PublicKey):
                    raise ImageError(errno.EINVAL, f"{file}: not an Ed25519 public key")
                keys.append(key)
                grants_file = file.with_suffix(".grants.toml")
                if grants_file.exists():
                    grants[key_id(key)] = read_grants(grants_file)
        return cls(keys, grants)


def read_grants(path: str | Path) -> Grants:
    """A keyring entry's grants from TOML. Raises ImageError(EINVAL) naming the file and field."""
    try:
        return build_spec(Grants, read_toml(path), str(path))
    except ConfigError as exc:
        raise ImageError(errno.EINVAL, str(exc)) from None


def _signed_bytes(manifest: dict[str, Any], code: dict[str, bytes]) -> bytes:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return msgpack.packb([f"{IMAGE_FORMAT}/{IMAGE_VERSION}", canonical,
                          [[path, code[path]] for path in sorted(code)]], use_bin_type=True)


def read_manifest(path: str | Path) -> AppManifest:
    """Raises ImageError(EINVAL) naming the file and field for a bad manifest."""
    try:
        return build_spec(AppManifest, read_toml(path), str(path))
    except ConfigError as exc:
        raise ImageError(errno.EINVAL, str(exc)) from None


def build_image(app_dir: str | Path, private_key: Ed25519PrivateKey) -> bytes:
    """Sign the app in `app_dir` (manifest.toml and *.py files below it).

    Raises ImageError(EINVAL) for a missing or bad manifest, or an entry module not in the code.
    """
    app_dir = Path(app_dir)
    manifest = read_manifest(app_dir / "manifest.toml")
    code = {str(p.relative_to(app_dir)): p.read_bytes() for p in sorted(app_dir.rglob("*.py"))
            if "__pycache__" not in p.parts}
    module = manifest.entry.partition(":")[0]
    if module.replace(".", "/") + ".py" not in code:
        raise ImageError(errno.EINVAL, f"{app_dir}: entry module {module!r} has no "
                                       f"{module.replace('.', '/')}.py")
    manifest_dict = manifest.to_dict()
    signature = private_key.sign(_signed_bytes(manifest_dict, code))
    return msgpack.packb({"format": IMAGE_FORMAT, "version": IMAGE_VERSION, "manifest": manifest_dict,
                          "code": code, "signer": key_id(private_key.public_key()),
                          "signature": signature}, use_bin_type=True)


def stored_version(data: bytes) -> str | None:
    """The manifest version of an image the kernel stored itself (verified when it was
    installed), read without checking the signature again; None when it cannot be read."""
    try:
        document = msgpack.unpackb(data, raw=False)
        version = document["manifest"]["version"]
    except Exception:  # noqa: BLE001 - any unreadable image has no version to compare with
        return None
    return version if isinstance(version, str) else None


def verify_image(data: bytes, keyring: Keyring) -> VerifiedImage:
    """Check an image before anything of it runs.

    Raises ImageError: EINVAL for something that is not a well-formed image, EACCES for an image
    that is unsigned, signed by a key not in the keyring, whose bytes do not match the signature,
    or whose manifest asks for a capability its signer may not grant (the message names it).
    """
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_IMAGE_BYTES:
        raise ImageError(errno.EINVAL, f"an image is at most {MAX_IMAGE_BYTES} bytes of msgpack")
    try:
        document = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ImageError(errno.EINVAL, f"not an app image: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != IMAGE_FORMAT:
        raise ImageError(errno.EINVAL, "not an orbitos app image")
    if document.get("version") != IMAGE_VERSION:
        raise ImageError(errno.EINVAL, f"image version {document.get('version')!r} is not supported")
    manifest_dict, code = document.get("manifest"), document.get("code")
    if not isinstance(manifest_dict, dict) or not isinstance(code, dict) or not all(
            isinstance(k, str) and isinstance(v, bytes) for k, v in code.items()):
        raise ImageError(errno.EINVAL, "image manifest or code is malformed")
    signature, signer = document.get("signature"), document.get("signer")
    if not signature or not signer:
        raise ImageError(errno.EACCES, f"image of {manifest_dict.get('name')!r} is unsigned")
    public_key = keyring.keys.get(signer) if isinstance(signer, str) else None
    if public_key is None:
        raise ImageError(errno.EACCES, f"image of {manifest_dict.get('name')!r} is signed by "
                                       f"{signer!r}, which is not in the keyring")
    if not keyring.grants_of(signer).images:
        raise ImageError(errno.EACCES, f"image of {manifest_dict.get('name')!r} is signed by {signer}, "
                                       "an operator key that may not sign images")
    signed = _signed_bytes(manifest_dict, code)
    try:
        public_key.verify(bytes(signature), signed)
    except (InvalidSignature, ValueError, TypeError):
        raise ImageError(errno.EACCES, f"image of {manifest_dict.get('name')!r}: signature does not "
                                       "match (tampered or corrupted)") from None
    try:
        manifest = build_spec(AppManifest, manifest_dict, "image manifest")
    except ConfigError as exc:
        raise ImageError(errno.EINVAL, str(exc)) from None
    refused = keyring.grants_of(signer).refusal(manifest)
    if refused is not None:
        raise ImageError(errno.EACCES, f"image of {manifest.name!r} asks for {refused}, which its "
                                       f"signer {signer} may not grant")
    return VerifiedImage(manifest, dict(code), signer, hashlib.sha256(signed).hexdigest())
