"""The global scheduler on a running constellation (real Ray): a task from the Python side and
one from an app's sys.submit are placed by the orbitos policy and run for real (once, not
installed) on the chosen satellite's kernel, the input file moved there over the ISL network
first; the kernel's report of the process's end reaches the scheduler actor, so the task list
reaches done with exit code 0; a malformed task and a task whose image is not signed by the
run's keyring are refused with the reason; the task list says all of it."""
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from orbitos.runtime.constellation_run import ConstellationRun
from orbitos.sim_hw.constellation import load_constellation
from tests.integration.waiting import wait_for
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"


@pytest.mark.slow
def test_tasks_placed_and_run_for_real(local_ray):
    signer = Signer(Path(tempfile.mkdtemp()))
    public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    run = ConstellationRun.up(CONFIG, hosts=2, speed=300.0, hours=3.0, trusted_keys_pem=(public,),
                              housekeeping_period_s=120.0, scheduler=True)
    try:
        epoch = load_constellation(CONFIG).epoch_utc_s
        wait_for(lambda: run.now() > epoch + 60.0)
        tile = bytes(range(256)) * 4096  # 1 MiB on TB02
        assert run.request("TB02", ["TB02"], "write", {"path": "/data/tile.bin", "data": tile})[0]["ok"]
        worker = signer.image(name="worker", capabilities={"files": ["/data"]}, code="""
def main(sys, argv):
    fd = sys.open(argv[0])
    data = sys.read(fd)
    sys.close(fd)
    sys.log("WORKED", "info", size=len(data), path=argv[0], tag=argv[1])
""")
        record = run.submit({"name": "ndwi-tile", "ops": {"gpu": 5e15}, "deadline_s": 3600,
                             "inputs": [{"name": "tile", "size_bytes": len(tile), "holders": ["TB02"],
                                         "path": "/data/tile.bin"}],
                             "image": worker, "argv": ["python-client"]}, "TB01")
        assert record["status"] == "placed", record
        chosen = record["satellite"]
        assert record["deadline_met"] and record["start_utc_s"] >= run.now() - 60
        done = wait_for(lambda: [t for t in run.tasks() if t["task"] == "ndwi-tile"
                                 and t["status"] in ("done", "failed")])
        assert done[0]["status"] == "done" and done[0]["exit_code"] == 0, done
        assert done[0]["ended_utc_s"] >= done[0]["dispatched_utc_s"]
        assert done[0]["battery"]["source"] == "live", done  # batteries read from the hosts
        installed = run.request(chosen, [chosen], "read", {"path": "/etc/installed.json"})[0]
        assert not installed["ok"] or b"worker" not in installed["value"]  # ran once, not installed
        worked = wait_for(lambda: [e for e in run.logs(chosen, 100) if e["event_id"] == "WORKED"])
        assert worked[0]["fields"]["size"] == len(tile) and worked[0]["fields"]["tag"] == "python-client"
        if chosen != "TB02":  # the input crossed the ISL network to the chosen satellite
            assert record["inputs_from"]["tile"][0] == "TB02" and record["inputs_from"]["tile"][-1] == chosen

        submitter = signer.image(name="submitter", capabilities={"submit": True}, code="""
def main(sys, argv):
    answer = sys.submit({"name": "from-an-app", "ops": {"gpu": 1e15}, "deadline_s": 1800})
    sys.log("SUBMITTED", "info", status=answer["status"], satellite=str(answer.get("satellite")))
""")
        run.deploy(submitter, to="TB05")
        logged = wait_for(lambda: [e for e in run.logs("TB05", 100) if e["event_id"] == "SUBMITTED"])
        assert logged[0]["fields"]["status"] == "placed"

        from orbitos.runtime.client import Client
        via_client = Client(run, "TB07").submit({"name": "via-client", "ops": {"gpu": 1e15}, "deadline_s": 1800})
        assert via_client["status"] == "placed" and via_client["submitted_by"] == "TB07"
        stranger = Signer(Path(tempfile.mkdtemp())).image(name="worker", code="def main(sys, argv):\n    pass\n")
        untrusted = run.submit({"name": "untrusted", "ops": {"gpu": 1e15}, "image": stranger})
        assert untrusted["status"] == "refused" and "field 'image' refused" in untrusted["reason"], untrusted
        refused = run.submit({"name": "bad", "ops": {"tpu": 1e9}})
        assert refused["status"] == "refused" and "unknown device kind 'tpu'" in refused["reason"]
        again = run.submit({"name": "ndwi-tile", "ops": {"gpu": 1e15}})
        assert again["status"] == "refused" and "submitted before" in again["reason"]
        listed = {t["task"]: t for t in run.tasks()}
        assert set(listed) == {"ndwi-tile", "from-an-app", "via-client"}
        assert listed["from-an-app"]["submitted_by"] == "TB05"
        ended = wait_for(lambda: [t for t in run.tasks() if t["status"] in ("done", "failed")]
                         if all(t["status"] in ("done", "failed") for t in run.tasks()) else [])
        assert all(t["status"] == "done" for t in ended), ended
        # what another part's supervisor does on a node loss: tell the scheduler actor
        import ray
        lost = ray.get(run._scheduler().satellites_lost.remote(["TB07"]))
        assert lost["lost"] == ["TB07"] and lost["refused"] == {}
        assert run.submit({"name": "after-loss", "ops": {"gpu": 1e15}, "deadline_s": 1800}, "TB07")["satellite"] != "TB07"
        health = ray.get(run._scheduler().health.remote())
        assert health["dispatch"]["state"] == "running" and health["lost"] == ["TB07"]
    finally:
        run.down()
