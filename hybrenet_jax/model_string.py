"""Model strings: how the CLI and configs name networks, the way the paper does.

Grammar: ``NAME[:key=value,...]``, e.g. ``hrn-2x6x3x:m=16,depths=3-4-6-3,cull=S1,thin=S2+S3+S4,reuse=4``.

Names: ``resnet18 resnet34 resnet20 resnet32 resnet56 wrnDxK vgg16 hrn-AxBxCx stagech-SxSxSx``
plus the ConvNeXt-adapted ResNets (``convnext-t``, ...) and the native RegNet-X presets
(``regnetx-400mf``, ...; ``m`` is their stem width).

Keys: ``m`` (base width), ``depths`` (``3-4-6-3``), ``widths`` (``16-32-160-480``, ResNet
families only), ``cull`` / ``thin`` (stages joined by ``+``), ``reuse`` (ReLU-reuse factor N),
the Re2 ablations ``reuse_split=three|equal``, ``reuse_link=on|off``,
``reuse_layers=kept|alternate`` (defaults first; they need ``reuse``), ``classes``. Input size
and default class count come from the dataset.
"""

from __future__ import annotations

import dataclasses
import re

from hybrenet_jax import families
from hybrenet_jax.architecture import expand
from hybrenet_jax.dataset_info import dataset_info
from hybrenet_jax.errors import DescriptionError, ModelStringError
from hybrenet_jax.netspec import NetSpec, parse_stage_name

KEYS: tuple[str, ...] = ("m", "depths", "widths", "cull", "thin", "reuse", "reuse_split",
                         "reuse_link", "reuse_layers", "classes")
#: Accepted values of the Re2 ablation keys (the default first) and the NetSpec value of each.
REUSE_CHOICES: dict[str, dict[str, object]] = {
    "reuse_split": {"three": "three", "equal": "equal"},
    "reuse_link": {"on": True, "off": False},
    "reuse_layers": {"kept": "kept", "alternate": "alternate"},
}
#: The accepted name forms, from the one registry (:data:`hybrenet_jax.families.NAMES`).
NAME_FORMS: tuple[str, ...] = tuple(form.form for form in families.NAMES)


@dataclasses.dataclass(frozen=True)
class ModelString:
    """A parsed model string: the network name and its ``key=value`` options (as text)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        return dict(self.options).get(key)

    def with_options(self, **changes: str | None) -> "ModelString":
        """Copy with options set (``None`` removes a key); keys kept in canonical order."""
        opts = dict(self.options)
        for key, value in changes.items():
            if value is None:
                opts.pop(key, None)
            else:
                opts[key] = str(value)
        ordered = tuple((k, opts[k]) for k in KEYS if k in opts)
        return ModelString(self.name, ordered)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options)


def _error(text: str, start: int, end: int, message: str) -> ModelStringError:
    pointer = " " * start + "^" * max(1, end - start)
    return ModelStringError(f"invalid model string {text!r}: {message}\n  {text}\n  {pointer}")


def parse_model_string(text: str) -> ModelString:
    """Split ``NAME[:k=v,...]`` into a :class:`ModelString`, checking the syntax and keys."""
    if not isinstance(text, str) or not text.strip():
        raise ModelStringError("empty model string; expected NAME[:key=value,...], e.g. resnet18")
    text = text.strip()
    if len(text) > MAX_MODEL_STRING:  # before anything echoes it (twice, with a caret line)
        raise ModelStringError(f"model string of {len(text):,} characters ({text[:40]!r}...); "
                               f"at most {MAX_MODEL_STRING} are accepted")
    name, _, rest = text.partition(":")
    name = name.lower()
    if not name:
        raise _error(text, 0, 1, "missing network name before ':'")
    options: dict[str, str] = {}
    pos = len(name) + 1
    if rest:
        for item in rest.split(","):
            start, end = pos, pos + len(item)
            pos = end + 1
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or not value.strip():
                raise _error(text, start, end, f"option {item!r} is not of the form key=value")
            if key not in KEYS:
                raise _error(text, start, start + len(item.partition("=")[0]),
                             f"unknown key {key!r}; accepted keys: {', '.join(KEYS)}")
            if key in options:
                raise _error(text, start, end, f"key {key!r} given twice")
            options[key] = value.strip()
    return ModelString(name, tuple((k, options[k]) for k in KEYS if k in options))


def _int_option(ms: ModelString, key: str, text: str) -> int | None:
    value = ms.get(key)
    if value is None:
        return None
    if not re.fullmatch(r"\d+", value) or int(value) <= 0:
        start = text.lower().find(f"{key}=")
        raise _error(text, start, start + len(key) + 1 + len(value),
                     f"{key}={value!r} must be a positive integer")
    return int(value)


def _list_option(ms: ModelString, key: str, text: str) -> tuple[int, ...] | None:
    value = ms.get(key)
    if value is None:
        return None
    if not re.fullmatch(r"\d+(-\d+)*", value):
        start = text.lower().find(f"{key}=")
        raise _error(text, start, start + len(key) + 1 + len(value),
                     f"{key}={value!r} must be positive integers joined by '-', e.g. 3-4-6-3")
    return tuple(int(v) for v in value.split("-"))


def _choice_options(ms: ModelString, text: str) -> dict[str, object]:
    """The Re2 ablation keys given in ``ms`` as NetSpec fields (checked against REUSE_CHOICES)."""
    out: dict[str, object] = {}
    for key, choices in REUSE_CHOICES.items():
        value = ms.get(key)
        if value is None:
            continue
        start = text.lower().find(f"{key}=")
        span = (start, start + len(key) + 1 + len(value))
        if value.lower() not in choices:
            raise _error(text, *span, f"{key}={value!r}; accepted: {', '.join(choices)}")
        if ms.get("reuse") is None:
            raise _error(text, *span, f"{key}= shapes ReLU-reuse layers: give reuse=N too")
        out[key] = choices[value.lower()]
    return out


def _base_spec(ms: ModelString, text: str, m: int | None, depths, widths, kw) -> NetSpec:
    name = ms.name
    kw = dict(kw)
    if widths is not None:
        if name not in ("resnet18", "resnet34") or m is not None:
            start = text.lower().find("widths=")
            raise _error(text, start, start + 7 + len(ms.get("widths")),
                         "widths= is accepted only by resnet18/resnet34 (custom ResNet widths) "
                         "and not together with m=")
        default = families.RESNET34_DEPTHS if name == "resnet34" else (2,) * len(widths)
        return families.resnet(widths, depths or default, **kw)
    if m is not None:
        kw["m"] = m
    if depths is not None:
        kw["depths"] = depths
    found = families.find_name(name)
    if found is None:
        raise _error(text, 0, len(name), f"unknown network name {name!r}; accepted: "
                     + ", ".join(NAME_FORMS))
    form, match = found
    if (problem := form.check(match)) is not None:
        raise _error(text, 0, len(name), problem)
    return form.build(match, kw)


#: Size limits, checked on the description before anything is expanded, counted or costed:
#: far above every network of the paper (widths <= 4,096, <= 36 blocks, 200 classes), low
#: enough that a typo answers in milliseconds instead of minutes of expansion and costing.
MAX_MODEL_STRING = 300  # characters (the longest string of every key is ~170)
MAX_WIDTH = 16_384  # channels of any layer: a 3x3 conv that wide has 2.4 billion weights
MAX_BLOCKS = 1_024  # blocks over all stages (ResNet-1202 has 600)
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841


def check_size(spec: NetSpec, text: str) -> None:
    """Refuse a description wider, deeper or with more classes than the limits above.

    Raises:
      ModelStringError: one line naming the limit that was exceeded and why it exists.
    """
    shown = text if len(text) <= 60 else text[:57] + "..."
    widest = max((spec.stem_width, *spec.widths, getattr(spec, "head_width", 0)))
    if widest > MAX_WIDTH:
        raise ModelStringError(
            f"model string {shown!r} has a layer {widest:,} channels wide; at most "
            f"{MAX_WIDTH:,} are accepted (a 3x3 conv {MAX_WIDTH:,} channels wide has "
            f"{9 * MAX_WIDTH ** 2 / 1e9:.1f} billion weights)")
    if sum(spec.depths) > MAX_BLOCKS:
        raise ModelStringError(
            f"model string {shown!r} has {sum(spec.depths):,} blocks; at most {MAX_BLOCKS:,} "
            f"are accepted over all stages")
    if spec.classes > MAX_CLASSES:
        raise ModelStringError(
            f"model string {shown!r} has {spec.classes:,} classes; at most {MAX_CLASSES:,} "
            f"are accepted")


def spec_from_model_string(text: str, dataset: str = "cifar100") -> NetSpec:
    """Build the :class:`NetSpec` a model string names, for ``dataset``'s input shape.

    Raises:
      ModelStringError: the string is malformed (the message points at the bad part).
      DescriptionError: the string parses but describes an invalid network.
    """
    ms = parse_model_string(text)
    info = dataset_info(dataset)
    m = _int_option(ms, "m", text)
    reuse = _int_option(ms, "reuse", text)
    classes = _int_option(ms, "classes", text)
    depths = _list_option(ms, "depths", text)
    widths = _list_option(ms, "widths", text)
    kw = dict(input_size=info.input_size, classes=classes or info.classes, name=str(ms))
    spec = _base_spec(ms, text, m, depths, widths, kw)
    check_size(spec, text)
    # ReLU options go in together: whether a reuse factor divides a width depends on which
    # stages keep their ReLUs.
    relu_options: dict = {"reuse": reuse or 1, **_choice_options(ms, text)}
    for key, field in (("cull", "culled"), ("thin", "thinned")):
        value = ms.get(key)
        if value is None:
            continue
        try:
            relu_options[field] = frozenset(
                parse_stage_name(tok, spec.num_stages) for tok in value.split("+"))
        except DescriptionError as err:
            start = text.lower().find(f"{key}=")
            raise _error(text, start, start + len(key) + 1 + len(value), str(err)) from None
    spec = spec.replace(name=str(ms), **relu_options)
    expand(spec)  # structural checks (e.g. a reuse factor must divide every Re2 layer's width)
    return spec


def model_string_with(text: str, **changes: str | None) -> str:
    """Return ``text`` with options changed, e.g. ``model_string_with(s, thin="S2+S3")``."""
    return str(parse_model_string(text).with_options(**changes))
