"""Jetson readers on the sysfs trees of each board family in tests/fixtures/sysfs (see build.py there)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import system
from system import jetson
from system.power import Ina3221Source, SourceUnavailable, open_source

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sysfs"

# board: (model, l4t, jetpack, mode id, mode name, max id, pinned, total rail, rails)
BOARDS = {
    "nano": ("NVIDIA Jetson Nano Developer Kit", "32.7.1", "4.6.1", 0, "MAXN", 0, True, "POM_5V_IN",
             {"POM_5V_IN": 5.039, "POM_5V_GPU": 2.016, "POM_5V_CPU": 0.993}),
    "xavier-nx": ("NVIDIA Jetson Xavier NX Developer Kit", "32.7.1", "4.6.1", 2, "MODE_15W_6CORE", 8, False,
                  "VDD_IN", {"VDD_IN": 7.489, "VDD_CPU_GPU_CV": 1.464, "VDD_SOC": 1.338}),
    "agx-xavier": ("Jetson-AGX", "32.7.1", "4.6.1", None, None, 0, True, "sum of rails",
                   {"GPU": 1.146, "CPU": 0.382, "SOC": 2.502, "CV": 0.0, "VDDRQ": 0.191, "SYS5V": 2.692}),
    "orin-nx": ("NVIDIA Orin NX Developer Kit", "35.4.1", "5.1.2", 0, "MAXN", 0, False, "VDD_IN",
                {"VDD_IN": 5.819, "VDD_CPU_GPU_CV": 0.602, "VDD_SOC": 1.505}),
    "orin-nano": ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "36.4.3", "6.2", 2,
                  "MAXN_SUPER", 2, True, "VDD_IN", {"VDD_IN": 4.558, "VDD_CPU_GPU_CV": 0.481, "VDD_SOC": 1.448}),
    "agx-orin": ("NVIDIA Jetson AGX Orin Developer Kit", "36.3.0", "6.0", 3, "MODE_50W", 0, False, "sum of rails",
                 {"VDD_GPU_SOC": 2.0, "VDD_CPU_CV": 0.0, "VIN_SYS_5V0": 2.526, "VDDQ_VDD2_1V8AO": 0.404}),
}


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_state(board: str, monkeypatch: Any) -> None:
    model, l4t, jp, mode_id, mode_name, max_id, pinned, _, _ = BOARDS[board]
    monkeypatch.setenv(system.ROOT_ENV, str(FIXTURES / board))  # the one setting every reader takes its root from
    s = jetson.state()
    assert s is not None
    assert (s["model"], s["l4t"], s["jetpack"]) == (model, l4t, jp)
    mode = s["nvpmodel"]
    assert (mode["id"], mode["name"], mode["max_id"]) == (mode_id, mode_name, max_id)
    assert s["clocks_pinned"] is pinned
    assert s["temperatures_c"], "thermal zones read"
    assert all(t is None or -40 < t < 120 for t in s["temperatures_c"].values())
    warning = jetson.warning(s)
    if mode.get("is_max") is False or pinned is False:
        assert warning and "sudo nvpmodel -m {}".format(max_id) in warning and "sudo jetson_clocks" in warning
    else:
        assert warning is None


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_ina3221_rails(board: str) -> None:
    total, rails = BOARDS[board][7], BOARDS[board][8]
    src = Ina3221Source(str(FIXTURES / board))
    try:
        assert src.describe()["total"] == total
        assert src.read() == pytest.approx(rails, abs=1e-3)
        if total == "sum of rails":
            assert "no input rail" in src.measures
        else:
            assert "whole module" in src.measures
    finally:
        src.close()


def test_ina3221_reads_a_fresh_value_each_time(tmp_path: Path) -> None:
    shutil.copytree(str(FIXTURES / "orin-nano"), str(tmp_path / "b"))
    src = Ina3221Source(str(tmp_path / "b"))
    try:
        assert src.read()["VDD_IN"] == pytest.approx(5.064 * 0.900)
        current = tmp_path / "b/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr1_input"
        with open(str(current), "r+") as f:  # in place, as the driver's value changes under an open file
            f.write("1800\n")
        assert src.read()["VDD_IN"] == pytest.approx(5.064 * 1.800)
    finally:
        src.close()
    assert src.read is not None and not src._fds


def test_details_of_one_board_each() -> None:
    nx = jetson.state(str(FIXTURES / "xavier-nx"))
    assert nx["clocks"]["gpu"] == {"devfreq": "17000000.gv11b", "cur_mhz": 114.8, "min_mhz": 114.8,
                                   "max_mhz": 1109.2, "hw_max_mhz": 1109.2, "pinned": False}
    assert nx["clocks"]["cpu"]["online"] == "0-5" and len(nx["clocks"]["cpu"]["cur_mhz"]) == 6
    assert nx["clocks"]["cpu"]["hw_max_mhz"][0] == 1907.2 and nx["clocks"]["cpu"]["pinned"] is False
    # EMC lives in debugfs, which only root can read: null with the reason, and the verdict rests on GPU and CPU.
    assert nx["clocks"]["emc"]["cur_mhz"] is None and "not present" in nx["clocks"]["emc"]["unreadable"]["cur_mhz"]
    assert nx["throttling"] == [{"device": "gpu-balanced", "state": 2, "max_state": 3}]
    agx = jetson.state(str(FIXTURES / "agx-xavier"))
    assert agx["nvpmodel"]["is_max"] is None and "nvpmodel" in agx["nvpmodel"]["unreadable"]
    assert jetson.warning(agx) is None  # pinned, mode unknown: nothing to warn about for sure
    orin = jetson.state(str(FIXTURES / "orin-nx"))
    assert orin["clocks"]["emc"] == {"cur_mhz": 665.6, "max_mhz": 3199.0, "pinned": False}
    assert orin["temperatures_c"]["CV0-therm"] is None  # -256 C: sensor not fitted
    assert orin["throttling"] is None  # only a fan: nothing reported
    nano = jetson.state(str(FIXTURES / "nano"))
    assert nano["clocks"]["emc"] == {"cur_mhz": 1600.0, "max_mhz": 1600.0, "pinned": True}
    assert nano["throttling"] == []


def test_not_a_jetson(tmp_path: Path) -> None:
    assert jetson.state(str(tmp_path)) is None
    assert jetson.warning(None) is None
    with pytest.raises(SourceUnavailable, match="no INA3221"):
        Ina3221Source(str(tmp_path))


def test_open_source_picks_ina3221_on_a_jetson() -> None:
    src, reasons = open_source(str(FIXTURES / "orin-nano"))
    assert src is not None and src.name == "ina3221" and reasons == []
    src.close()


def test_parsers() -> None:
    assert jetson.l4t_release("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref") == "32.7.1"
    assert jetson.l4t_release("# R35 (release), REVISION: 4.1, GCID: 33958178") == "35.4.1"
    assert jetson.l4t_release("# R36 (release), REVISION: 4, GCID: 1") == "36.4.0"
    assert jetson.l4t_release("garbage") is None
    assert jetson.jetpack_for("36.4.3") == "6.2" and jetson.jetpack_for("36.9.9") == "6.x"
    assert jetson.jetpack_for(None) is None
    assert jetson.parse_nvpmodel_query("NV Power Mode: MAXN_SUPER\n2\n") == (2, "MAXN_SUPER")
    assert jetson.parse_nvpmodel_query("nvpmodel: permission denied") == (None, None)
    modes, default = jetson.parse_nvpmodel_conf("< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n"
                                                "< PM_CONFIG DEFAULT=1 >\n")
    assert modes == {0: "15W", 2: "MAXN_SUPER"} and default == 1
    assert jetson.maximum_mode({0: "15W", 1: "25W", 2: "MAXN_SUPER", 3: "7W"}) == 2
    assert jetson.maximum_mode({0: "15W", 1: "7W"}) == 0  # Orin Nano on JetPack 5: no MAXN
    assert jetson.maximum_mode({0: "MODE_10W", 1: "MODE_20W_2CORE", 2: "MODE_20W_6CORE"}) == 2
    assert jetson.maximum_mode({}) is None
