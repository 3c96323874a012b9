"""The power rails of a tegrastats line, in each JetPack's format (the fallback when sysfs cannot be read).

Rail fields are NAME CURRENT/AVERAGE in milliwatts; only their spelling changed. Where each format
comes from:

- JetPack 4.x (L4T 32): no unit, `POM_5V_IN 3014/3014` (Nano), `VDD_IN 4393/4393` (Xavier NX),
  bare names on the AGX Xavier (`GPU 1155/1155 ... SYS5V 2692/2692`). Units from NVIDIA's L4T 32
  Developer Guide, "tegrastats Utility" (X = current, Y = average power, in milliwatts); the lines
  as jetson_stats (rbonghi/jetson_stats) records them for its tegrastats emulator.
- JetPack 5.x (L4T 35): a unit on each value, `VDD_IN 5000mW/5000mW`; AGX Orin logs published with
  Jetson projects print `VDD_GPU_SOC 1592mW/1592mW ... VDDQ_VDD2_1V8AO 403mW/403mW`.
- JetPack 6.x (L4T 36): the same rail format as 5.x (temperatures became lower-case, `cpu@47.6C`);
  an Orin Nano on L4T R36.4.3 in MAXN_SUPER, in a public Jetson lab guide, prints
  `VDD_IN 4556mW/4556mW VDD_CPU_GPU_CV 483mW/483mW VDD_SOC 1451mW/1451mW`.
- JetPack 7 (L4T 38/39) appends a third value (`VDD_GPU_SOC 5139mW/5139mW/5139mW`, a real AGX
  Orin line in jetson_stats' parser tests); it is accepted and ignored.

Hand-written because the format is a line of text with no library that parses it for every JetPack.
A rail can read a little below zero at idle (`VDD_CPU_CV -398mW/-398mW`); it is kept as read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Optional

# NAME, current, optional unit, average, optional unit, optional third value; the value must end the
# token, which keeps `RAM 2147/7620MB` and `SWAP 0/3810MB` out.
_RAIL_RE = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]*) (-?\d+)(mW)?/(-?\d+)(?:mW)?(?:/-?\d+(?:mW)?)?(?=\s|$)")


@dataclass
class TegrastatsLine:
    """Power rails of one line: current and average power in watts, and which format they were in."""

    current_w: Dict[str, float] = field(default_factory=dict)
    average_w: Dict[str, float] = field(default_factory=dict)
    units: str = ""  # "mW" (JetPack 5 and later) or "" (JetPack 4: milliwatts without a unit)


def parse_line(line: str) -> Optional[TegrastatsLine]:
    """The rails of a tegrastats line, or None when it has none (tegrastats without power rails, or not its output)."""
    out = TegrastatsLine()
    for name, current, unit, average in _RAIL_RE.findall(line.strip()):
        out.current_w[name] = int(current) / 1000.0
        out.average_w[name] = int(average) / 1000.0
        out.units = unit or out.units
    return out if out.current_w else None
