"""Faults that happen, on real Ray: a config's scripted node reset, link outage and brownout take
effect at their simulated time on a two-host run and clear after; faults injected at run time
through `ConstellationRun.inject_fault` and `orbitos fault` (in-process, on the same cluster)
too; bad injections are refused naming what is wrong."""
import io
import json

import pytest

from orbitos.runtime.constellation_run import ConstellationRun
from orbitos.sim_hw.constellation import load_constellation
from tests.integration.waiting import wait_for
from tests.unit.test_fault_injection import CONFIG, write_config

SPEED = 30.0
TOLERANCE_S = 0.5 * SPEED  # half a wall second of the host's thread waking, in simulated time
SCRIPTED = """
[[faults.scripted]]
satellite = "TB02"
kind = "node_reset"
at_h = 0.1

[[faults.scripted]]
satellite = "TB06"
kind = "link_outage"
at_h = 0.1
target = "1"
duration_s = 240.0

[[faults.scripted]]
satellite = "TB03"
kind = "brownout"
at_h = 0.1
duration_s = 240.0
"""


def last(run, satellite, event_id):
    found = [e for e in run.logs(satellite, 500) if e["event_id"] == event_id]
    return found[-1] if found else None


@pytest.mark.slow
def test_scripted_and_injected_faults_on_ray(local_ray, tmp_path, capsys, monkeypatch):
    import ray

    from orbitos.kernel.image import generate_key, load_private_key
    from orbitos.runtime.cli import main

    config = write_config(tmp_path, SCRIPTED)
    epoch = load_constellation(CONFIG).epoch_utc_s
    at = epoch + 360.0
    home = tmp_path / "home"
    home.mkdir()
    generate_key(home / "operator.key")  # the CLI below signs with it, as `up` would have written it
    monkeypatch.setenv("ORBITOS_HOME", str(home))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what `--address` sets; restored after the test
    run = ConstellationRun.up(config, hosts=2, speed=SPEED, hours=1.0,
                              operator_key=load_private_key(home / "operator.key"))
    try:
        assert run.owner_of["TB06"] != run.owner_of["TB07"]  # the cut link joins the two hosts
        wait_for(lambda: run.now() > at + 30.0, timeout_s=40.0)
        # the reset: TB02 rebooted at its time, says why, and answers again
        rebooted = wait_for(lambda: last(run, "TB02", "REBOOTED"), timeout_s=10.0)
        assert abs(rebooted["time_utc_s"] - at) < TOLERANCE_S and "node_reset" in rebooted["message"]
        # the brownout: TB03 sheds load, its array gives nothing
        brownout = last(run, "TB03", "BROWNOUT")
        assert brownout and abs(brownout["time_utc_s"] - at) < TOLERANCE_S
        rows = {r["id"]: r for r in run.status()}
        assert rows["TB03"]["brownout"] is True and rows["TB02"]["state"] == "running"
        # the outage of TB06's terminal 1 (its link to TB07): a request goes the long way round
        answer = run.request("TB06", ["TB07"], "status")[0]
        assert answer["ok"] and answer["route"][0] == "TB06" and answer["route"][1] == "TB05"
        assert len(answer["route"]) == 12
        assert last(run, "TB07", "FAULT_INJECTED")["fields"]["target"] == "TB06-TB07"  # seen on the other host

        wait_for(lambda: run.now() > at + 240.0 + 30.0, timeout_s=20.0)
        assert abs(last(run, "TB03", "BROWNOUT_END")["time_utc_s"] - (at + 240.0)) < TOLERANCE_S
        assert {r["id"]: r for r in run.status()}["TB03"]["brownout"] is False
        assert run.request("TB06", ["TB07"], "status")[0]["route"] == ["TB06", "TB07"]

        # injected through the Python API: a 60 s reset of TB09
        record = run.inject_fault("TB09", "node_reset", 60.0)
        assert record["target"] == "TB09" and record["end_utc_s"] - record["start_utc_s"] == 60.0
        wait_for(lambda: {r["id"]: r for r in run.status()}["TB09"]["state"] == "stopped", timeout_s=5.0)
        back = wait_for(lambda: last(run, "TB09", "REBOOTED"), timeout_s=10.0)
        assert abs(back["time_utc_s"] - record["end_utc_s"]) < TOLERANCE_S
        wait_for(lambda: {r["id"]: r for r in run.status()}["TB09"]["state"] == "running", timeout_s=5.0)
        with pytest.raises(ValueError, match="unknown fault kind 'meteor'"):
            run.inject_fault("TB09", "meteor", 10.0)
        with pytest.raises(ValueError, match="no laser link"):
            run.inject_fault("TB01-TB07", "link_outage", 10.0)

        # and through the CLI, on the same cluster
        out = io.StringIO()
        address = ray.get_runtime_context().gcs_address
        assert main(["fault", "TB10-TB11", "link_outage", "--for", "1m", "--json", "--address", address],
                    out=out) == 0, capsys.readouterr().err
        printed = json.loads(out.getvalue())
        assert printed["target"] == "TB10-TB11" and printed["end_utc_s"] - printed["start_utc_s"] == 60.0
        assert main(["fault", "TB99", "brownout", "--for", "10", "--address", address], out=io.StringIO()) == 2
        assert "'TB99' is neither" in capsys.readouterr().err
        counters = run.fault_counters()
        assert counters["node_reset"] == 2 and counters["brownout"] == 1 and counters["errors"] == 0
        # a link outage counts on the host of each end (TB06-TB07 joins the two hosts); the other
        # host applies a node's fault, or a link of neither of its satellites, to routing only
        split = run.owner_of["TB10"] != run.owner_of["TB11"]
        assert counters["link_outage"] == 2 + (2 if split else 1)
        assert counters["elsewhere"] == 3 + (0 if split else 1)
    finally:
        run.down()
