"""The docs stay true: every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from ragline.config import Settings

DOCS = Path(__file__).parent.parent.parent / "docs"


def env_names(model: type[BaseModel], prefix: str = "RAGLINE_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(env_names(annotation, f"{prefix}{name.upper()}__"))
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_page() -> None:
    """docs/configuration.md names each environment variable Settings reads."""
    page = (DOCS / "configuration.md").read_text()
    missing = [name for name in env_names(Settings) if f"`{name}`" not in page]
    assert not missing, f"undocumented settings: {missing}"


def test_every_test_the_docs_name_exists() -> None:
    """A test named in the docs (`tests/…/test_x.py::test_y`) is a real test of that file, so
    the reliability page cannot point at a test that was renamed or deleted."""
    root = DOCS.parent
    missing = []
    for page in DOCS.glob("*.md"):
        for path, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", page.read_text()):
            source = root / path
            if not source.exists() or f"def {name}(" not in source.read_text():
                missing.append(f"{page.name}: {path}::{name}")
    assert not missing, missing
