"""A Jetson's state from sysfs: board, L4T/JetPack, nvpmodel mode, clocks pinned or not, temperatures, throttling.

Paths are those of NVIDIA's Jetson Linux Developer Guide, "Platform Power and Performance" for each
family (L4T 32.7 power_management_nano.html and power_management_jetson_xavier.html; r35/r36
JetsonXavierNxSeriesAndJetsonAgxXavierSeries.html and
JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html): GPU frequency through devfreq
(/sys/class/devfreq/<gpu>), CPU through cpufreq, EMC through debugfs (root only), thermal zones
through /sys/class/thermal. `jetson_clocks` pins each clock by raising its minimum to its maximum,
which is what `pinned` checks; the idle GPU or CPU frequency alone says nothing.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from system import Fields, path, read_int, read_text, root

# L4T release -> JetPack release, from NVIDIA's JetPack archive; others are named by series only.
JETPACK = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6", "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1",
    "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1",
    "36.4.3": "6.2", "36.4.4": "6.2.1",
}
JETPACK_SERIES = {"32": "4.x", "34": "5.0 (developer preview)", "35": "5.x", "36": "6.x", "38": "7.x", "39": "7.x"}

_RELEASE_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")
_MODE_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)")
_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)")
_QUERY_RE = re.compile(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)")
_STATUS_RE = re.compile(r"pmode:\s*(\d+)")
_WATTS_RE = re.compile(r"(\d+)W")
_CORES_RE = re.compile(r"(\d+)CORE")
# devfreq node names of Jetson GPUs: Nano 57000000.gpu, Xavier 17000000.gv11b, Orin 17000000.ga10b (JetPack 5)
# or 17000000.gpu (JetPack 6).
_GPU_DEVFREQ_RE = re.compile(r"gpu|gv11b|ga10b|gp10b|gm20b")
# A frequency within 1 % of its ceiling counts as at the ceiling (devfreq rounds to its table).
_AT_MAX = 0.99
# Thermal zones of sensors that are not fitted read -256 C on Orin.
_NOT_FITTED_C = -200.0


def is_jetson(base: Optional[str] = None) -> bool:
    """True on an NVIDIA Jetson (L4T release file, or a device-tree model naming Jetson)."""
    base = root(base)
    if os.path.isfile(path(base, "/etc/nv_tegra_release")):
        return True
    model, _ = read_text(path(base, "/proc/device-tree/model"))
    return bool(model and "jetson" in model.lower())


def l4t_release(text: str) -> Optional[str]:
    """'32.7.1' from /etc/nv_tegra_release ('# R32 (release), REVISION: 7.1, ...')."""
    m = _RELEASE_RE.search(text or "")
    if not m:
        return None
    revision = m.group(2).split(".")
    revision += ["0"] * (2 - len(revision))
    return "{}.{}".format(m.group(1), ".".join(revision[:2]))


def jetpack_for(l4t: Optional[str]) -> Optional[str]:
    """The JetPack release that ships an L4T release (exact where known, else its series such as '6.x')."""
    if not l4t:
        return None
    return JETPACK.get(l4t) or JETPACK_SERIES.get(l4t.split(".")[0])


def parse_nvpmodel_conf(text: str) -> Tuple[Dict[int, str], Optional[int]]:
    """Power modes {id: name} and the default id from /etc/nvpmodel.conf ('< POWER_MODEL ID=0 NAME=MAXN >')."""
    modes = {int(i): name for i, name in _MODE_RE.findall(text or "")}
    m = _DEFAULT_RE.search(text or "")
    return modes, (int(m.group(1)) if m else None)


def parse_nvpmodel_query(text: str) -> Tuple[Optional[int], Optional[str]]:
    """(id, name) from `nvpmodel -q` ('NV Power Mode: MAXN\\n0')."""
    m = _QUERY_RE.search(text or "")
    return (int(m.group(2)), m.group(1)) if m else (None, None)


def maximum_mode(modes: Dict[int, str]) -> Optional[int]:
    """The board's highest-performance mode: MAXN_SUPER, else MAXN, else the most watts, else mode 0.

    The id differs by board (an Orin Nano's MAXN_SUPER is mode 2), so it is found by name.
    """
    if not modes:
        return None
    for wanted in ("MAXN_SUPER", "MAXN"):
        for i in sorted(modes):
            if modes[i].upper() == wanted:
                return i
    for i in sorted(modes):
        if modes[i].upper().startswith("MAXN"):
            return i
    # Else the most watts, then the most cores (Xavier NX: MODE_20W_6CORE over MODE_20W_2CORE).
    watts = {i: (int(m.group(1)), _cores(modes[i])) for i, m in ((i, _WATTS_RE.search(n)) for i, n in modes.items())
             if m}
    if watts:
        return max(sorted(watts), key=lambda i: watts[i])
    return 0 if 0 in modes else min(modes)


def _cores(name: str) -> int:
    m = _CORES_RE.search(name.upper())
    return int(m.group(1)) if m else 0


def _current_mode(base: str, fields: Fields) -> Tuple[Optional[int], Optional[str]]:
    """The mode nvpmodel last set (its status file), else `nvpmodel -q` on this machine."""
    text, why = read_text(path(base, "/var/lib/nvpmodel/status"))
    m = _STATUS_RE.search(text or "")
    if m:
        return int(m.group(1)), None
    exe = shutil.which("nvpmodel") if base == "/" else None
    if exe:
        try:
            out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            why = "nvpmodel -q: {}".format(exc)
        else:
            mode_id, name = parse_nvpmodel_query(out)
            if mode_id is not None:
                return mode_id, name
            why = "nvpmodel -q: unexpected output {!r}".format(out.strip()[:80])
    fields.unreadable["nvpmodel"] = why or "no nvpmodel status"
    return None, None


def nvpmodel(base: Optional[str] = None) -> Dict[str, Any]:
    """Current power mode (id and name), the board's maximum mode, and whether they are the same."""
    base = root(base)
    f = Fields()
    text, why = read_text(path(base, "/etc/nvpmodel.conf"))
    modes, default = parse_nvpmodel_conf(text or "")
    if text is None:
        f.unreadable["modes"] = why or ""
    mode_id, name = _current_mode(base, f)
    best = maximum_mode(modes)
    f.put("id", mode_id)
    f.put("name", name or (modes.get(mode_id) if mode_id is not None else None))
    f.put("max_id", best)
    f.put("max_name", modes.get(best) if best is not None else None)
    f.put("is_max", (mode_id == best) if mode_id is not None and best is not None else None,
          "current or maximum mode unknown")
    f.put("default_id", default)
    f.put("modes", {str(k): v for k, v in sorted(modes.items())})
    return f.to_dict()


def _pinned(floor: Optional[float], ceiling: Optional[float]) -> Optional[bool]:
    if floor is None or not ceiling:
        return None
    return floor >= _AT_MAX * ceiling


def _mhz(hz: Optional[int], scale: float = 1e6) -> Optional[float]:
    return None if hz is None else round(hz / scale, 1)


def gpu_clocks(base: Optional[str] = None) -> Dict[str, Any]:
    """The integrated GPU's devfreq: current, minimum and maximum frequency in MHz, and whether it is pinned."""
    base = root(base)
    f = Fields()
    nodes = sorted(n for n in glob.glob(path(base, "/sys/class/devfreq/*"))
                   if _GPU_DEVFREQ_RE.search(os.path.basename(n)))
    if not nodes:
        f.put("pinned", None, "no GPU devfreq node under {}".format(path(base, "/sys/class/devfreq")))
        return f.to_dict()
    node = nodes[0]
    f.put("devfreq", os.path.basename(node))
    values = {}
    for key in ("cur_freq", "min_freq", "max_freq"):
        values[key], why = read_int(os.path.join(node, key))
        f.put(key.replace("_freq", "_mhz"), _mhz(values[key]), why)
    text, why = read_text(os.path.join(node, "available_frequencies"))
    table = [int(v) for v in (text or "").split() if v.isdigit()]
    f.put("hw_max_mhz", _mhz(max(table)) if table else None, why or "no available_frequencies")
    f.put("pinned", _pinned(values["min_freq"], values["max_freq"]), "minimum or maximum frequency unreadable")
    return f.to_dict()


def _cpu_list(text: str) -> List[int]:
    """CPU numbers from a kernel list such as '0-3,6'."""
    cpus: List[int] = []
    for part in (text or "").strip().split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            cpus.append(int(part))
    return cpus


def cpu_clocks(base: Optional[str] = None) -> Dict[str, Any]:
    """cpufreq of each online CPU in MHz (current, scaling minimum and maximum, hardware maximum), and pinned."""
    base = root(base)
    f = Fields()
    cpu_dir = path(base, "/sys/devices/system/cpu")
    online_text, why = read_text(os.path.join(cpu_dir, "online"))
    online = _cpu_list(online_text or "")
    f.put("online", (online_text or "").strip() or None, why)
    offline_text, _ = read_text(os.path.join(cpu_dir, "offline"))
    f.put("offline", (offline_text or "").strip())
    lists: Dict[str, List[Optional[float]]] = {"cur_mhz": [], "min_mhz": [], "max_mhz": [], "hw_max_mhz": []}
    files = {"cur_mhz": "scaling_cur_freq", "min_mhz": "scaling_min_freq", "max_mhz": "scaling_max_freq",
             "hw_max_mhz": "cpuinfo_max_freq"}
    pinned: List[Optional[bool]] = []
    for cpu in online:
        raw = {}
        for key, name in files.items():
            raw[key], why = read_int(os.path.join(cpu_dir, "cpu{}".format(cpu), "cpufreq", name))
            lists[key].append(_mhz(raw[key], 1e3))
            if raw[key] is None:
                f.unreadable.setdefault(key, why or "")
        pinned.append(_pinned(raw["min_mhz"], raw["max_mhz"]))
    for key, values in lists.items():
        f.put(key, values)
    known = [p for p in pinned if p is not None]
    f.put("pinned", (all(known) if known else None), "no readable cpufreq")
    return f.to_dict()


def emc_clock(base: Optional[str] = None) -> Dict[str, Any]:
    """The memory controller clock (debugfs, root only): current and maximum in MHz, and pinned.

    Xavier and Orin expose it under the BPMP's debugfs, the Nano under the clock framework's and
    tegra_bwmgr's (the locations jetson_clocks itself uses).
    """
    base = root(base)
    f = Fields()
    bpmp = path(base, "/sys/kernel/debug/bpmp/debug/clk/emc")
    if os.path.isdir(bpmp):
        cur, why_cur = read_int(os.path.join(bpmp, "rate"))
        top, why_top = read_int(os.path.join(bpmp, "max_rate"))
    else:
        cur, why_cur = read_int(path(base, "/sys/kernel/debug/clk/override.emc/clk_rate"))
        top, why_top = read_int(path(base, "/sys/kernel/debug/tegra_bwmgr/emc_max_rate"))
    f.put("cur_mhz", _mhz(cur), why_cur)
    f.put("max_mhz", _mhz(top), why_top)
    f.put("pinned", _pinned(cur, top), "EMC rate unreadable (debugfs needs root)")
    return f.to_dict()


def temperatures(base: Optional[str] = None) -> Dict[str, Optional[float]]:
    """Thermal zones {type: degrees C}; a zone whose sensor is not fitted (-256 C) is None."""
    base = root(base)
    temps: Dict[str, Optional[float]] = {}
    for zone in sorted(glob.glob(path(base, "/sys/class/thermal/thermal_zone*")),
                       key=lambda z: int(re.sub(r"\D", "", os.path.basename(z)) or 0)):
        name, _ = read_text(os.path.join(zone, "type"))
        milli, _ = read_int(os.path.join(zone, "temp"))
        key = (name or os.path.basename(zone)).strip()
        temps[key] = None if milli is None or milli / 1000.0 < _NOT_FITTED_C else round(milli / 1000.0, 2)
    return temps


def throttling(base: Optional[str] = None) -> Optional[List[Dict[str, Any]]]:
    """Thermal cooling devices that are cutting clocks now (state above 0), fans left out; None if none reported."""
    base = root(base)
    devices = sorted(glob.glob(path(base, "/sys/class/thermal/cooling_device*")))
    active = []
    seen = False
    for dev in devices:
        name, _ = read_text(os.path.join(dev, "type"))
        cur, _ = read_int(os.path.join(dev, "cur_state"))
        top, _ = read_int(os.path.join(dev, "max_state"))
        name = (name or "").strip()
        if cur is None or "fan" in name.lower():
            continue
        seen = True
        if cur > 0:
            active.append({"device": name, "state": cur, "max_state": top})
    return active if seen else None


def state(base: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Everything above for this board, or None when this is not a Jetson."""
    base = root(base)
    if not is_jetson(base):
        return None
    f = Fields()
    model, why = read_text(path(base, "/proc/device-tree/model"))
    f.put("model", model.strip("\x00\n ") if model else None, why)
    release, why = read_text(path(base, "/etc/nv_tegra_release"))
    l4t = l4t_release(release or "")
    f.put("l4t", l4t, why or ("unrecognised /etc/nv_tegra_release" if release else None))
    f.put("jetpack", jetpack_for(l4t), "L4T release unknown")
    f.put("nvpmodel", nvpmodel(base))
    clocks = {"gpu": gpu_clocks(base), "cpu": cpu_clocks(base), "emc": emc_clock(base)}
    verdicts = [c.get("pinned") for c in clocks.values()]
    known = [v for v in verdicts if v is not None]
    f.put("clocks_pinned", (all(known) if known else None), "no clock readable")
    f.put("clocks", clocks)
    f.put("temperatures_c", temperatures(base))
    f.put("throttling", throttling(base), "no thermal cooling devices reported")
    return f.to_dict()


def warning(current: Optional[Dict[str, Any]]) -> Optional[str]:
    """A warning naming the commands to run when the board is not in its maximum mode or its clocks float."""
    if not current:
        return None
    mode = current.get("nvpmodel") or {}
    problems = []
    if mode.get("is_max") is False:
        problems.append("power mode {} ({}) is not its maximum, {} ({})".format(
            mode.get("id"), mode.get("name"), mode.get("max_id"), mode.get("max_name")))
    if current.get("clocks_pinned") is False:
        problems.append("clocks are not pinned")
    if not problems:
        return None
    max_id = mode.get("max_id")
    command = "sudo nvpmodel -m {} && sudo jetson_clocks".format(0 if max_id is None else max_id)
    return "this Jetson ({}): {}; scores will not be comparable with others: run `{}` before measuring".format(
        current.get("model") or "board", " and ".join(problems), command)
