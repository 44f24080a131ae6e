"""Kubernetes resource quantities for task resources (`cpu: "500m"`, `memory: "4Gi"`, `gpu: 1`)."""

from __future__ import annotations

import re

_CPU = re.compile(r"^(\d+(\.\d+)?|\.\d+)m?$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
_MEMORY_FACTORS = {
    None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_cpu(value: object) -> str:
    """Return the quantity as Kubernetes writes it; raise ValueError with the reason."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"cpu must be a quantity like 2, \"0.5\" or \"500m\", got {value!r}")
    text = str(value).strip()
    if not _CPU.match(text):
        raise ValueError(f"cpu must be a quantity like 2, \"0.5\" or \"500m\", got {value!r}")
    cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    if cores <= 0:
        raise ValueError(f"cpu must be greater than 0, got {value!r}")
    return text


def memory_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"memory must be a quantity like \"512Mi\" or \"4Gi\", got {value!r}")
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ValueError(f"memory must be a quantity like \"512Mi\" or \"4Gi\", got {value!r}")
    size = float(match.group(1)) * _MEMORY_FACTORS[match.group(3)]
    if size <= 0:
        raise ValueError(f"memory must be greater than 0, got {value!r}")
    return int(size)


def parse_memory(value: object) -> str:
    memory_bytes(value)
    return str(value).strip()


def parse_gpu(value: object) -> int:
    """GPUs are whole devices: a non-negative integer (a numeric string is accepted)."""
    if isinstance(value, bool):
        raise ValueError(f"gpu must be a whole number of GPUs (0, 1, 2, ...), got {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"gpu must be a whole number of GPUs (0, 1, 2, ...), got {value!r}")
