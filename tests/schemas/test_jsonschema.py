from linewatch.schemas import export
from linewatch.schemas.messages import RECORD_TYPES


def test_checked_in_json_schemas_are_current():
    stale = export.stale_files()
    assert not stale, f"regenerate with `python -m linewatch.schemas.export`: {stale}"


def test_every_record_type_has_a_schema_file():
    names = {p.name for p in export.SCHEMA_DIR.glob("*.json")}
    assert {f"{n}.v1.json" for n in RECORD_TYPES} <= names


def test_stale_check_notices_a_changed_file(tmp_path):
    export.write(tmp_path)
    assert export.stale_files(tmp_path) == []
    (tmp_path / "score.v1.json").write_text("{}")
    assert export.stale_files(tmp_path) == ["score.v1.json"]
