"""The documentation a newcomer reads: the README's two commands on top and its link to the
go-live guide; docs/DEPLOY.md names only settings that exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Upper-case names in DEPLOY.md that are not our settings: a buildpack's, a shell variable.
NOT_SETTINGS = {"GOOGLE_PYTHON_VERSION", "RESTORE_URL", "HTTP", "POST", "OGG", "IAM", "CPU", "URL", "TLS"}


def test_readme_keeps_its_two_commands_on_top_and_links_the_deploy_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line.split()[1] for line in readme.splitlines()[:6] if line.startswith("    make ")]
    assert commands == ["run", "test"]
    assert "(docs/DEPLOY.md)" in readme


def test_deploy_guide_sections_and_settings():
    guide = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    for heading in ("public https origin", "Cloud Run", "Twilio", "ElevenLabs", "Google Cloud Storage",
                    "PostgreSQL", "SECRET_KEY", "Backups", "What to monitor"):
        assert re.search(rf"^##+ .*{re.escape(heading)}", guide, re.M), heading
    scale_out = guide.split("\n## Scale-out\n", 1)
    assert len(scale_out) == 2 and len(scale_out[1].strip().splitlines()) == 1
    assert "/webhook/whatsapp" in guide and "set per message" in guide
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    named = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})[=`]", guide))
    assert named - NOT_SETTINGS <= documented, sorted(named - NOT_SETTINGS - documented)
