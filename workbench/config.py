"""Plain dataclass configs that are stored in projects and shown in forms."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

SOURCE_KINDS = ("demo", "folder", "gguf", "hub")
DEVICES = ("auto", "cuda", "mps", "cpu")
QUANTIZATIONS = ("auto", "nf4", "int8", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True)
class ModelSpec:
    """What base model to load and how; saved in the project so it reopens the same way."""

    kind: str = "demo"
    """Where the weights come from: the bundled demo model, a Hugging Face folder, a GGUF file,
    or a hub id that is already in the local Hugging Face cache."""
    location: str = ""
    """Folder or file path, or the hub id ("org/name"); unused for the demo model."""
    device: str = "auto"
    """auto picks CUDA, else Apple MPS, else the CPU."""
    quantization: str = "auto"
    """auto means 4-bit NF4 on CUDA and full precision elsewhere; nf4 and int8 use bitsandbytes."""
    dtype: str = "auto"
    """Compute dtype: auto is bfloat16 on CUDA and MPS, float32 on the CPU."""
    allow_pickle: bool = False
    """Allow .bin/.pt weights, which can run arbitrary code when unpickled. Off by default."""
    trust_remote_code: bool = False
    """Run modelling code shipped with the model. Off unless the user turns it on."""

    def __post_init__(self) -> None:
        for name, allowed in (("kind", SOURCE_KINDS), ("device", DEVICES),
                              ("quantization", QUANTIZATIONS), ("dtype", DTYPES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"model {name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.kind != "demo" and not self.location.strip():
            raise ValueError(f"a {self.kind} model source needs a location")

    @property
    def display_name(self) -> str:
        if self.kind == "demo":
            return "SmolLM2-135M-Instruct (demo)"
        return self.location.rstrip("/").split("/")[-1] if self.kind != "hub" else self.location

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return from_known_fields(cls, data)


def from_known_fields(cls, data: dict):
    """A config from stored JSON, ignoring keys a newer or older version wrote."""
    known = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in known})


def with_overrides(config, pairs: list[str]):
    """A copy of a dataclass config with `key=value` strings applied, each converted to the
    field's type (as the command line's --set gives them); unknown keys and bad values raise
    ValueError naming the key."""
    from dataclasses import replace

    types = {f.name: f.type for f in fields(config)}
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set needs key=value, not {pair!r}")
        if key not in types:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(types))}")
        changes[key] = _convert(key, text.strip(), str(types[key]))
    return replace(config, **changes)


def _convert(key: str, text: str, type_name: str):
    try:
        if type_name.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("true", "1", "yes", "on")
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError:
        kind = ("true or false" if type_name.startswith("bool") else
                "a whole number" if type_name.startswith("int") else "a number")
        raise ValueError(f"{key} must be {kind}, not {text!r}") from None
    return text


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass, inherited ones included (a
    subclass that redeclares a field may give it its own text); shown as tooltips in forms."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or "__dataclass_fields__" not in vars(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, following in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                    and isinstance(following.value.value, str):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs
