"""tegrastats power rails in each JetPack's format, and the tegrastats source over a stand-in process."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from system.power import PowerSampler, SourceUnavailable, TegrastatsSource, open_source, summarize
from system.tegrastats import parse_line

# Where each line comes from is in system/tegrastats.py; lines marked "composed" are written in that
# JetPack's format with made-up values.
# JetPack 4.6 (L4T 32): milliwatts without a unit. Nano, Xavier NX (composed), AGX Xavier (bare rail names).
JP4_NANO = ("RAM 330/3964MB (lfb 758x4MB) SWAP 0/1982MB (cached 0MB) CPU [12%@102,4%@102,off,off] EMC_FREQ 0% "
            "GR3D_FREQ 0% PLL@20.5C CPU@23C PMIC@100C GPU@22.5C AO@27C thermal@22.5C "
            "POM_5V_IN 3014/2950 POM_5V_GPU 0/0 POM_5V_CPU 84/84")
JP4_XAVIER_NX = ("RAM 1917/7772MB (lfb 21x4MB) SWAP 0/3886MB (cached 0MB) CPU [3%@1190,1%@1190,1%@1190,0%@1190,"
                 "off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@36C GPU@35.5C PMIC@100C AUX@35.5C CPU@37C thermal@36.1C "
                 "VDD_IN 4393/4393 VDD_CPU_GPU_CV 532/532 VDD_SOC 1333/1333")
JP4_AGX_XAVIER = ("RAM 407/15823MB (lfb 3702x4MB) SWAP 0/7911MB (cached 0MB) CPU [1%@2265,0%@2265] EMC_FREQ 0% "
                  "GR3D_FREQ 0% AO@26.5C GPU@28C Tdiode@31.25C PMIC@100C AUX@26.5C CPU@27.5C thermal@27.45C "
                  "GPU 1155/1155 CPU 385/385 SOC 2504/2503 CV 0/0 VDDRQ 192/192 SYS5V 2692/2692")
# JetPack 5 and later: values carry mW. An AGX Orin line from a public log (a rail below zero at idle),
# and an Orin NX line (composed).
JP5_AGX_ORIN = ("03-17-2024 18:54:10 RAM 10239/62841MB (lfb 442x4MB) SWAP 1/31421MB (cached 0MB) CPU [0%@1728,"
                "0%@1728,off,off] GR3D_FREQ 0% cpu@37.5C tboard@27C soc2@34.562C tj@37.5C "
                "VDD_GPU_SOC 1592mW/1592mW VDD_CPU_CV -398mW/-398mW VIN_SYS_5V0 2624mW/2624mW "
                "VDDQ_VDD2_1V8AO 403mW/403mW")
JP5_ORIN_NX = ("RAM 2963/15388MB (lfb 2x4MB) SWAP 0/7694MB (cached 0MB) CPU [2%@729,1%@729] EMC_FREQ 0%@2133 "
               "GR3D_FREQ 0%@[306] VIC_FREQ 729 APE 174 CPU@44.5C GPU@43.9C tj@44.5C "
               "VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 601mW/601mW VDD_SOC 1504mW/1504mW")
# JetPack 6.2 (L4T R36.4.3) on an Orin Nano in MAXN_SUPER.
JP6_ORIN_NANO = ("07-14-2025 10:29:36 RAM 2147/7620MB (lfb 2x4MB) SWAP 1476/3810MB (cached 1MB) CPU [0%@729,0%@729,"
                 "0%@729,0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@47.687C soc2@46.718C soc0@47.468C gpu@48.625C "
                 "tj@48.625C soc1@48.25C VDD_IN 4556mW/4556mW VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1451mW/1451mW")
# JetPack 7 (L4T 39): a third value per rail.
JP7_AGX_ORIN = ("07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) CPU [23%@2201,10%@2201] EMC_FREQ 3%@3199 "
                "GR3D_FREQ 12%@[1300,1300] cpu@52.968C/52.968C gpu@47.625C/47.625C "
                "VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW")


@pytest.mark.parametrize("line, current, average, units", [
    (JP4_NANO, {"POM_5V_IN": 3.014, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.084}, {"POM_5V_IN": 2.95}, ""),
    (JP4_XAVIER_NX, {"VDD_IN": 4.393, "VDD_CPU_GPU_CV": 0.532, "VDD_SOC": 1.333}, {"VDD_SOC": 1.333}, ""),
    (JP4_AGX_XAVIER, {"GPU": 1.155, "CPU": 0.385, "SOC": 2.504, "CV": 0.0, "VDDRQ": 0.192, "SYS5V": 2.692},
     {"SOC": 2.503}, ""),
    (JP5_AGX_ORIN, {"VDD_GPU_SOC": 1.592, "VDD_CPU_CV": -0.398, "VIN_SYS_5V0": 2.624, "VDDQ_VDD2_1V8AO": 0.403},
     {"VIN_SYS_5V0": 2.624}, "mW"),
    (JP5_ORIN_NX, {"VDD_IN": 5.0, "VDD_CPU_GPU_CV": 0.601, "VDD_SOC": 1.504}, {"VDD_IN": 5.0}, "mW"),
    (JP6_ORIN_NANO, {"VDD_IN": 4.556, "VDD_CPU_GPU_CV": 0.483, "VDD_SOC": 1.451}, {"VDD_IN": 4.556}, "mW"),
    (JP7_AGX_ORIN, {"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": 3.268, "VIN_SYS_5V0": 5.5}, {"VDD_CPU_CV": 3.268}, "mW"),
], ids=["jp4-nano", "jp4-xavier-nx", "jp4-agx-xavier", "jp5-agx-orin", "jp5-orin-nx", "jp6-orin-nano", "jp7-agx-orin"])
def test_rails_of_each_jetpack(line: str, current: dict, average: dict, units: str) -> None:
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed.current_w == pytest.approx(current)  # exactly these rails: RAM, SWAP, CPU, EMC are not rails
    for rail, watts in average.items():
        assert parsed.average_w[rail] == pytest.approx(watts)
    assert parsed.units == units


def test_lines_without_rails() -> None:
    assert parse_line("RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729] GR3D_FREQ 0%") is None
    assert parse_line("") is None
    assert parse_line("tegrastats: permission denied") is None


FAKE = """
import sys, time
lines = {lines!r}
for line in lines:
    print(line, flush=True)
    time.sleep(0.05)
time.sleep(30)
"""


def _fake_tegrastats(tmp_path: Path, lines: list) -> list:
    script = tmp_path / "tegrastats.py"
    script.write_text(textwrap.dedent(FAKE.format(lines=lines)))
    return [sys.executable, str(script)]


def test_tegrastats_source_samples_the_latest_line(tmp_path: Path) -> None:
    src = TegrastatsSource(command=_fake_tegrastats(tmp_path, [JP6_ORIN_NANO] * 3))
    try:
        assert src.describe()["total"] == "VDD_IN"
        sampler = PowerSampler(src, rate_hz=50)
        sampler.start()
        import time
        time.sleep(0.3)
        result = summarize(sampler.stop(), inferences=100)
    finally:
        src.close()
    assert result["source"] == "tegrastats" and result["average_w"] == pytest.approx(4.556)
    assert result["rails_w"]["VDD_SOC"] == pytest.approx(1.451)
    assert src.lines == 3


def test_tegrastats_without_rails_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no power rails"):
        TegrastatsSource(command=_fake_tegrastats(tmp_path, ["RAM 1/2MB CPU [1%@100]"]), first_line_s=0.5)


def test_no_tegrastats_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    src, reasons = open_source(str(tmp_path), only="tegrastats")
    assert src is None and reasons == ["tegrastats: tegrastats not found on PATH"]
