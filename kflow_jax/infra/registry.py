"""Registries by name: the one idiom for transforms, models, data sets,
solvers and blends.

  TRANSFORMS = registry.Registry("K-amplitude transform", "config.transform")
  @TRANSFORMS.register("fourier")
  def build(shape, ...): ...
  TRANSFORMS.get("fourier")            # the entry, or a ValueError listing
                                       # the valid names
  TRANSFORMS.build("fourier", shape, **options)   # unknown options refused

An entry may carry hooks by keyword (`register(name, prepare=fn)`), e.g.
the PCA transform's `prepare`, which fits its basis on data before it can
be built; callers ask `hook(name, "prepare")` instead of testing names.
"""
import inspect
from typing import Any, Callable, Optional


class Registry:
  """name -> entry (a callable or a value) plus named hooks."""

  def __init__(self, kind: str, config_key: Optional[str] = None,
               positional: tuple = ()):
    """positional: leading arguments the caller always passes (e.g. a
    transform's `shape`), not options a config sets."""
    self.kind = kind
    self.config_key = config_key
    self.positional = tuple(positional)
    self._entries: dict = {}
    self._hooks: dict = {}

  def register(self, name: str, entry: Any = None, **hooks):
    """Adds `entry` under `name`; without an entry, a decorator."""
    def add(value):
      self._entries[name] = value
      self._hooks[name] = dict(hooks)
      return value
    return add if entry is None else add(entry)

  def names(self) -> list:
    return sorted(self._entries)

  def __contains__(self, name) -> bool:
    return name in self._entries

  def get(self, name: str) -> Any:
    if name not in self._entries:
      where = f"{self.config_key}.name=" if self.config_key else ""
      raise ValueError(
          f"unknown {self.kind} {where}{name!r}; valid names: "
          f"{self.names()}.")
    return self._entries[name]

  def hook(self, name: str, hook: str) -> Optional[Callable]:
    """The entry's hook `hook`, or None when it has none."""
    self.get(name)
    return self._hooks[name].get(hook)

  def options(self, name: str) -> list:
    """Keyword options a callable entry accepts (the registry's positional
    arguments excluded)."""
    return [n for n in _keyword_options(self.get(name))
            if n not in self.positional]

  def build(self, name: str, *args, **options):
    """Calls the entry with `options`, refusing unknown ones by name."""
    entry = self.get(name)
    accepted = self.options(name)
    bad = sorted(set(options) - set(accepted))
    if bad and not _takes_kwargs(entry):
      where = f" ({self.config_key}.*)" if self.config_key else ""
      raise ValueError(
          f"{self.kind} {name!r} has no option(s) {bad}{where}; valid "
          f"options: {accepted}.")
    return entry(*args, **options)


def _signature(entry):
  try:
    return inspect.signature(entry)
  except (TypeError, ValueError):
    return None


def _takes_kwargs(entry) -> bool:
  sig = _signature(entry)
  return sig is not None and any(
      p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _keyword_options(entry) -> list:
  sig = _signature(entry)
  if sig is None:
    return []
  return [n for n, p in sig.parameters.items()
          if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
          and n not in ("self", "parent", "name")]
