"""Image trust: what a signer may grant, versions, anti-rollback at install."""
import errno
import json

import pytest

from orbitos.kernel.image import Grants, ImageError, Keyring, parse_version, read_grants, verify_image
from tests.unit.kernel.harness import make_kernel
from tests.unit.kernel.isolation_helpers import isolated_image

NARROW = Grants(devices=("imager*",), publish=("test.*", "science.*"), subscribe=("hk.*",),
                files=("/data/science",), ports=("7000-7099",), isl_send=True, submit=False,
                spawn=False, kill=False)


def keyring_granting(signer, grants):
    key = signer.key.public_key()
    return Keyring([key], {next(iter(Keyring([key]).keys)): grants})


@pytest.mark.parametrize("capabilities,refused", [
    ({"devices": ["gpu0"]}, "devices 'gpu0'"),
    ({"devices": ["*"]}, "devices '*'"),
    ({"publish": ["hk.TB01"]}, "publish 'hk.TB01'"),
    ({"publish": ["science*"]}, "publish 'science*'"),  # wider than the granted 'science.*'
    ({"subscribe": ["events.*"]}, "subscribe 'events.*'"),
    ({"files": ["/data"]}, "files '/data'"),
    ({"files": ["/data/science2"]}, "files '/data/science2'"),
    ({"ports": [7100]}, "ports 7100"),
    ({"submit": True}, "submit = true"),
    ({"spawn": True}, "spawn = true"),
    ({"kill": True}, "kill = true"),
])
def test_an_image_asking_for_more_than_its_signer_may_grant_is_refused(signer, capabilities, refused):
    keyring = keyring_granting(signer, NARROW)
    with pytest.raises(ImageError) as error:
        verify_image(signer.image(capabilities=capabilities), keyring)
    assert error.value.errno == errno.EACCES and refused in str(error.value), str(error.value)
    assert "may not grant" in str(error.value)


def test_an_image_within_its_grants_is_accepted_and_bare_keyrings_grant_everything(signer):
    within = signer.image(capabilities={"devices": ["imager0"], "publish": ["science.ndvi"],
                                        "subscribe": ["hk.TB01"], "files": ["/data/science/raw/*"],
                                        "ports": [7000, 7099], "isl_send": True})
    assert verify_image(within, keyring_granting(signer, NARROW)).manifest.name == "script"
    everything = signer.image(capabilities={"devices": ["*"], "files": ["/"], "kill": True,
                                            "spawn": True, "submit": True, "ports": [1]})
    assert verify_image(everything, signer.keyring).manifest.capabilities.kill  # old configs keep working


def test_a_signer_may_be_limited_to_process_isolated_apps(signer):
    keyring = keyring_granting(signer, Grants(threads=False))
    with pytest.raises(ImageError) as error:
        verify_image(signer.image(), keyring)
    assert error.value.errno == errno.EACCES and 'isolation = "thread"' in str(error.value)
    assert verify_image(isolated_image(signer), keyring).manifest.isolation == "process"


def test_the_kernel_refuses_an_over_granted_image_with_an_event(signer):
    kernel = make_kernel(signer)
    kernel.keyring = keyring_granting(signer, NARROW)
    with kernel.clock.participant():
        kernel.boot()
        with pytest.raises(ImageError) as error:
            kernel.spawn(signer.image(capabilities={"devices": ["gpu0"]}))
        assert error.value.errno == errno.EACCES
        assert "gpu0" in kernel.events.last("APP_REFUSED").message
        assert not kernel.live()
        kernel.shutdown()


def test_grants_are_read_from_a_file_beside_the_public_key(signer, tmp_path):
    pub = tmp_path / "ops.pub"
    pub.write_bytes((signer.directory / "test.pub").read_bytes())
    (tmp_path / "ops.grants.toml").write_text('devices = ["imager*"]\npublish = ["test.*"]\n'
                                              'subscribe = []\nfiles = []\nports = []\n'
                                              "spawn = false\nkill = false\n")
    keyring = Keyring.from_files([tmp_path])
    with pytest.raises(ImageError) as error:
        verify_image(signer.image(capabilities={"devices": ["gpu0"]}), keyring)
    assert error.value.errno == errno.EACCES
    assert verify_image(signer.image(capabilities={"devices": ["imager0"]}), keyring)
    (tmp_path / "ops.grants.toml").write_text('ports = ["seven"]\n')
    with pytest.raises(ImageError) as error:
        Keyring.from_files([tmp_path])
    assert error.value.errno == errno.EINVAL and "ops.grants.toml" in str(error.value)
    (tmp_path / "ops.grants.toml").write_text('devicez = ["x"]\n')
    with pytest.raises(ImageError) as error:
        read_grants(tmp_path / "ops.grants.toml")
    assert "devicez" in str(error.value)


def test_versions_compare_as_dotted_integers():
    assert parse_version("1.10.0") > parse_version("1.9.9")
    assert parse_version("2") > parse_version("1.99")
    assert parse_version("1.0") == parse_version("1.0.0") == parse_version("1")
    for bad in ("v1", "1..2", "", "1.2-beta", "1." * 9 + "1", " 1"):
        with pytest.raises(ValueError):
            parse_version(bad)


def test_a_manifest_version_that_is_not_dotted_integers_is_refused_at_build(signer):
    with pytest.raises(ImageError) as error:
        isolated_image(signer, version="1.0-rc1", isolation="thread")
    assert error.value.errno == errno.EINVAL and "1.0-rc1" in str(error.value)


def test_install_refuses_an_older_version_over_a_newer_one(kernel, signer):
    def image(version):
        return isolated_image(signer, code="def main(sys, argv):\n    return 0\n", name="app",
                              isolation="thread", version=version)

    kernel.wait(kernel.install(image("1.2.0")))  # (each app ends before the next install)
    kernel.wait(kernel.install(image("1.10.0")))  # newer as integers, though older as text
    with pytest.raises(ImageError) as error:
        kernel.install(image("1.9.3"))
    assert error.value.errno == errno.EACCES
    assert "1.9.3" in str(error.value) and "1.10.0" in str(error.value)
    assert "anti-rollback" in kernel.events.last("APP_REFUSED").message
    kernel.wait(kernel.install(image("1.10")))  # the same version again is fine
    table = json.loads(kernel.fs.read_file("/etc/installed.json"))
    assert [(e["image"], e["version"]) for e in table] == [("/images/app.img", "1.10")]
    assert kernel.process(max(p["pid"] for p in kernel.ps())).manifest.version == "1.10"


def test_install_compares_with_the_stored_image_when_the_table_has_no_version(kernel, signer):
    """A table written before versions were recorded: the installed image says its version."""
    def image(version):
        return isolated_image(signer, code="def main(sys, argv):\n    return 0\n", name="app",
                              isolation="thread", version=version)

    kernel.wait(kernel.install(image("3.0.0")))
    kernel.fs.write_file("/etc/installed.json", json.dumps(
        [{"image": "/images/app.img", "argv": []}]).encode(), "kernel", None)
    with pytest.raises(ImageError) as error:
        kernel.install(image("2.9"))
    assert error.value.errno == errno.EACCES and "3.0.0" in str(error.value)
    kernel.wait(kernel.install(image("3.0.1")))


# -- soundness: what passes the grant check never lets an app reach what its signer did not grant ----
from itertools import product  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

from orbitos.kernel.api import _allowed  # the syscall layer's own pattern check  # noqa: E402
from orbitos.kernel.image import AppManifest, Capabilities  # noqa: E402

NAMES = ["".join(p) for n in range(5) for p in product("ab.", repeat=n)]
PATHS = ["/" + "/".join(p) for n in range(1, 4) for p in product("ab", repeat=n)]
TOPIC_PATTERN = st.sampled_from(["*", "a", "b", "a.", "a.b", "a*", "a.*", "ab*", "b.a*", ""]).filter(bool)
PATH_PATTERN = st.sampled_from(["/", "*", "/a", "/a/*", "/a/b", "/b", "/ab", "/a/", "/b/a/*"])


def file_allowed(patterns, path):
    """kernel/api.py's reading of a files capability (prefixes, '*' and '/' for everything)."""
    for pattern in patterns:
        prefix = pattern.rstrip("*").rstrip("/") or "/"
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(granted=st.lists(TOPIC_PATTERN, max_size=3), wanted=st.lists(TOPIC_PATTERN, max_size=3),
       granted_files=st.lists(PATH_PATTERN, max_size=3), wanted_files=st.lists(PATH_PATTERN, max_size=3),
       granted_ports=st.lists(st.sampled_from(["*", "3", "5-9", "1-2"]), max_size=2),
       wanted_ports=st.lists(st.integers(1, 12), max_size=3))
def test_an_accepted_manifest_reaches_nothing_its_signer_did_not_grant(
        granted, wanted, granted_files, wanted_files, granted_ports, wanted_ports):
    grants = Grants(devices=tuple(granted), publish=tuple(granted), subscribe=tuple(granted),
                    files=tuple(granted_files), ports=tuple(granted_ports))
    manifest = AppManifest("app", "1.0.0", "app:main", capabilities=Capabilities(
        devices=tuple(wanted), publish=tuple(wanted), subscribe=tuple(wanted),
        files=tuple(wanted_files), ports=tuple(wanted_ports)))
    if grants.refusal(manifest) is not None:
        return
    for name in NAMES:
        if _allowed(tuple(wanted), name):
            assert _allowed(tuple(granted), name), (wanted, granted, name)
    for path in PATHS:
        if file_allowed(wanted_files, path):
            assert file_allowed(granted_files, path), (wanted_files, granted_files, path)
    for port in wanted_ports:
        assert any(g == "*" or int(g.split("-")[0]) <= port <= int(g.split("-")[-1]) for g in granted_ports)
