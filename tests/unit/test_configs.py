"""Hardware profiles and constellation configs: the examples load, bad files are refused
with a message that names the file and the field."""
import re
from pathlib import Path

import pytest

from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.profile import load_profile
from orbitos.sim_hw.spec_loading import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "constellations"
PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"


def test_three_body_profile_matches_published_figures():
    """Zhejiang Lab's Three-Body satellite: 744 TOPS, 100 Gbps laser links, ~15 s set-up,
    ~2.5 TB of storage (30 TB over 12 satellites)."""
    profile = load_profile(PROFILE)
    assert profile.gpu.tops_int8 == 744.0
    assert profile.laser.rate_bps == 100e9 and profile.laser.acquisition_s == 15.0
    assert profile.storage.capacity_bytes * 12 == pytest.approx(30e12)


@pytest.mark.parametrize("name, count", [("three-body-12", 12), ("walker-386", 386),
                                         ("star-compute-2800", 2800)])
def test_example_constellations_load(name, count):
    constellation = load_constellation(EXAMPLES / f"{name}.toml")
    assert len(constellation) == count == len(set(constellation.satellite_ids))
    assert constellation.spec.ground_stations


def test_three_body_12_is_one_sun_synchronous_plane_at_500_km():
    import math
    constellation = load_constellation(EXAMPLES / "three-body-12.toml")
    inclinations = {round(math.degrees(r.inclo), 3) for r in constellation.records}
    planes = {round(math.degrees(r.nodeo), 6) for r in constellation.records}
    assert len(inclinations) == 1 and abs(inclinations.pop() - 97.40) < 0.05
    assert len(planes) == 1
    assert constellation.satellite_ids[0] == "TB01" and constellation.satellite_ids[-1] == "TB12"


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "p.toml").write_text(PROFILE.read_text())
    return path


GOOD = """
name = "t"
epoch_utc = "2026-06-01T00:00:00Z"
hardware_profile = "p.toml"
[[shells]]
name = "a"
satellites = 4
planes = 1
altitude_km = 500.0
inclination_deg = 53.0
"""


def test_minimal_config_loads(tmp_path):
    assert len(load_constellation(write(tmp_path, GOOD))) == 4


@pytest.mark.parametrize("change, message", [
    (("altitude_km = 500.0\n", ""), "missing field 'shells[0].altitude_km'"),
    (("satellites = 4", 'satellites = "four"'), "field 'shells[0].satellites': must be an integer"),
    (("altitude_km = 500.0", "altitude_km = -3.0"), "field 'shells[0].altitude_km': must be > 150"),
    (("planes = 1", "planes = 1\nplains = 2"), "unknown field 'shells[0].plains' (did you mean 'planes'"),
    (("planes = 1", "planes = 3"), "multiple of planes"),
    (("inclination_deg = 53.0", "inclination_deg = 53.0\nsun_synchronous = true"), "exactly one of"),
    (('epoch_utc = "2026-06-01T00:00:00Z"', 'epoch_utc = "yesterday"'), "not an ISO 8601"),
    (('epoch_utc = "2026-06-01T00:00:00Z"', 'epoch_utc = "2026-06-01T00:00:00"'), "no time zone"),
    (('hardware_profile = "p.toml"', 'hardware_profile = "nope.toml"'), "nope.toml: file not found"),
    (("name = \"a\"", "name = \"a\"\nid_prefix = 7"), "field 'shells[0].id_prefix': must be a string"),
])
def test_malformed_config_names_the_field(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_constellation(path)
    assert str(path) in str(error.value) or "nope.toml" in str(error.value)


def test_broken_toml_and_duplicates(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_constellation(write(tmp_path, "name = [unclosed"))
    doubled = GOOD + GOOD[GOOD.index("[[shells]]"):]
    with pytest.raises(ConfigError, match="used twice"):
        load_constellation(write(tmp_path, doubled))
    clash = GOOD + '[[ground_stations]]\nname = "S01"\nlat_deg = 0.0\nlon_deg = 0.0\n' \
                   'downlink_rate_bps = 1e9\nuplink_rate_bps = 1e6\n'
    with pytest.raises(ConfigError, match="ground_stations\\[0\\].name"):
        load_constellation(write(tmp_path, clash))
    ghost = GOOD + '[[faults.scripted]]\nsatellite = "X9"\nkind = "node_reset"\nat_h = 1.0\n'
    with pytest.raises(ConfigError, match="faults.scripted\\[0\\].satellite"):
        load_constellation(write(tmp_path, ghost))


def test_malformed_profile_names_the_field(tmp_path):
    bad = PROFILE.read_text().replace("tops_int8 = 744.0", "tops_int8 = -744.0")
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match=r"bad.toml: field 'gpu.tops_int8': must be > 0"):
        load_profile(tmp_path / "bad.toml")
    bad = PROFILE.read_text().replace('attitude = "sun_tracking"', 'attitude = "spinning"')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match="eps.solar_array.attitude': must be one of"):
        load_profile(tmp_path / "bad.toml")
    bad = PROFILE.read_text().replace("[laser]", "[lasers]")
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match="unknown field 'lasers'"):
        load_profile(tmp_path / "bad.toml")


def test_tle_constellation(tmp_path):
    (tmp_path / "sats.tle").write_text(
        "ISS (ZARYA)\n1 25544U 98067A   24001.50000000  .00016717  00000-0  10270-3 0  9005\n"
        "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.50377579 10004\n")
    path = write(tmp_path, 'name = "t"\nepoch_utc = "2024-01-01T12:00:00Z"\n'
                           'hardware_profile = "p.toml"\n[[tle_files]]\npath = "sats.tle"\n')
    constellation = load_constellation(path)
    assert constellation.satellite_ids == ("ISS (ZARYA)",)
    assert 400 < constellation.altitudes_km[0] < 440
