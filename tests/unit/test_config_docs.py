"""docs/configuration.md is generated from the settings; every field carries the description it shows."""

from __future__ import annotations

from kiss_core.cli import main
from kiss_core.config_docs import DOCS_PATH, REGENERATE, all_fields, render_config_docs
from kiss_core.settings import Settings


def test_every_settings_field_has_a_description():
    missing = [path for path, info in all_fields(Settings) if not (info.description or "").strip()]
    assert missing == [], f"settings fields without a description (kiss_core/settings.py): {missing}"


def test_every_field_is_walked_including_nested_sections_and_records():
    paths = {path for path, _ in all_fields(Settings)}
    nested = {"storage.backend", "safety.age_gate.min_age", "provenance.c2pa.alg", "access.keys.tenant"}
    assert nested <= paths


def test_configuration_page_is_up_to_date():
    current = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else ""
    assert current == render_config_docs(), f"{DOCS_PATH} is stale: run `{REGENERATE}` to regenerate it"


def test_page_names_every_environment_variable_with_its_default():
    page = render_config_docs()
    assert "| `KISS_STORAGE__BACKEND` | `local` \\| `s3` | `local` |" in page
    assert "| `KISS_SAFETY__AGE_GATE__MIN_AGE` | float (≥ 18.0, ≤ 80.0) | `25.0` |" in page
    assert "| `KISS_LIMITS__MAX_UPLOAD_BYTES` | int | `15728640` (15 MiB) |" in page
    assert "### access.keys: one `ApiKeyRecord` per entry" in page


def test_check_fails_on_a_stale_page_and_passes_once_regenerated(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    page.write_text("# Configuration\n\nhand-edited\n", encoding="utf-8")
    assert main(["config-docs", "--check", "--path", str(page)]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main(["config-docs", "--path", str(page)]) == 0
    assert main(["config-docs", "--check", "--path", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == render_config_docs()
