"""What a proof is made from and what rendering returns.

- :class:`PostcardDesign` is a campaign's stored design JSON, validated once by
  :meth:`PostcardDesign.from_mapping`: a bad design is the campaign's fault, so it raises
  :class:`InvalidDesign` (a ``ValueError``) with a sentence a person can act on, and no renderer
  is ever asked to draw it.
- :class:`ProofRequest` is one recipient's postcard: the design plus the personalization fields,
  the recipient's offer code and the link its QR code opens.
- :class:`PostcardContent` is the request after personalization (final texts, address block):
  what every renderer draws, and what the rendering gateway and Pixelixe receive.
- :class:`RenderedProof` is the result: print-size front and back PNGs and who drew them.

Rendering has no side effects, so a request may be rendered any number of times; the
:meth:`ProofRequest.fingerprint` names its content, so hosted images can be keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any

from mail_pipeline.domain.fields import OFFER_CODE_MAX
from mail_pipeline.domain.offer_codes import (
    normalize_prefix,
    prefix_problem,
    qr_target,
    qr_template_problem,
    qr_url_problem,
    shop_url_problem,
)
from mail_pipeline.domain.placeholders import placeholder_problems

#: Print-size pixels (width, height), landscape, at 300 DPI including the 0.125" bleed.
#: 4x6: 6.25" x 4.25" (Lob's art size); A6: 148 x 105 mm.
PRINT_SIZES: dict[str, tuple[int, int]] = {"4x6": (1875, 1275), "A6": (1748, 1240)}

#: The country a size is mailed in domestically (its address block omits the country line).
HOME_COUNTRY: dict[str, str] = {"4x6": "US", "A6": "GB"}

_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_TEMPLATE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidProofRequest(ValueError):
    """The request cannot be rendered by anyone; retrying or another renderer cannot help."""


class InvalidDesign(InvalidProofRequest):
    """A campaign's design is unusable; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("the postcard design is invalid: " + "; ".join(self.problems))


def normalize_color(value: str) -> str:
    """``#abc`` or ``#AABBCC`` -> ``#aabbcc``; raises ``ValueError`` for anything else."""
    if not isinstance(value, str) or not _COLOR.match(value.strip()):
        raise ValueError(f"{value!r} is not a #RRGGBB colour")
    hexits = value.strip()[1:].lower()
    if len(hexits) == 3:
        hexits = "".join(c * 2 for c in hexits)
    return "#" + hexits


@dataclass(frozen=True)
class PostcardDesign:
    """A campaign's postcard: texts may hold ``{first_name}``-style placeholders.

    Placeholders name a recipient field (``first_name``, ``last_name``, ``full_name``,
    ``city``, ``region``, ``postal_code``, ``country``), ``brand_name``, ``offer_code`` or a key
    of the recipient's extra properties; ``{first_name|friend}`` gives a default.

    Offer codes (rules in :mod:`mail_pipeline.domain.offer_codes`): every recipient gets its
    own code at proofing, generated with ``offer_code_prefix`` when the organization uploaded
    no pool; ``offer_code`` is a campaign-wide code, printed only on a card whose request
    carries no code of its own. The QR code opens ``qr_url_template`` (an https URL with
    ``{code}``) or else ``{shop_url}/discount/{code}``; with neither, no QR is printed.
    """

    template: str
    headline: str
    brand_name: str
    body: str = ""
    offer_code: str | None = None
    background_color: str = "#ffffff"
    accent_color: str = "#1f6feb"
    back_message: str = ""
    size: str = "4x6"
    offer_code_prefix: str | None = None
    shop_url: str | None = None
    qr_url_template: str | None = None

    FIELDS = (
        "template",
        "headline",
        "brand_name",
        "body",
        "offer_code",
        "background_color",
        "accent_color",
        "back_message",
        "size",
        "offer_code_prefix",
        "shop_url",
        "qr_url_template",
    )
    _OPTIONAL = ("offer_code", "offer_code_prefix", "shop_url", "qr_url_template")
    _LIMITS = {"headline": 140, "brand_name": 60, "body": 700, "back_message": 900}

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise InvalidDesign(problems)
        object.__setattr__(self, "background_color", normalize_color(self.background_color))
        object.__setattr__(self, "accent_color", normalize_color(self.accent_color))
        object.__setattr__(self, "offer_code_prefix", normalize_prefix(self.offer_code_prefix))
        for name in ("shop_url", "qr_url_template"):
            value = getattr(self, name)
            object.__setattr__(self, name, value.strip() if value else None)

    def _problems(self) -> list[str]:
        problems: list[str] = []
        for name in (
            "template",
            "headline",
            "brand_name",
            "body",
            "back_message",
            "size",
            "background_color",
            "accent_color",
        ):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be text")
        if problems:
            return problems
        if not _TEMPLATE.match(self.template):
            problems.append(
                f"template {self.template!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if self.size not in PRINT_SIZES:
            problems.append(f"size {self.size!r} is not one of {', '.join(PRINT_SIZES)}")
        for name in ("headline", "brand_name"):
            if not getattr(self, name).strip():
                problems.append(f"{name} is empty")
        for name, limit in self._LIMITS.items():
            text = getattr(self, name)
            if len(text) > limit:
                problems.append(f"{name} is {len(text)} characters; at most {limit} fit")
            problems.extend(placeholder_problems(name, text))
        for name in ("background_color", "accent_color"):
            try:
                normalize_color(getattr(self, name))
            except ValueError as exc:
                problems.append(f"{name} {exc}")
        if self.offer_code is not None:
            if not isinstance(self.offer_code, str):
                problems.append("offer_code must be text")
            elif not self.offer_code.strip() or len(self.offer_code) > 32:
                problems.append("offer_code must be 1-32 characters when given")
            elif "\n" in self.offer_code or "{" in self.offer_code:
                problems.append("offer_code must be one line without placeholders")
        for name, check in (
            ("offer_code_prefix", prefix_problem),
            ("shop_url", shop_url_problem),
            ("qr_url_template", qr_template_problem),
        ):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                problem = check(value)
                if problem:
                    problems.append(problem)
        return problems

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PostcardDesign:
        """Validate a stored design JSON object; :class:`InvalidDesign` lists what is wrong.

        Unknown keys are refused rather than ignored: a misspelt ``"headine"`` would otherwise
        print a postcard without its headline.
        """
        if not isinstance(data, Mapping):
            raise InvalidDesign([f"expected a JSON object, got {type(data).__name__}"])
        problems = [f"unknown field {key!r}" for key in data if key not in cls.FIELDS]
        for required in ("template", "headline", "brand_name"):
            if data.get(required) in (None, ""):
                problems.append(f"{required} is missing")
        if problems:
            raise InvalidDesign(problems)
        values = {key: data[key] for key in cls.FIELDS if key in data}
        for key in cls._OPTIONAL:
            if values.get(key) == "":
                values[key] = None
        for key in ("body", "back_message"):
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def qr_url(self, code: str | None) -> str | None:
        """The link the QR code opens for ``code``, or None when the card has no QR."""
        return qr_target(code, shop_url=self.shop_url, template=self.qr_url_template)


@dataclass(frozen=True)
class ProofRequest:
    """One recipient's postcard: the campaign's design and the recipient's fields."""

    recipient_id: int
    campaign_id: int
    design: PostcardDesign
    address_lines: tuple[str, ...]
    city: str
    postal_code: str
    country: str
    region: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    #: The CDP's other profile properties, usable as ``{placeholders}``.
    properties: Mapping[str, str] = field(default_factory=dict)
    #: The recipient's own offer code (printed instead of the design's campaign-wide code).
    offer_code: str | None = None
    #: The link the postcard's QR code opens (:meth:`PostcardDesign.qr_url`); None: no QR.
    qr_url: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.offer_code is not None and (
            not self.offer_code.strip()
            or len(self.offer_code) > OFFER_CODE_MAX
            or any(c in self.offer_code for c in "\n\r{}")
        ):
            problems.append(f"offer code must be one line of 1-{OFFER_CODE_MAX} characters")
        if self.qr_url is not None:
            problem = qr_url_problem(self.qr_url)
            if problem:
                problems.append(problem)
        if problems:
            raise InvalidProofRequest(
                f"recipient {self.recipient_id} cannot be proofed: {'; '.join(problems)}"
            )
        object.__setattr__(
            self,
            "address_lines",
            tuple(line.strip() for line in self.address_lines if line and line.strip()),
        )
        missing = [
            name
            for name, value in (
                ("an address line", self.address_lines),
                ("the city", (self.city or "").strip()),
                ("the postal code", (self.postal_code or "").strip()),
                ("the country", (self.country or "").strip()),
            )
            if not value
        ]
        if missing:
            raise InvalidProofRequest(
                f"recipient {self.recipient_id} cannot be proofed: missing {', '.join(missing)}"
            )

    @property
    def size(self) -> str:
        return self.design.size

    def fingerprint(self) -> str:
        """16 hex digits naming everything that shows on the postcard.

        Equal requests give equal fingerprints in every process; any change to the design,
        the recipient's fields, its offer code or its QR link gives a new one, so a re-proof
        after a fix never reuses a stale hosted image.
        """
        doc = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        doc["design"] = self.design.to_mapping()
        doc["properties"] = {str(k): str(v) for k, v in sorted(self.properties.items())}
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PostcardContent:
    """A personalized postcard, ready to draw: final texts, colours and the address block."""

    size: str
    template: str
    brand_name: str
    headline: str
    body: str
    offer_code: str | None
    back_message: str
    background_color: str
    accent_color: str
    #: Recipient name, street lines, locality line(s), and the country when not domestic.
    address_block: tuple[str, ...]
    #: The link the QR code opens (it carries ``offer_code``); None: the card has no QR.
    qr_url: str | None = None

    def to_fields(self) -> dict[str, Any]:
        """The JSON form sent to remote renderers."""
        doc = asdict(self)
        doc["address_block"] = list(self.address_block)
        return doc

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> PostcardContent:
        """Rebuild content from :meth:`to_fields` output; ``ValueError`` when malformed."""
        try:
            size = str(fields["size"])
            if size not in PRINT_SIZES:
                raise ValueError(f"unknown size {size!r}")
            offer = fields.get("offer_code")
            qr_url = fields.get("qr_url") or None
            if qr_url is not None:
                problem = qr_url_problem(str(qr_url))
                if problem:
                    raise ValueError(problem)
            return cls(
                size=size,
                template=str(fields.get("template") or ""),
                brand_name=str(fields.get("brand_name") or ""),
                headline=str(fields.get("headline") or ""),
                body=str(fields.get("body") or ""),
                offer_code=str(offer) if offer else None,
                back_message=str(fields.get("back_message") or ""),
                background_color=normalize_color(str(fields.get("background_color", "#ffffff"))),
                accent_color=normalize_color(str(fields.get("accent_color", "#1f6feb"))),
                address_block=tuple(str(x) for x in fields.get("address_block") or ()),
                qr_url=str(qr_url) if qr_url else None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed postcard fields: {exc}") from exc


@dataclass(frozen=True)
class RenderedProof:
    """Print-size PNGs of both sides, and the name of the renderer that drew them."""

    front_png: bytes = field(repr=False)
    back_png: bytes = field(repr=False)
    width: int
    height: int
    renderer: str
