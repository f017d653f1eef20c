"""Numbers as people read them."""


def human_count(n: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f} {suffix} ({n:,})"
    return f"{n:,}"


def human_bytes(n: int) -> str:
    for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= size:
            return f"{n / size:.1f} {suffix}"
    return f"{n} bytes"


def duration(seconds: float | None) -> str:
    """1 h 02 min, 3 min 05 s, 12 s."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def plural(count: int, noun: str) -> str:
    """1 example, 2 examples, 1,234 examples."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
