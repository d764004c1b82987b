"""`ragline prompts …`: push immutable versions, move labels, roll back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

prompts_app = typer.Typer(
    help="Versioned prompts: push, list, show, label, rollback.", no_args_is_help=True
)
_REFERENCE = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<version>\d+)|:(?P<label>[\w.-]+))?$")


def read_prompt_file(path: Path) -> tuple[str, str]:
    """(system, user) from JSON `{"system", "user"}`, or from text: the system part, a line
    `---`, then the user template (with {context} and {question})."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return str(data["system"]), str(data["user"])
    parts = re.split(r"^---\s*$", text, maxsplit=1, flags=re.MULTILINE)
    if len(parts) != 2:
        raise ValueError("no '---' line between the system part and the user template")
    return parts[0].strip(), parts[1].strip()


@prompts_app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="Prompt name, e.g. rag-answer")],
    file: Annotated[
        Path, typer.Option("--file", "-f", help="JSON {system, user}, or text: system, '---', user")
    ],
    label: Annotated[
        str | None, typer.Option(help="Point this label at the new version (e.g. staging)")
    ] = None,
) -> None:
    """Store a new immutable version of a prompt."""
    from ragline.cli import out, runtime

    try:
        system, user = read_prompt_file(file)
    except (OSError, ValueError, KeyError) as exc:
        raise typer.BadParameter(
            f"{file}: {exc}; expected JSON {{system, user}} or text with a '---' line"
        ) from exc
    with runtime() as rt:
        template = rt.prompts.push(name, system, user, label)
    out.print(f"{name} version {template.version}" + (f" labelled {label}" if label else ""))


@prompts_app.command("list")
def list_prompts() -> None:
    """Every version with the labels on it."""
    from ragline.cli import out, runtime

    with runtime() as rt:
        table = Table("prompt", "version", "labels")
        for name, version, labels in rt.prompts.versions():
            table.add_row(name, str(version), ", ".join(labels))
        out.print(table)


@prompts_app.command("show")
def show(
    reference: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME:LABEL")],
) -> None:
    """Print a prompt version (newest, a number, or what a label points at)."""
    from ragline.cli import out, runtime

    match = _REFERENCE.match(reference)
    if not match:
        raise typer.BadParameter("use NAME, NAME@VERSION or NAME:LABEL")
    with runtime() as rt:
        version = int(match["version"]) if match["version"] else None
        template = rt.prompts.get(match["name"], version, match["label"])
    out.print(
        f"# {template.name} version {template.version}\n\n{template.system}\n---\n{template.user}"
    )


@prompts_app.command("label")
def label(
    name: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument()],
    label_name: Annotated[str, typer.Argument(metavar="LABEL", help="e.g. production")],
) -> None:
    """Point a label at a version (the service picks up `production` within seconds)."""
    from ragline.cli import out, runtime

    with runtime() as rt:
        rt.prompts.label(name, version, label_name)
    out.print(f"{name}:{label_name} → version {version}")


@prompts_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument()],
    label_name: Annotated[str, typer.Option("--label", help="Label to move back")] = "production",
) -> None:
    """Move a label back to the version it pointed at before its last move."""
    from ragline.cli import out, runtime

    with runtime() as rt:
        version = rt.prompts.rollback(name, label_name)
    out.print(f"{name}:{label_name} rolled back to version {version}")


@prompts_app.command("builtin")
def builtin(
    name: Annotated[str, typer.Argument(help="A built-in prompt, e.g. rag-answer")],
    label_name: Annotated[str, typer.Option("--label", help="Label to move")] = "production",
) -> None:
    """Point a label at the newest built-in version (stored first if this store lacks it).

    For stores seeded before that version shipped: their production prompt stays what it was
    until this is run (or rolled back with `ragline prompts rollback`)."""
    from ragline.cli import out, runtime

    with runtime() as rt:
        template = rt.prompts.adopt_builtin(name, label_name)
    out.print(f"{name}:{label_name} → version {template.version} (built-in)")
