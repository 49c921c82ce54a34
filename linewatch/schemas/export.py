"""Generate the JSON Schema files consumers in other languages decode against.

``python -m linewatch.schemas.export`` rewrites ``linewatch/schemas/jsonschema/``;
``--check`` exits non-zero when the files are stale (the test suite runs the check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from linewatch.schemas.messages import LIST_TYPES, RECORD_TYPES, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).parent / "jsonschema"


def render() -> dict[str, str]:
    """File name -> JSON text for every record type and every list form (a batched ``spc`` message)."""
    out = {}
    schemas = {**{name: model.model_json_schema(mode="serialization") for name, model in RECORD_TYPES.items()},
               **{name: TypeAdapter(form).json_schema(mode="serialization") for name, form in LIST_TYPES.items()}}
    for name, schema in schemas.items():
        schema["$id"] = f"https://linewatch.dev/schemas/{name}.v{SCHEMA_VERSION}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.v{SCHEMA_VERSION}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the models generate."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        (directory / name).write_text(text)
        written.append(directory / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the checked-in files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale JSON Schema files: {', '.join(stale)}; run python -m linewatch.schemas.export")
            return 1
        return 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
